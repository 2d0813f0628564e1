"""Release gates: small pure functions from evidence (seed-run records) to ``GateResult``s."""

from quality.gates.result import GateResult

__all__ = ["GateResult"]
