from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

import worldflux
from tests.worldflux.conftest import make_model
from worldflux import CheckpointError
from worldflux.core.serialization import CONFIG_FILE, METADATA_FILE, WEIGHTS_FILE
from worldflux.data import TrajectoryDataset


@pytest.mark.parametrize("family", ["dreamerv3", "tdmpc2"])
def test_round_trip_gives_identical_outputs(
    family: str, cartpole: TrajectoryDataset, tmp_path: Path
) -> None:
    model = make_model(family, cartpole).eval()
    batch = cartpole.fixed_batches(2, 4, 8, seed=1)[0]
    model.save_pretrained(tmp_path)
    meta = json.loads((tmp_path / METADATA_FILE).read_text())
    assert meta["family"] == family
    assert meta["preset"] == "ci"
    assert {"contract_fingerprint", "weights_sha256", "library_version", "format_version"} <= set(
        meta
    )
    again = worldflux.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        a, b = model.loss(batch), again.loss(batch)
        assert torch.equal(a.loss, b.loss)
        ra = model.rollout(model.encode(batch.obs[:, 0]), batch.action[:, 1:].transpose(0, 1))
        rb = again.rollout(again.encode(batch.obs[:, 0]), batch.action[:, 1:].transpose(0, 1))
    assert ra.rewards is not None
    assert rb.rewards is not None
    assert torch.equal(ra.rewards, rb.rewards)
    for key in ra.states.tensors:
        assert torch.equal(ra.states[key], rb.states[key])


@pytest.fixture
def saved(cartpole: TrajectoryDataset, tmp_path: Path) -> Path:
    make_model("dreamerv3", cartpole).save_pretrained(tmp_path)
    return tmp_path


def test_tampered_weights_are_refused(saved: Path) -> None:
    data = bytearray((saved / WEIGHTS_FILE).read_bytes())
    data[-5] ^= 0xFF
    (saved / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors.*sha256"):
        worldflux.from_pretrained(saved)


def test_truncated_weights_are_refused(saved: Path) -> None:
    data = (saved / WEIGHTS_FILE).read_bytes()
    (saved / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="modified or truncated"):
        worldflux.from_pretrained(saved)


def test_edited_config_is_refused(saved: Path) -> None:
    config = json.loads((saved / CONFIG_FILE).read_text())
    config["config"]["free_nats"] = 3.0
    (saved / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config\.json does not match"):
        worldflux.from_pretrained(saved)


@pytest.mark.parametrize("name", [WEIGHTS_FILE, CONFIG_FILE, METADATA_FILE])
def test_missing_file_is_named(saved: Path, name: str) -> None:
    (saved / name).unlink()
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        worldflux.from_pretrained(saved)


def test_loading_never_unpickles(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert worldflux.from_pretrained(saved).family == "dreamerv3"
