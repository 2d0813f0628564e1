from __future__ import annotations

from typing import Any

from quality.gates.measurements import psnr
from quality.policy import load_policy


def _run(seed: int, probe: dict[str, Any]) -> dict[str, Any]:
    return {"seed": seed, "status": "ok", "drop": 0.5, "probes": {"open_loop": probe}}


def test_psnr_applies_to_decoded_frames_only() -> None:
    policy = load_policy("tdmpc2")
    vector = psnr([_run(0, {"space": "observation", "psnr_1": 40.0})], policy, (4,))
    assert vector.status == "not_applicable"
    latent = psnr([_run(0, {"space": "latent"})], policy, (1, 32, 32))
    assert latent.status == "not_applicable"
    assert "no observation decoder" in latent.reason
    frames = [_run(0, {"space": "observation", "psnr_1": 35.0}),
              _run(1, {"space": "observation", "psnr_1": 25.0})]  # fmt: skip
    result = psnr(frames, policy, (1, 32, 32))
    assert result.status == "fail"
    assert result.value == 25.0
    assert psnr(frames[:1], policy, (1, 32, 32)).passed
    broken = psnr([_run(0, {"error": "ValueError: boom"})], policy, (1, 32, 32))
    assert broken.status == "fail"
    assert "fails closed" in broken.reason
