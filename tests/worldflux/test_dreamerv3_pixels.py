"""DreamerV3 on frames (family ``dreamerv3_pixels``): the paper's CNN encoder and decoder around
the RSSM, at WorldFlux's ``ci`` image sizes."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import worldflux
from worldflux.core.errors import ConfigError
from worldflux.data import TrajectoryDataset, load_bundled, pixels
from worldflux.models.dreamerv3.vision import ConvDecoder, ConvEncoder, random_shift


@pytest.fixture(scope="module")
def colour(cartpole: TrajectoryDataset) -> TrajectoryDataset:
    """Two episodes of ``cartpole_rgb`` (the frames are its; a few suffice here)."""
    return pixels.RENDERINGS["cartpole_rgb"].build(cartpole, episodes=2)


def test_ci_has_worldfluxs_image_sizes(colour: TrajectoryDataset) -> None:
    model = worldflux.create_world_model_for("dreamerv3_pixels:ci", colour.spec)
    c = model.config
    assert (c.cnn_depth, c.deter, c.stoch, c.classes, c.hidden) == (8, 64, 4, 4, 32)
    encoder = model.encoder
    assert isinstance(encoder, ConvEncoder)
    # 64 -> 32 -> 16 -> 8 -> 4 with 8, 16, 32, 64 channels: a 64 x 4 x 4 embedding.
    assert encoder.out_dim == 1024
    assert isinstance(model.decoder, ConvDecoder)


def test_frames_in_frames_out(colour: TrajectoryDataset) -> None:
    torch.manual_seed(0)
    model = worldflux.create_world_model_for("dreamerv3_pixels:ci", colour.spec).eval()
    batch = colour.fixed_batches(1, 3, 5, seed=0)[0]
    with torch.no_grad():
        h, z, _ = model.observe(batch)
        assert h.shape[:2] == (5, 3)
        state = model.encode(batch.obs[:, 0])
        frame = model.decode(state).observation
        assert frame.shape == (3, 3, 64, 64)
        # Untrained, the decoder starts at mid-grey (its output bias), not at black.
        assert frame.mean().item() == pytest.approx(0.5, abs=0.1)
        imagined = model.rollout(state, batch.action[:, 1:].transpose(0, 1))  # [T, B, A]
        frames = model.decode(imagined.states).observation
        assert frames.shape == (5, 3, 3, 64, 64)  # the start and 4 imagined steps
        # The reconstruction term: squared error summed over each frame's 12,288 values,
        # averaged over the frames (evaluation mode: the same latents as observe gave).
        decoded = model.decoder(torch.cat([h, z], -1))
        expected = ((decoded - batch.obs.transpose(0, 1)) ** 2).sum((-3, -2, -1)).mean()
        recon = model.loss(batch).components["reconstruction"]
    assert recon.item() == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() > 12_288 * 0.01  # a grey guess is far from the frames


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((4,), "frames shaped"),
        ((3, 64, 32), "square frames"),
        ((3, 48, 48), "square frames"),
        ((3, 4, 4), "square frames"),
    ],
)
def test_unusable_observation_shapes_are_refused(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        worldflux.create_world_model("dreamerv3_pixels:ci", obs_shape=shape, action_dim=2)


def test_grey_frames_at_32_px_use_three_stages() -> None:
    model = worldflux.create_world_model("dreamerv3_pixels:ci", obs_shape=(1, 32, 32), action_dim=2)
    assert model.encoder.out_dim == 32 * 4 * 4  # 8, 16, 32 channels, then 4 x 4
    with torch.no_grad():
        frame = model.decode(model.initial_state(2)).observation
    assert frame.shape == (2, 1, 32, 32)


def test_the_vector_family_is_unchanged() -> None:
    model = worldflux.create_world_model("dreamerv3:ci", obs_shape=(4,), action_dim=2)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in model.modules())


def test_random_shift_moves_each_sequence_by_one_offset_within_the_pad() -> None:
    torch.manual_seed(0)
    frames = torch.zeros(64, 3, 1, 16, 16)
    frames[:, :, 0, 8, 8] = 1.0  # a dot at the centre of every frame
    frames[:, 1, 0, 8, 9] = 1.0  # and one that moves right in the second step
    shifted = random_shift(frames, 2)
    assert shifted.shape == frames.shape
    offsets = set()
    for sequence in shifted:
        dots = [sorted(map(tuple, (f[0] == 1).nonzero().tolist())) for f in sequence]
        y, x = dots[0][0]
        assert dots[2] == [(y, x)]  # the same offset at every step of a sequence
        assert dots[1] == [(y, x), (y, x + 1)]  # so the motion is unchanged
        offsets.add((y - 8, x - 8))
    assert {dy for dy, _ in offsets} == {dx for _, dx in offsets} == {-2, -1, 0, 1, 2}
    # Edges are replicated, not filled with black: a white frame stays white.
    assert torch.equal(random_shift(torch.ones(4, 2, 3, 8, 8), 3), torch.ones(4, 2, 3, 8, 8))


def test_the_shift_applies_in_training_only() -> None:
    data = load_bundled("cartpole_pixels")
    batch = data.fixed_batches(1, 4, 6, seed=0)[0]
    plain = worldflux.create_world_model_for("dreamerv3_pixels:xxs", data.spec, shift_pixels=0)
    shifting = worldflux.create_world_model_for("dreamerv3_pixels:xxs", data.spec)
    assert shifting.config.shift_pixels == 2
    shifting.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.eval(), shifting.eval()
        seen = [m.loss(batch).components["reconstruction"].item() for m in (plain, shifting)]
        assert seen[0] == seen[1]  # evaluation sees the frames as they are
        plain.train(), shifting.train()
        torch.manual_seed(1)
        trained_on = shifting.loss(batch).components["reconstruction"].item()
        torch.manual_seed(1)  # the same draws: the shift first, then the latents' noise
        moved = dataclasses.replace(batch, obs=random_shift(batch.obs, 2))
        expected = plain.loss(moved).components["reconstruction"].item()
    assert not torch.equal(moved.obs, batch.obs)
    assert trained_on == expected


def test_a_shift_needs_frames() -> None:
    with pytest.raises(ConfigError, match="shift_pixels"):
        worldflux.create_world_model("dreamerv3:ci", obs_shape=(4,), action_dim=2, shift_pixels=2)
    with pytest.raises(ConfigError, match="shift_pixels"):
        worldflux.create_world_model(
            "dreamerv3_pixels:ci", obs_shape=(1, 32, 32), action_dim=2, shift_pixels=-1
        )
