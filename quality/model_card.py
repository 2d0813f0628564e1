"""Model cards for released weights, with the sections of Mitchell et al. (2019), "Model Cards
for Model Reporting", filled from the gate report and the release's provenance."""

from __future__ import annotations

from typing import Any

from quality import visuals
from quality.report import STATUS_MARK, _fmt


def render_model_card(
    report: dict[str, Any],
    seed_run: dict[str, Any],
    release: dict[str, Any],
    picture: visuals.Picture | None = None,
) -> str:
    """``seed_run``: the released seed's summary from ``report["runs"]``; ``release``: model
    name, version, actor, reason, released_at, dagster_run_id, dataset manifest; ``picture``:
    the released seed's real-versus-imagined PNG (quality/visuals.py), shown inline."""
    family = report["family"]
    dataset = release.get("dataset", {})
    policy = report["policy"]["training"]
    sha = (seed_run.get("checkpoint") or {}).get("sha256", "?")
    results = report["gates"]["results"]
    common = report["gates"]["common"]
    lines = [
        f"# Model card: {release['model_name']} version {release['version']}",
        "",
        "## Model details",
        f"- Family `{family}`, preset `{report['preset']}`, seed {seed_run['seed']} of "
        f"{report['seeds']} (the best passing seed by held-out {seed_run.get('gate_metric')}).",
        f"- Weights: safetensors, sha256 `{sha}`; trained {seed_run['steps_completed']} steps.",
        f"- Released {release['released_at']} by {release['actor']}: {release['reason']}",
        f"- Code version `{report['code_version'].get('git_commit')}` (library "
        f"{report['code_version'].get('library_version')}); Dagster run "
        f"`{release['dagster_run_id']}`; MLflow run `{seed_run.get('mlflow_run_id')}`.",
        "",
        "## Intended use",
        "- A world model for model-based RL research on the environment of its training data: "
        "imagined rollouts, planning (CEM through the capability contract), evaluation.",
        "- Not intended for environments other than its training data's, nor for any "
        "safety-critical control: it was judged only by the offline gates below.",
        "",
        "## Factors",
        f"- Training data: `{dataset.get('name')}` collected by a scripted policy "
        f"({dataset.get('policy', 'see the data-set manifest')}). Behaviour outside the state "
        "distribution of that policy is not measured.",
        "- Hardware: trained and gated on CPU; timings (throughput, rollout latency) depend on "
        "the machine.",
        "",
        "## Metrics",
        f"- Gate metric: held-out `{seed_run.get('gate_metric')}` before and after training, on "
        "fixed held-out episodes; release gates from the policy "
        f"`{report['policy_digest'][:12]}` ({', '.join(report.get('policy_sources', []))}).",
        f"- Seed success rate {report['success_rate']:.0%} ({common['successes']}/"
        f"{common['trials']}), bootstrap 95% CI [{common['ci_low']:.2f}, {common['ci_high']:.2f}], "
        f"exact 95% CI [{common['clopper_pearson_low']:.2f}, "
        f"{common['clopper_pearson_high']:.2f}].",
        "",
        "## Evaluation data",
        f"- Held-out episodes (20%, split seed 0) of `{dataset.get('name')}`; data-set digest "
        f"`{dataset.get('digest')}`.",
        "",
        "## Training data",
        f"- `{dataset.get('name')}`: {dataset.get('rows')} rows, {dataset.get('episodes')} "
        f"episodes, sha256 `{dataset.get('sha256')}`; batch {policy.get('batch_size')} x "
        f"sequence {policy.get('seq_len')}, learning rate {policy.get('lr')}.",
        "",
        "## Quantitative analyses",
        f"- Released seed: held-out prediction skill {_fmt(seed_run.get('skill'))} over the "
        "best trivial baseline (mean or persistence; 1 is perfect, 0 no better); metric "
        f"{_fmt(seed_run.get('metric_before'))} -> {_fmt(seed_run.get('metric_after'))} (drop "
        f"{_fmt(seed_run.get('drop'))}), {_fmt(seed_run.get('samples_per_second'))} samples/s.",
        "",
        "| gate | status | value | threshold |",
        "|---|---|---|---|",
    ]
    for g in results:
        threshold = f"{g['comparison']} {_fmt(g['threshold'])}" if g["comparison"] else "-"
        lines.append(
            f"| {g['name']} | {STATUS_MARK[g['status']]} | {_fmt(g['value'])} | {threshold} |"
        )
    if picture is not None:
        lines += [
            "",
            "## Real versus imagined",
            "",
            f"A held-out segment, {picture.caption}.",
            "",
            picture.markdown(f"seed {seed_run['seed']}"),
        ]
    lines += [
        "",
        "## Ethical considerations",
        "- Trained on simulated control data only; no personal data. Imagined rollouts can look "
        "plausible while being wrong: check them against the environment before acting on them.",
        "",
        "## Caveats and recommendations",
        f"- Gate report `{report['report_id']}` is the evidence for this release; re-check it "
        "against the policy before reuse. Verify the weights' sha256 before loading.",
        "- Small presets, few steps: these figures are not comparable with published results "
        "of the full-size family.",
        "",
    ]
    return "\n".join(lines)
