"""Synthetic seed-run records shaped like ``quality.seed_run.run_seed``'s (plus the
``stored`` re-measurement a sweep adds with ``quality.seed_run.measure_stored``), for gate
and report tests on fixed evidence. Every number is chosen here, so a test can move one of
them across its threshold and see exactly which gate notices."""

from __future__ import annotations

import hashlib
from typing import Any

# The diagnostics each family kind's finiteness gate looks for (quality/gates/registry.py).
DIAGNOSTICS = {
    "reference": (),
    "token": ("diagnostics.logits",),
    "diffusion": ("diagnostics.scheduler.alphas_cumprod",),
    "jepa": ("diagnostics.context_projection", "diagnostics.target_projection"),
    "vjepa2": (
        "diagnostics.context_projection",
        "diagnostics.target_projection",
        "diagnostics.mask",
    ),
    "skeleton": (),
}


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def skill_probe(
    skill: float = 0.8,
    *,
    horizons: tuple[int, ...] = (1, 5, 10),
    space: str = "linear read-out",
    spread_ratio: float = 0.9,
    frames: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A ``quality.skill.prediction_skill`` result whose skill is ``skill`` at every horizon
    and overall. Persistence is the better baseline one step ahead, the mean further on.
    ``frames``: the frame figures of a decoder on images at every horizon (``psnr``,
    ``psnr_persistence``, ``ssim``, ``ssim_persistence``); the probe then also carries the
    frame-to-frame changes, imagined within the real ones' range."""
    per_horizon = {}
    for k in horizons:
        figures: dict[str, Any] = {"mean": 1.0, "persistence": 0.2 * k}
        baseline = "mean" if figures["mean"] <= figures["persistence"] else "persistence"
        figures |= {
            "model": (1.0 - skill) * figures[baseline],
            "linear": 0.5 * figures[baseline],
            "residual_mlp": 0.01 * figures[baseline],
            "shuffled_actions": 1.5 * figures[baseline],
            "baseline": baseline,
            "skill": skill,
            "spread_ratio": spread_ratio,
        }
        if frames is not None:
            figures |= frames
        per_horizon[str(k)] = figures
    probe: dict[str, Any] = {
        "space": space,
        "normalization": "per dimension" if frames is None else "pooled over pixels",
        "context": 5,
        "batch_size": 32,
        "horizons": per_horizon,
        "skill": skill,
    }
    if frames is not None:
        steps = max(horizons)
        probe["temporal"] = {"imagined": [0.05] * steps, "real": [0.06] * steps}
    return probe


def frame_figures(psnr: float = 30.0, ssim: float = 0.9) -> dict[str, float]:
    """Frame figures that beat persistence (20 dB, SSIM 0.7) by the given model's figures."""
    return {"psnr": psnr, "psnr_persistence": 20.0, "ssim": ssim, "ssim_persistence": 0.7}


def seed_record(
    seed: int,
    family: str = "tdmpc2",
    *,
    kind: str = "reference",
    skill: float = 0.8,
    metric_after: float | None = None,
    samples_per_second: float = 5000.0,
    device: str = "cpu",
    dataset: str = "pendulum",
    **fields: Any,
) -> dict[str, Any]:
    """A finished, healthy seed of ``family`` (gate kind ``kind``): every gate of the default
    policy passes on it (PSNR is not applicable to vector observations). ``fields`` replace
    top-level keys of the record."""
    after_metric = 0.3 + 0.01 * (seed % 3) if metric_after is None else metric_after
    after: dict[str, float] = {"world_model_loss": after_metric, "loss": after_metric + 0.1}
    if kind in ("jepa", "vjepa2"):
        after |= {"embedding_std": 0.8, "no_change_baseline": 2.0 * after_metric}
    weights = digest(f"{family}-{seed}-weights")
    record: dict[str, Any] = {
        "kind": "seed",
        "family": family,
        "seed": seed,
        "steps": 100,
        "preset": "ci",
        "dataset": dataset,
        "batch_size": 16,
        "seq_len": 16,
        "lr": 0.001,
        "eval_batches": 8,
        "device": device,
        "overrides": {},
        "status": "ok",
        "failure": None,
        "steps_completed": 100,
        "gate_metric": "world_model_loss",
        "dataset_digest": digest(dataset),
        "before": {"world_model_loss": 1.0, "loss": 1.1},
        "after": after,
        "metric_before": 1.0,
        "metric_after": after_metric,
        "drop": 1.0 - after_metric,
        "samples_per_second": samples_per_second,
        "weights_digest": weights,
        "memory": {"peak_mb": 400.0, "device_total_mb": 16000.0, "measured": "process peak RSS"},
        "checkpoint": {"path": f"/ckpt/{family}/seed_{seed}", "sha256": digest(f"ckpt-{seed}")},
        "stored": {"after": dict(after), "skill": skill, "weights_digest": weights},
        "probes": {
            "outputs": {
                "finite": True,
                "non_finite_outputs": [],
                "outputs": ["loss.world_model", "rollout.latent", *DIAGNOSTICS[kind]],
            },
            "contract": {"ok": True, "problems": [], "checked": ["encode batch size"]},
            "parity": {"max_abs_diff": 0.0, "worst_output": ""},
            "skill": skill_probe(skill),
            "plausibility": {"quantity": "reward", "horizon": 15, "violation_fraction": 0.0},
            "latency": {"horizon": 15, "p50_ms": 3.0, "p95_ms": 4.0},
            "planner": {
                "applicable": True,
                "is_action_payload": True,
                "horizon_extra": 5,
                "shape": [5, 1],
                "kind": "continuous",
                "finite": True,
            },
        },
        "timings": {"train_seconds": 1.0, "total_seconds": 2.0},
    }
    record.update(fields)
    return record


def failed_record(seed: int, family: str = "tdmpc2", message: str = "boom") -> dict[str, Any]:
    """A seed whose run raised before training finished (no evidence beyond the failure)."""
    return {
        "kind": "seed",
        "family": family,
        "seed": seed,
        "steps": 100,
        "preset": "ci",
        "dataset": "pendulum",
        "device": "cpu",
        "status": "failed",
        "failure": {"kind": "exception", "message": f"RuntimeError: {message}"},
        "steps_completed": 0,
        "gate_metric": None,
        "probes": {},
        "checkpoint": None,
    }


def repeat_pair(seed: int = 0, *, device: str = "cpu", same: bool = True) -> list[dict[str, Any]]:
    """Two same-seed re-runs (``kind: repeat``, no probes); ``same``: identical weights."""
    first = seed_record(seed, device=device, kind="reference", probes={}, checkpoint=None)
    second = seed_record(seed, device=device, kind="reference", probes={}, checkpoint=None)
    for r in (first, second):
        r["kind"] = "repeat"
        del r["stored"]
    if not same:
        second["weights_digest"] = digest("other weights")
    return [first, second]
