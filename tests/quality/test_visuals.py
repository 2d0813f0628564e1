"""Real-versus-imagined pictures (quality/visuals.py): they decode as images of the sizes the
rollout implies, and show the real frames where the real frames are."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

import worldflux
from quality import visuals
from worldflux.data import load_bundled


@pytest.fixture(scope="module")
def frames_rollout() -> visuals.Rollout:
    data = load_bundled("cartpole_pixels")
    torch.manual_seed(0)
    model = worldflux.create_world_model_for("dreamerv3_pixels:ci", data.spec)
    return visuals.imagined_rollout(model, data, data, horizon=6)


def test_a_rollout_pairs_real_and_imagined_frames(frames_rollout: visuals.Rollout) -> None:
    assert frames_rollout.frames
    assert frames_rollout.real.shape == frames_rollout.imagined.shape == (7, 1, 32, 32)
    # Real frames move (the cart, the pole); an untrained model's do not match them.
    assert np.abs(np.diff(frames_rollout.real, axis=0)).max() > 0
    assert not np.allclose(frames_rollout.real, frames_rollout.imagined)


def test_the_strip_has_a_row_of_real_and_a_row_of_imagined_frames(
    frames_rollout: visuals.Rollout,
) -> None:
    image = Image.open(io.BytesIO(visuals.strip_png(frames_rollout)))
    side = 32 * visuals.scale_for(32)
    assert image.format == "PNG"
    assert image.size == (7 * (side + visuals.GAP) - visuals.GAP, 2 * side + visuals.GAP)
    pixels = np.asarray(image.convert("RGB"))
    first_real = np.round(frames_rollout.real[0, 0] * 255).astype(np.uint8)
    assert np.array_equal(pixels[:side:2, :side:2, 0], first_real)
    last_imagined = np.round(np.clip(frames_rollout.imagined[-1, 0], 0, 1) * 255).astype(np.uint8)
    bottom, right = side + visuals.GAP, 6 * (side + visuals.GAP)
    assert np.array_equal(pixels[bottom::2, right::2, 0], last_imagined)


def test_the_gif_animates_every_step_side_by_side(frames_rollout: visuals.Rollout) -> None:
    image = Image.open(io.BytesIO(visuals.rollout_gif(frames_rollout)))
    side = 32 * visuals.scale_for(32)
    assert image.format == "GIF"
    assert image.n_frames == 7
    assert image.size == (2 * side + visuals.GAP, side)


def test_vector_families_get_a_trajectory_plot() -> None:
    data = load_bundled("cartpole")
    torch.manual_seed(0)
    model = worldflux.create_world_model_for("dreamerv3:ci", data.spec)
    rollout = visuals.imagined_rollout(model, data, data, horizon=10)
    assert not rollout.frames
    assert rollout.real.shape == (11, 4)
    files = visuals.pictures(rollout, "dreamerv3 seed 0")
    assert set(files) == {"rollout.png"}
    image = Image.open(io.BytesIO(files["rollout.png"]))
    assert image.format == "PNG"
    assert image.size[0] == 600  # 6 inches at matplotlib's 100 dpi
    with pytest.raises(ValueError, match="trajectory_png"):
        visuals.strip_png(rollout)


def test_reports_and_model_cards_show_each_seeds_picture(frames_rollout: visuals.Rollout) -> None:
    from quality.evaluate import build_report, evaluate_gates
    from quality.model_card import render_model_card
    from quality.policy import load_policy
    from quality.report import render_markdown
    from tests.quality.records import repeat_pair, seed_record

    strip = visuals.strip_png(frames_rollout)
    picture = visuals.Picture(strip, frames=True)
    policy, runs, repeats = load_policy("tdmpc2"), [seed_record(s) for s in range(3)], repeat_pair()
    gates = evaluate_gates(runs, policy, repeats=repeats, obs_shape=(3,))
    report = build_report(runs, policy, gates, repeats=repeats)
    markdown = render_markdown(report, {0: picture, 1: picture})
    assert "## Real versus imagined" in markdown
    assert "Seed 0: real (top row) vs imagined (bottom row)" in markdown
    assert markdown.count("data:image/png;base64,") == 2
    assert "## Real versus imagined" not in render_markdown(report)
    run = report["runs"][0]
    release = {
        "model_name": "worldflux-x", "version": 1, "actor": "alice", "reason": "r",
        "released_at": "now", "dagster_run_id": "d", "dataset": {},
    }  # fmt: skip
    card = render_model_card(report, run, release, picture)
    encoded = card.split("](data:image/png;base64,")[1].split(")", 1)[0]
    assert base64.b64decode(encoded) == strip
    plot = render_model_card(report, run, release, visuals.Picture(strip, frames=False))
    assert "real (solid) vs imagined (dashed)" in plot
