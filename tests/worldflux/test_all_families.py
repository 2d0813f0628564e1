"""Every registered family, whatever its maturity: builds from its ci preset on the data set its
gate policy names, computes a finite loss, round-trips through save/load exactly, and is listed
with a valid maturity. New families are covered without editing this file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import worldflux
from quality.policy import load_policy
from worldflux.data import load_bundled

FAMILIES = [entry["family"] for entry in worldflux.list_models()]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_builds_trains_and_round_trips(family: str, tmp_path: Path) -> None:
    entry = next(e for e in worldflux.list_models() if e["family"] == family)
    assert entry["maturity"] in {"reference", "experimental", "skeleton"}
    data = load_bundled(load_policy(family).training["dataset"])
    torch.manual_seed(0)
    model = worldflux.create_world_model_for(f"{family}:ci", data.spec)
    batch = data.fixed_batches(1, 4, 8, seed=0)[0]
    out = model.loss(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert out.metrics[model.gate_metric] >= 0
    model.save_pretrained(tmp_path)
    again = worldflux.from_pretrained(tmp_path)
    model.eval()
    again.eval()
    with torch.no_grad():
        assert torch.equal(model.loss(batch).loss, again.loss(batch).loss)
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
