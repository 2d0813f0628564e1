"""The result every gate returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["pass", "fail", "skipped", "not_applicable"]


@dataclass(frozen=True)
class GateResult:
    """``status``: pass / fail; ``skipped`` when there was nothing to measure because an
    earlier failure removed the evidence (it still blocks a release); ``not_applicable`` when
    the gate does not concern the family (it does not block)."""

    name: str
    group: str
    status: Status
    value: float | None
    threshold: float | None
    comparison: str  # how value is compared with threshold: ">=", "<=", "<", "=="
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    @property
    def blocks(self) -> bool:
        return self.status in ("fail", "skipped")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["pass"] = self.passed
        return data


def compare(value: float, threshold: float, comparison: str) -> bool:
    if comparison == ">=":
        return value >= threshold
    if comparison == "<=":
        return value <= threshold
    if comparison == "<":
        return value < threshold
    if comparison == "==":
        return value == threshold
    raise ValueError(f"unknown comparison {comparison!r}")


def failed(
    name: str, group: str, reason: str, threshold: float | None, evidence: dict[str, Any]
) -> GateResult:
    """A failure with no measured value: the measurement itself failed (gates fail closed)."""
    return GateResult(name, group, "fail", None, threshold, "", reason, evidence)


def skipped(name: str, group: str, reason: str, threshold: float | None = None) -> GateResult:
    return GateResult(name, group, "skipped", None, threshold, "", reason)


def not_applicable(name: str, group: str, reason: str) -> GateResult:
    return GateResult(name, group, "not_applicable", None, None, "", reason)


def measured(
    name: str,
    group: str,
    value: float,
    threshold: float,
    comparison: str,
    evidence: dict[str, Any],
    what: str,
) -> GateResult:
    """A gate that compares one number with its threshold; ``what`` names the number."""
    ok = compare(value, threshold, comparison)
    verdict = "meets" if ok else "does not meet"
    reason = f"{what} = {value:.6g} {verdict} {comparison} {threshold:.6g}"
    return GateResult(
        name, group, "pass" if ok else "fail", value, threshold, comparison, reason, evidence
    )
