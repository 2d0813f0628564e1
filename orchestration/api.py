"""The HTTP API that serves each family's champion (``python -m orchestration serve``).

Routes: ``GET /api/v1/models``, ``POST /api/v1/rollout``, ``POST /api/v1/plan``, ``GET /healthz``,
``GET /metrics`` (Prometheus text), and FastAPI's ``/openapi.json`` and ``/docs``. Every error is
JSON ``{"error": "..."}``: 400 for input the pre-guard rejects, 401 without the bearer token
(when ``WORLDFLUX_API_TOKEN`` is set), 404 for an unknown family, 413 for a body over the limit,
422 for a prediction the post-guard refused, 503 when no champion is loaded or a guard failed.
The guards themselves are ``release.serving``.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from release.serving import (
    MAX_BATCH,
    MAX_HORIZON,
    Champions,
    GuardFailed,
    InputRejected,
    NoChampion,
    OutputRefused,
)
from worldflux.core.errors import CapabilityError

LOG = logging.getLogger("worldflux.serve")
MAX_BODY_BYTES = 4 * 1024 * 1024
_SAMPLES = 4096  # latencies kept per route for the percentiles


class RolloutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family: str = Field(description="the model family, e.g. tdmpc2")
    observations: list[Any] = Field(
        description="initial observations, [batch, *observation_shape]", max_length=MAX_BATCH
    )
    actions: list[Any] = Field(
        description="per row, the actions to imagine: [batch, horizon, action_dim] (continuous, "
        "in the environment's units) or [batch, horizon] (discrete indices)",
        max_length=MAX_BATCH,
    )


class RolloutResponse(BaseModel):
    family: str
    version: str
    horizon: int
    observations: list[Any] | None = Field(
        description="predicted observations [batch, horizon, *observation_shape]"
    )
    observation_source: str = Field(description="decoder, or the linear read-out of the state")
    rewards: list[list[float]] | None = Field(description="predicted rewards [batch, horizon]")


class PlanRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    family: str
    observation: list[Any] = Field(description="one observation, [*observation_shape]")
    horizon: int = Field(default=5, ge=1, le=MAX_HORIZON)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class PlanResponse(BaseModel):
    family: str
    version: str
    horizon: int
    actions: list[Any] = Field(description="planned actions in the environment's action space")


class Metrics:
    """Request counts per (route, status) and recent latencies per route, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=_SAMPLES))
        self.guard: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=_SAMPLES))
        self.total_seconds: dict[str, float] = defaultdict(float)

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.counts[(route, status)] += 1
            self.latency[route].append(seconds)
            self.total_seconds[route] += seconds

    def observe_guard(self, route: str, seconds: float) -> None:
        with self._lock:
            self.guard[route].append(seconds)

    def prometheus(self) -> str:
        with self._lock:
            lines = [
                "# HELP worldflux_requests_total Requests served, by route and status.",
                "# TYPE worldflux_requests_total counter",
            ]
            for (route, status), count in sorted(self.counts.items()):
                lines.append(
                    f'worldflux_requests_total{{route="{route}",status="{status}"}} {count}'
                )
            for name, samples, what in (
                ("worldflux_request_seconds", self.latency, "Request latency"),
                ("worldflux_guard_seconds", self.guard, "Post-guard time"),
            ):
                lines += [f"# HELP {name} {what} (recent requests).", f"# TYPE {name} summary"]
                for route, values in sorted(samples.items()):
                    ordered = sorted(values)
                    for q in (0.5, 0.95, 0.99):
                        value = _quantile(ordered, q)
                        lines.append(f'{name}{{route="{route}",quantile="{q}"}} {value:.6f}')
                    lines.append(f'{name}_count{{route="{route}"}} {len(ordered)}')
                    lines.append(f'{name}_sum{{route="{route}"}} {sum(ordered):.6f}')
        return "\n".join(lines) + "\n"


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    champions: Champions, token: str | None = None, workers: int | None = None
) -> FastAPI:
    """``workers``: requests computed at once (default: the CPU count). More requests wait for
    a slot instead of thrashing the cores with threads that share the GIL."""
    app = FastAPI(
        title="WorldFlux serving",
        version="1",
        description="Each family's released champion: imagined rollouts and CEM plans, with "
        "input and output guards.",
    )
    metrics = Metrics()
    inference = threading.BoundedSemaphore(workers or os.cpu_count() or 1)
    app.state.metrics = metrics
    app.state.champions = champions

    @app.middleware("http")
    async def guard_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        route = request.url.path
        response = await _checked(request, call_next, token)
        metrics.observe(route, response.status_code, time.perf_counter() - started)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
            for e in exc.errors()
        )
        return _error(400, f"invalid request: {problems}")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        served = {f: c.version for f, c in champions.current.items()}
        status = "ok" if served and not champions.errors else "degraded"
        return {"status": status, "serving": served, "errors": champions.errors}

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus() -> str:
        return metrics.prometheus()

    @app.get("/api/v1/models")
    def models() -> dict[str, Any]:
        return {
            "models": [c.describe() for _, c in sorted(champions.current.items())],
            "errors": champions.errors,
        }

    @app.post("/api/v1/rollout", response_model=RolloutResponse)
    def rollout(body: RolloutRequest) -> Any:
        try:
            champion = champions.get(_known(champions, body.family))
            with inference:
                result = champion.rollout(body.observations, body.actions)
        except _Refusal as refusal:
            return refusal.response()
        except (InputRejected, OutputRefused, NoChampion) as err:
            return _Refusal.of(err).response()
        metrics.observe_guard("/api/v1/rollout", result.guard_seconds)
        return RolloutResponse(
            family=body.family,
            version=champion.version,
            horizon=len(body.actions[0]),
            observations=None if result.observations is None else result.observations.tolist(),
            observation_source=result.observation_source,
            rewards=None if result.rewards is None else result.rewards.tolist(),
        )

    @app.post("/api/v1/plan", response_model=PlanResponse)
    def plan(body: PlanRequest) -> Any:
        try:
            champion = champions.get(_known(champions, body.family))
            with inference:
                result = champion.plan(body.observation, body.horizon, body.seed)
        except _Refusal as refusal:
            return refusal.response()
        except (InputRejected, OutputRefused, NoChampion) as err:
            return _Refusal.of(err).response()
        except CapabilityError as err:  # a family without reward prediction cannot plan
            return _error(400, f"{body.family} cannot plan: {err}")
        metrics.observe_guard("/api/v1/plan", result.guard_seconds)
        return PlanResponse(
            family=body.family,
            version=champion.version,
            horizon=body.horizon,
            actions=result.actions.tolist(),
        )

    return app


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @classmethod
    def of(cls, err: Exception) -> _Refusal:
        if isinstance(err, InputRejected):
            return cls(400, str(err))
        if isinstance(err, OutputRefused):
            # A guard that failed is a server-side fault; an implausible answer is the model's.
            return cls(503 if isinstance(err, GuardFailed) else 422, f"refused: {err}")
        return cls(503, str(err))

    def response(self) -> JSONResponse:
        return _error(self.status, str(self))


def _known(champions: Champions, family: str) -> str:
    if family not in champions.families:
        raise _Refusal(
            404, f"unknown family {family!r}: this server serves {', '.join(champions.families)}"
        )
    return family


async def _checked(
    request: Request, call_next: Callable[[Request], Awaitable[Response]], token: str | None
) -> Response:
    """The bearer token (when configured) and the body size, before any route runs."""
    public = request.url.path in ("/healthz", "/metrics", "/docs", "/openapi.json")
    if token and not public:
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return _error(401, "missing or wrong bearer token (Authorization: Bearer <token>)")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return _error(413, f"the request body is over {MAX_BODY_BYTES} bytes")
    if request.method == "POST" and length is None:
        body = await request.body()  # chunked: read it to measure it
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"the request body is over {MAX_BODY_BYTES} bytes")
    try:
        return await call_next(request)
    except Exception as err:  # never a bare 500 page: say what failed, log the traceback
        LOG.exception("request %s %s failed", request.method, request.url.path)
        return _error(500, f"internal error ({type(err).__name__}); see the server log")
