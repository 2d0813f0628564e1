"""The frame gates (quality/gates/measurements.py): PSNR and SSIM of predicted frames per
horizon against the policy's minimum and against persistence, and temporal consistency; the
measures themselves (quality/frames.py)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
import torch

import worldflux
from quality import frames
from quality.gates.measurements import frame_quality, temporal_consistency
from quality.policy import load_policy
from tests.quality.records import frame_figures, skill_probe

FRAMES = (3, 64, 64)


def _run(seed: int, probe: dict[str, Any]) -> dict[str, Any]:
    return {"seed": seed, "status": "ok", "drop": 0.5, "probes": {"skill": probe}}


def _decoded(**figures: float) -> dict[str, Any]:
    return skill_probe(0.8, space="decoder", frames={**frame_figures(), **figures})


def test_frame_gates_apply_to_frames_a_family_decodes() -> None:
    policy = load_policy("tdmpc2")
    for gates in (
        frame_quality("psnr", [_run(0, _decoded())], policy, (4,)),
        frame_quality("ssim", [_run(0, skill_probe(0.8, space="linear read-out"))], policy, FRAMES),
        [temporal_consistency([_run(0, _decoded())], policy, (4,))],
    ):
        assert {g.status for g in gates} == {"not_applicable"}
    # Not applicable is about the family, not whether a seed learned: a decoder-free family
    # with no skill is n/a (the success gate blocks it), never "skipped".
    unskilled = frame_quality(
        "psnr", [_run(0, skill_probe(-0.1, space="linear read-out"))], policy, FRAMES
    )
    assert {g.status for g in unskilled} == {"not_applicable"}


def test_psnr_needs_the_minimum_and_a_margin_over_persistence() -> None:
    policy = load_policy("tdmpc2")
    minimum, gain = policy["min_psnr_at"], policy["min_psnr_gain_db"]
    good = [_run(0, _decoded(psnr=35.0)), _run(1, _decoded(psnr=33.0))]
    gates = {g.name: g for g in frame_quality("psnr", good, policy, FRAMES)}
    assert set(gates) == {f"prediction.psnr_{k}" for k in minimum}
    assert all(g.status == "pass" for g in gates.values())
    assert gates["prediction.psnr_5"].value == 33.0  # the worst seed

    low = [_run(0, _decoded(psnr=35.0)), _run(1, _decoded(psnr=minimum["5"] - 1))]
    result = frame_quality("psnr", low, policy, FRAMES)[0]
    assert result.status == "fail"
    assert (result.value, result.threshold) == (minimum["5"] - 1, minimum["5"])

    # Above the minimum, but "the frame does not change" is as good: no better than nothing.
    same = [_run(0, _decoded(psnr=35.0, psnr_persistence=35.0 - gain / 2))]
    result = frame_quality("psnr", same, policy, FRAMES)[0]
    assert result.status == "fail"
    assert (result.value, result.threshold) == (gain / 2, gain)
    assert "gain over persistence" in result.reason


def test_ssim_is_judged_the_same_way() -> None:
    policy = load_policy("tdmpc2")
    runs = [_run(0, _decoded(ssim=0.95, ssim_persistence=0.95))]
    result = frame_quality("ssim", runs, policy, FRAMES)[0]
    assert result.name == "prediction.ssim_5"
    assert result.status == "fail"
    assert result.threshold == policy["min_ssim_gain"]


def test_a_horizon_the_probe_did_not_measure_fails_closed() -> None:
    policy = load_policy("tdmpc2")
    probe = _decoded()
    del probe["horizons"]["10"]["psnr"]
    result = {g.name: g for g in frame_quality("psnr", [_run(0, probe)], policy, FRAMES)}
    assert result["prediction.psnr_10"].status == "fail"
    assert "measured no psnr 10 steps ahead" in result["prediction.psnr_10"].reason


def test_temporal_consistency_catches_frames_that_jump() -> None:
    policy = load_policy("tdmpc2")
    margin = policy["temporal_change_margin"]
    calm = _decoded()
    assert temporal_consistency([_run(0, calm)], policy, FRAMES).status == "pass"
    jumpy = _decoded()
    jumpy["temporal"]["imagined"][3] = jumpy["temporal"]["real"][0] * (1 + 2 * margin)
    result = temporal_consistency([_run(0, calm), _run(1, jumpy)], policy, FRAMES)
    assert result.status == "fail"
    assert result.value == pytest.approx(2 * margin)
    assert "seed 1" in result.reason


def test_psnr_and_ssim_measure_what_they_say() -> None:
    generator = torch.Generator().manual_seed(0)
    truth = torch.rand(4, 3, 16, 16, generator=generator)
    assert frames.ssim(truth, truth, 1.0) == pytest.approx(1.0)
    noisy = (truth + 0.1 * torch.randn(truth.shape, generator=generator)).clamp(0, 1)
    noisier = (truth + 0.3 * torch.randn(truth.shape, generator=generator)).clamp(0, 1)
    assert 0 < frames.ssim(noisier, truth, 1.0) < frames.ssim(noisy, truth, 1.0) < 1
    assert frames.ssim(noisy, truth, 1.0) == pytest.approx(frames.ssim(truth, noisy, 1.0))
    # Two flat frames: no variance, so SSIM is the luminance term alone.
    a, b = torch.full((1, 1, 16, 16), 0.2), torch.full((1, 1, 16, 16), 0.6)
    c1 = (0.01 * 1.0) ** 2
    assert frames.ssim(a, b, 1.0) == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.04 + 0.36 + c1))
    # PSNR of a constant error e: 10 log10(1 / e^2).
    assert frames.psnr(a, a + 0.1, 1.0) == pytest.approx(20.0)
    assert frames.psnr(truth, truth, 1.0) == pytest.approx(10 * math.log10(1e12))
    steps = torch.stack([torch.zeros(2, 3), torch.full((2, 3), 0.5), torch.full((2, 3), 0.5)])
    assert frames.rms_change(steps) == pytest.approx([0.5, 0.0])


def test_the_skill_probe_measures_decoded_frames_against_persistence() -> None:
    """Through the real probe: an untrained pixel DreamerV3 decodes grey frames, which
    persistence (the last real frame) beats on both measures; a vector family gets no frame
    figures."""
    from quality.skill import prediction_skill
    from worldflux.data import load_bundled

    data = load_bundled("cartpole_pixels")
    torch.manual_seed(0)
    model = worldflux.create_world_model_for("dreamerv3_pixels:ci", data.spec)
    probe = prediction_skill(model, data, data, [1, 3], batch_size=8)
    for k in ("1", "3"):
        figures = probe["horizons"][k]
        assert figures["psnr"] < figures["psnr_persistence"]
        assert figures["ssim"] < figures["ssim_persistence"]
    temporal = probe["temporal"]
    assert len(temporal["imagined"]) == len(temporal["real"]) == 3
    assert max(temporal["real"]) > 0  # the cart and the pole move

    vectors = load_bundled("cartpole")
    model = worldflux.create_world_model_for("dreamerv3:ci", vectors.spec)
    probe = prediction_skill(model, vectors, vectors, [1], batch_size=8)
    assert "psnr" not in probe["horizons"]["1"]
    assert "temporal" not in probe


def test_temporal_change_is_measured_in_evaluation_mode_like_every_other_figure() -> None:
    """A seed run probes a model still in training mode; the probe must judge the frames it
    decodes in evaluation, where an eval-only fault (``noisy frames``) shows. Measured in
    training mode, the temporal figures missed that noise (found by scripts/gate_power.py)."""
    from quality.injections import NoisyFrames
    from quality.skill import prediction_skill
    from worldflux.data import load_bundled
    from worldflux.models.dreamerv3.model import DreamerV3Pixels

    class Noisy(NoisyFrames, DreamerV3Pixels):
        pass

    data = load_bundled("cartpole_pixels")
    torch.manual_seed(0)
    clean = worldflux.create_world_model_for("dreamerv3_pixels:ci", data.spec)
    noisy = Noisy(clean.spec)
    noisy.load_state_dict(clean.state_dict())
    handed_in_training = prediction_skill(noisy.train(), data, data, [1, 3], batch_size=8)
    assert noisy.training  # the probe hands the model back as it found it
    handed_in_eval = prediction_skill(noisy.eval(), data, data, [1, 3], batch_size=8)
    assert handed_in_training["temporal"] == handed_in_eval["temporal"]
    without_noise = prediction_skill(clean.train(), data, data, [1, 3], batch_size=8)
    assert handed_in_training["temporal"]["real"] == without_noise["temporal"]["real"]
    # The snow is in the figures: every imagined frame-to-frame change differs from the clean one.
    snowy, clean_changes = (p["temporal"]["imagined"] for p in (handed_in_training, without_noise))
    assert all(abs(a - b) > 1e-3 for a, b in zip(snowy, clean_changes, strict=True))


def test_plausibility_judges_frames_by_each_channels_range_not_each_pixels() -> None:
    """Decoded frames are plausible inside the data's intensity range (widened by the margin),
    wherever the cart is. Judged per pixel, the background pixels that never lit up in training
    had a range of width 0, so any grey there, or a cart somewhere new, was 'implausible' (the
    first pixel sweep that reached this gate: violation 0.66 for models 4-5 dB better than
    persistence)."""
    from quality.probes import plausibility
    from worldflux.data import load_bundled
    from worldflux.models.dreamerv3.model import DreamerV3Pixels

    class Intensities(DreamerV3Pixels):
        """Decodes valid intensities in [0, 1], shifted by ``offset``."""

        offset = 0.0

        def decode(self, state: Any) -> Any:
            out = super().decode(state)
            return dataclasses.replace(out, observation=out.observation.clamp(0, 1) + self.offset)

    class Overexposed(Intensities):
        offset = 1.5

    data = load_bundled("cartpole_pixels")
    torch.manual_seed(0)
    untrained = worldflux.create_world_model_for("dreamerv3_pixels:ci", data.spec)
    for cls, violation in ((Intensities, 0.0), (Overexposed, 1.0)):
        model = cls(untrained.spec)
        model.load_state_dict(untrained.state_dict())
        measured = plausibility(model, data, data, horizon=3, margin=0.25, batch_size=8)
        assert measured["quantity"] == "observation"
        assert measured["max_value"] > measured["min_value"] + 0.5  # frames with contrast
        assert measured["violation_fraction"] == violation, cls.__name__
