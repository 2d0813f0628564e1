"""The skill probe's residual MLP reference (quality/skill.py) on the bundled CartPole data."""

from __future__ import annotations

import numpy as np
import torch

import worldflux
from quality import skill
from quality.seed_run import split
from quality.skill import prediction_skill, residual_mlp, training_transitions
from worldflux.data import DatasetSpec, TrajectoryDataset, load_bundled

HORIZONS = [1, 5, 10]


def test_training_transitions_stay_inside_episodes() -> None:
    train, _ = split(load_bundled("pendulum"))
    pairs = training_transitions(train)
    assert pairs.obs.shape[:2] == (len(train) - train.num_episodes, 2)  # one per env step
    assert not pairs.is_first[:, 1].any()  # never continues into the next episode
    assert not (pairs.terminated[:, 0] + pairs.truncated[:, 0]).any()  # never from an end
    assert int(pairs.is_first[:, 0].sum()) == train.num_episodes  # every episode contributes


def test_residual_mlp_reference_is_far_better_than_persistence_and_deterministic() -> None:
    train, held_out = split(load_bundled("cartpole"))
    torch.manual_seed(0)
    model = worldflux.create_world_model_for("tdmpc2:ci", train.spec)  # untrained: any model
    skill._MLP_FITS.clear()
    state = torch.get_rng_state()
    first = prediction_skill(model, train, held_out, HORIZONS)
    # Neither the fit nor its rollout reads or advances the global RNG.
    assert torch.equal(torch.get_rng_state(), state)
    for k in map(str, HORIZONS):
        figures = first["horizons"][k]
        assert figures["residual_mlp"] < 0.01 * figures["persistence"], (k, figures)
    assert first["horizons"]["1"]["residual_mlp"] < 1e-4

    cached = residual_mlp(train)
    assert residual_mlp(train) is cached  # fitted once per data set: every seed sees this fit
    skill._MLP_FITS.clear()  # fitted again from scratch: the same figures, bit for bit
    second = prediction_skill(model, train, held_out, HORIZONS)
    assert [second["horizons"][k]["residual_mlp"] for k in map(str, HORIZONS)] == [
        first["horizons"][k]["residual_mlp"] for k in map(str, HORIZONS)
    ]
    assert residual_mlp(train) is not cached
    assert torch.equal(torch.get_rng_state(), state)


def test_residual_mlp_is_not_fitted_on_images() -> None:
    frames = TrajectoryDataset(
        name="frames",
        spec=DatasetSpec((1, 2, 2), action_dim=2, discrete=True, action_low=0.0, action_high=1.0),
        observation=np.zeros((4, 1, 2, 2), np.float32),
        action=np.zeros(4, np.int64),
        reward=np.zeros(4, np.float32),
        terminated=np.array([False, True, False, True]),
        truncated=np.zeros(4, np.bool_),
        episode=np.array([0, 0, 1, 1]),
        step=np.array([0, 1, 0, 1]),
    )
    assert residual_mlp(frames) is None


def test_the_baselines_statistics_read_frames_in_chunks_without_changing_them() -> None:
    """The NMSE scale's moments are computed a chunk of rows at a time (a float64 copy of 50
    episodes of colour frames would take 1.5 GB): the same figures as the whole array's, for
    frames stored as bytes and for vectors, with a chunk that does not divide the rows."""
    from worldflux.data import pixels

    frames = pixels.RENDERINGS["cartpole_pixels"].build(load_bundled("cartpole"), episodes=4)
    for data in (frames, load_bundled("pendulum")):
        flat = data.observations().reshape(len(data), -1).astype(np.float64)
        mean, var, low, high = skill._moments(data, chunk=333)
        assert len(data) % 333 != 0
        np.testing.assert_allclose(mean, flat.mean(0), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(var, flat.var(0), rtol=1e-9, atol=1e-15)
        np.testing.assert_array_equal(low, flat.min(0))
        np.testing.assert_array_equal(high, flat.max(0))
