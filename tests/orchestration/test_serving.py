"""Serving released champions through a real server (uvicorn in a subprocess) and real HTTP:
the API, the pre-guard's 4xx answers (also for generated bad inputs), the post-guard refusing
an implausible model, the bearer token, and a champion swapped while it serves.

The versions served here are registered directly in MLflow from trained checkpoints (a release
without the gates, which take a minute to pass); serving reads only the registry and the object
store. The release path's own promotion and rollback are served in test_lineage_e2e.py."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import worldflux
from orchestration import operations as ops
from release.datasets import read_manifest
from release.ledger import canonical_json
from release.lineage import download_weights, file_manifest, scratch_dir
from release.serving import Bounds, OutputRefused, Rollout
from tests.integration.serving import Server, serving
from tests.orchestration.conftest import Platform

FAMILY = "tdmpc2"


def register(platform: Platform, seed: int, folder: Path | None = None) -> str:
    """Register seed ``seed``'s checkpoint (or ``folder``) as a new version of worldflux-tdmpc2
    with the tags a promotion writes, and return its version."""
    store = platform.store()
    record = store.get_json(f"checkpoints/{FAMILY}/seed_{seed}/record.json")
    with scratch_dir("register") as tmp:
        weights = folder or download_weights(store, record["checkpoint"], Path(tmp) / "w")
        files = file_manifest(weights)
        uri = store.put_dir(
            f"releases/{FAMILY}/test-{seed}-{files['model.safetensors'][:8]}", weights
        )
    manifest = read_manifest(store, "pendulum")
    return platform.mlflow.register_version(
        FAMILY,
        source=uri,
        run_id=record["mlflow_run_id"],
        tags={
            "dataset": "pendulum",
            "dataset_digest": manifest["digest"],
            "files_sha256": canonical_json(files),
            "checkpoint_sha256": files["model.safetensors"],
            "gate_report_id": f"test-seed-{seed}",
        },
        description="registered by test_serving",
    )


@pytest.fixture(scope="module")
def versions(platform: Platform) -> dict[str, str]:
    defs, instance = platform.defs, platform.instance
    assert ops.materialize_dataset(defs, instance, "pendulum").success
    for seed in (0, 1):
        assert ops.train(defs, instance, FAMILY, seed, steps=300).success
    found = {"first": register(platform, 0), "second": register(platform, 1)}
    platform.mlflow.set_alias(FAMILY, "champion", found["first"])
    return found


@pytest.fixture(scope="module")
def server(
    platform: Platform, versions: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("serve"), [FAMILY]) as running:
        yield running


def wait_for_version(server: Server, version: str, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        served = {m["family"]: m["version"] for m in server.get("/api/v1/models").json()["models"]}
        if served.get(FAMILY) == version:
            return
        time.sleep(0.2)
    raise AssertionError(
        f"v{version} not served within {timeout} s: {server.get('/healthz').json()}"
    )


def rollout_body(batch: int = 2, horizon: int = 5) -> dict[str, Any]:
    obs = [[1.0, 0.0, 0.0]] * batch
    return {"family": FAMILY, "observations": obs, "actions": [[[0.5]] * horizon] * batch}


def test_models_health_and_openapi(server: Server, versions: dict[str, str]) -> None:
    wait_for_version(server, versions["first"])
    [model] = server.get("/api/v1/models").json()["models"]
    assert model["version"] == versions["first"]
    assert model["gate_report_id"] == "test-seed-0"
    assert len(model["checkpoint_sha256"]) == 64
    assert model["predicts"] == {"observations": "linear read-out", "rewards": True}
    assert server.get("/healthz").json()["status"] == "ok"
    paths = requests.get(server.url + "/openapi.json", timeout=10).json()["paths"]
    assert {"/api/v1/rollout", "/api/v1/plan", "/api/v1/models"} <= set(paths)


def test_rollout_and_plan_answer_within_the_data_range(server: Server) -> None:
    answer = server.post("/api/v1/rollout", rollout_body(batch=3, horizon=7))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["horizon"] == 7
    assert np.asarray(body["observations"]).shape == (3, 7, 3)
    assert np.asarray(body["rewards"]).shape == (3, 7)
    assert np.isfinite(np.asarray(body["observations"])).all()
    plan = server.post(
        "/api/v1/plan", {"family": FAMILY, "observation": [1.0, 0.0, 0.0], "horizon": 4}
    )
    assert plan.status_code == 200, plan.text
    actions = np.asarray(plan.json()["actions"])
    assert actions.shape == (4, 1)
    assert (actions >= -2.0).all()
    assert (actions <= 2.0).all()
    metrics = server.get("/metrics").text
    assert 'worldflux_requests_total{route="/api/v1/rollout",status="200"}' in metrics
    assert 'worldflux_guard_seconds{route="/api/v1/rollout",quantile="0.5"}' in metrics


BAD = [
    ({"family": "nosuch"}, 404, "unknown family 'nosuch'"),
    ({"observations": [[1.0, 0.0]] * 2}, 400, "observations must have shape [batch, 3]"),
    ({"observations": [[math.nan, 0.0, 0.0]] * 2}, 400, "is not a finite number"),
    ({"actions": [[[9.0]] * 5] * 2}, 400, "outside the action space [-2, 2]"),
    ({"actions": [[[0.5]] * 65] * 2}, 400, "horizon (actions per row) must be 1..64"),
    ({"observations": [[1.0, 0.0, 0.0]] * 65, "actions": [[[0.5]]] * 65}, 400, "at most 64"),
    ({"observations": "three floats"}, 400, "invalid request: observations"),
    ({"extra": 1}, 400, "invalid request: extra"),
    ({"actions": [[[0.5]] * 5, [[0.5]] * 4]}, 400, "rectangular array"),
]


@pytest.mark.parametrize(("change", "status", "message"), BAD)
def test_bad_inputs_get_a_4xx_that_says_what_is_wrong(
    server: Server, change: dict[str, Any], status: int, message: str
) -> None:
    answer = server.post("/api/v1/rollout", {**rollout_body(), **change})
    assert answer.status_code == status, answer.text
    assert message in answer.json()["error"]


def test_token_body_size_and_malformed_json(server: Server) -> None:
    no_token = requests.post(server.url + "/api/v1/rollout", json=rollout_body(), timeout=10)
    assert no_token.status_code == 401
    assert "bearer token" in no_token.json()["error"]
    huge = b'{"family": "tdmpc2", "observations": [' + b"1.0," * 2_000_000 + b"1.0]}"
    answer = requests.post(
        server.url + "/api/v1/rollout",
        data=huge,
        headers={**server.headers(), "Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 413
    broken = requests.post(
        server.url + "/api/v1/rollout",
        data=b"{not json",
        headers={**server.headers(), "Content-Type": "application/json"},
        timeout=10,
    )
    assert broken.status_code == 400
    assert "invalid request" in broken.json()["error"]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "family": st.sampled_from([FAMILY, "x"]) | st.text(max_size=5),
            "observations": json_values,
            "actions": json_values,
            "horizon": json_values,
            "observation": json_values,
        },
    ),
    route=st.sampled_from(["/api/v1/rollout", "/api/v1/plan"]),
)
def test_generated_bad_inputs_never_crash_the_server(
    server: Server, body: dict[str, Any], route: str
) -> None:
    answer = server.post(route, data=json.dumps(body))
    assert answer.status_code in (200, 400, 404, 422), answer.text
    if answer.status_code != 200:
        assert answer.json()["error"]
    assert server.get("/healthz").status_code == 200


def test_an_implausible_model_is_refused_then_the_champion_swaps_back(
    platform: Platform, server: Server, versions: dict[str, str], tmp_path: Path
) -> None:
    """A released model whose reward head was edited to always predict its largest reward bin
    imagines rewards far outside the data's range: the post-guard refuses every answer (422),
    and nothing implausible is returned."""
    good = versions["first"]
    with scratch_dir("implausible") as tmp:
        store = platform.store()
        record = store.get_json(f"checkpoints/{FAMILY}/seed_0/record.json")
        model = worldflux.from_pretrained(
            download_weights(store, record["checkpoint"], Path(tmp) / "w")
        )
        last = model.reward_head[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
            last.bias[-1] = 50.0  # all probability on the top bin of the two-hot support
        model.save_pretrained(tmp_path / "edited")
    bad = register(platform, 0, tmp_path / "edited")
    platform.mlflow.set_alias(FAMILY, "champion", bad)
    try:
        wait_for_version(server, bad)
        answer = server.post("/api/v1/rollout", rollout_body())
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"].startswith("refused: implausible prediction: reward")
        assert "observations" not in answer.json()
    finally:
        platform.mlflow.set_alias(FAMILY, "champion", good)
    wait_for_version(server, good)
    assert server.post("/api/v1/rollout", rollout_body()).status_code == 200


def test_a_guard_that_fails_refuses_the_answer_with_503() -> None:
    """Fail closed: a post-guard that raises (here: bounds of the wrong width for the
    predictions) refuses the answer, and the API says 503, not 200."""
    from orchestration.api import _Refusal
    from release.serving import Champion, guarded

    wrong = type("Wrong", (), {"bounds": Bounds(np.zeros(2), np.ones(2), -1.0, 1.0, 0.25)})()
    result = Rollout(np.zeros((1, 1, 3)), "decoder", None)
    with pytest.raises(OutputRefused, match="the output guard failed") as refused:
        guarded(lambda: Champion.check_rollout_output(wrong, result))  # type: ignore[arg-type]
    assert _Refusal.of(refused.value).status == 503


def test_a_champion_swapped_during_traffic_drops_no_request(
    platform: Platform, server: Server, versions: dict[str, str]
) -> None:
    wait_for_version(server, versions["first"])
    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            answer = session.post(
                server.url + "/api/v1/rollout",
                json=rollout_body(),
                headers=server.headers(),
                timeout=60,
            )
            if answer.status_code != 200:
                failures.append(f"{answer.status_code} {answer.text[:200]}")
            else:
                seen.add(answer.json()["version"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        platform.mlflow.set_alias(FAMILY, "champion", versions["second"])
        wait_for_version(server, versions["second"])
        platform.mlflow.set_alias(FAMILY, "champion", versions["first"])
        wait_for_version(server, versions["first"])
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert failures == []
    assert {versions["first"], versions["second"]} <= seen


def test_a_version_that_fails_to_load_keeps_the_old_one(
    platform: Platform, server: Server, versions: dict[str, str]
) -> None:
    broken = platform.mlflow.register_version(
        FAMILY, source="file:///nonexistent", run_id="", tags={}, description="no tags"
    )
    platform.mlflow.set_alias(FAMILY, "champion", broken)
    try:
        import time

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not server.get("/healthz").json()["errors"]:
            time.sleep(0.2)
        health = server.get("/healthz").json()
        assert f"v{broken} failed to load" in health["errors"][FAMILY]
        assert health["serving"][FAMILY] == versions["first"]
        assert server.post("/api/v1/rollout", rollout_body()).status_code == 200
    finally:
        platform.mlflow.set_alias(FAMILY, "champion", versions["first"])


def test_frames_are_guarded_by_their_channels_range_like_the_plausibility_gate() -> None:
    """A served pixel model may light up a pixel that was dark in every training frame (the
    cart goes somewhere new), as the gate allows; it may not leave the channel's range."""
    from release.serving import Champion
    from worldflux.data import load_bundled, pixels

    frames = pixels.RENDERINGS["cartpole_pixels"].build(load_bundled("cartpole"), episodes=3)
    assert frames.columns()["observation"][:, 0, 0, 0].max() == 0  # the corner is always dark
    champion = type("Pixels", (), {"bounds": Bounds.of(frames, margin=0.25)})()
    lit = np.zeros((1, 1, 1, 32, 32), dtype=np.float32)
    lit[..., 0, 0] = 1.0
    Champion.check_rollout_output(champion, Rollout(lit, "decoder", None))  # type: ignore[arg-type]
    with pytest.raises(OutputRefused, match=r"dimension 0 = 1.3 is outside \[-0.25, 1.25\]"):
        Champion.check_rollout_output(champion, Rollout(lit * 1.3, "decoder", None))  # type: ignore[arg-type]
