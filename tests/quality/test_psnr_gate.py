from __future__ import annotations

from typing import Any

from quality.gates.measurements import psnr
from quality.policy import load_policy
from tests.quality.records import skill_probe

FRAMES = (1, 32, 32)


def _run(seed: int, probe: dict[str, Any]) -> dict[str, Any]:
    return {"seed": seed, "status": "ok", "drop": 0.5, "probes": {"skill": probe}}


def _decoded(one_step_psnr: float, skill: float = 0.8) -> dict[str, Any]:
    """A decoder's skill probe on frames; PSNR is judged one step ahead, so the later horizons
    carry a different PSNR that the gate must not read."""
    probe = skill_probe(skill, horizons=(5, 1, 10), space="decoder", psnr=one_step_psnr)
    for k in ("5", "10"):
        probe["horizons"][k]["psnr"] = one_step_psnr - 20.0
    return probe


def test_psnr_applies_to_decoded_frames_only() -> None:
    policy = load_policy("tdmpc2")  # psnr_min 30 dB
    vector = psnr([_run(0, _decoded(40.0))], policy, (4,))
    assert vector.status == "not_applicable"
    latent = psnr([_run(0, skill_probe(0.8, space="linear read-out"))], policy, FRAMES)
    assert latent.status == "not_applicable"
    assert "no observation decoder" in latent.reason
    # Not applicable is about the family, not about whether a seed learned: a decoder-free
    # family with no skill is n/a here (the success gate blocks it), never "skipped".
    unskilled = psnr([_run(0, skill_probe(-0.1, space="linear read-out"))], policy, FRAMES)
    assert unskilled.status == "not_applicable"
    frames = [_run(0, _decoded(35.0)), _run(1, _decoded(25.0))]
    result = psnr(frames, policy, FRAMES)
    assert result.status == "fail"
    assert result.value == 25.0  # the worst seed, one step ahead
    assert result.threshold == policy["psnr_min"]
    one = psnr(frames[:1], policy, FRAMES)
    assert one.passed
    assert one.value == 35.0  # not the 15 dB of the later horizons
    assert one.evidence["per_seed"] == [{"seed": 0, "psnr_1": 35.0}]


def test_psnr_judges_only_the_seeds_that_learned_and_never_passes_without_evidence() -> None:
    policy = load_policy("tdmpc2")  # min_skill 0.5
    learned, unskilled = _run(0, _decoded(35.0)), _run(1, _decoded(10.0, skill=0.1))
    judged = psnr([learned, unskilled], policy, FRAMES)
    assert judged.passed
    assert judged.evidence["per_seed"] == [{"seed": 0, "psnr_1": 35.0}]
    # No seed learned (the skill probe failed, or its skill is too low): nothing to judge,
    # which blocks a release like a failure.
    broken = psnr([_run(0, {"error": "ValueError: boom"})], policy, FRAMES)
    assert broken.status == "skipped"
    assert broken.blocks
    assert psnr([unskilled], policy, FRAMES).status == "skipped"
