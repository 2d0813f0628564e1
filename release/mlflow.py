"""MLflow: one tracked run per trained checkpoint, and the model registry with aliases.

A small class over ``MlflowClient`` (dagster-mlflow ties one MLflow run to one Dagster run
and has no registry or alias helpers); ``assets.resources.MlflowResource`` builds one. The client
API is used throughout, never the fluent ``mlflow.start_run`` state, because several assets log
to different runs. Registered model
versions point at safetensors weights logged as run artifacts: nothing is pickled.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

EXPERIMENT = "worldflux-checkpoints"
REPORT_EXPERIMENT = "worldflux-gate-reports"
RELEASE_EXPERIMENT = "worldflux-releases"  # one run per promotion: the released files
_BATCH = 1000  # MLflow's limit of metrics per log_batch call
MAX_POINTS = 100


def model_name(family: str) -> str:
    return f"worldflux-{family}"


class MlflowError(RuntimeError):
    """A registry or tracking operation failed; the message says what to check."""


@cache
def _client(tracking_uri: str, registry_uri: str | None) -> MlflowClient:
    """One client per store for the process: building one costs ~40 ms (store lookup)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)


@dataclass(frozen=True)
class Mlflow:
    """Tracking and registry. ``artifact_root`` is used for experiments this object creates
    when the tracking store is local (sqlite/file): a tracking server decides for itself."""

    tracking_uri: str
    registry_uri: str | None = None
    artifact_root: str | None = None
    experiment: str = EXPERIMENT

    def client(self) -> MlflowClient:
        return _client(self.tracking_uri, self.registry_uri)

    def ui_hint(self) -> str:
        if self.tracking_uri.startswith(("http://", "https://")):
            return self.tracking_uri
        return f"mlflow ui --backend-store-uri {self.tracking_uri}"

    # ------------------------------------------------------------------------- tracking
    def experiment_id(self, name: str | None = None) -> str:
        name = name or self.experiment
        client = self.client()
        found = client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.artifact_root and not self.tracking_uri.startswith(("http://", "https://")):
            location = (Path(self.artifact_root) / name).resolve().as_uri()
        try:
            return str(client.create_experiment(name, artifact_location=location))
        except Exception:  # another process created it between the lookup and here
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def start_run(
        self, run_name: str, tags: Mapping[str, str], experiment: str | None = None
    ) -> str:
        experiment_id = self.experiment_id(experiment)
        run = self.client().create_run(experiment_id, run_name=run_name, tags=dict(tags))
        return str(run.info.run_id)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        self.client().log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_series(self, run_id: str, series: Mapping[str, Sequence[float]], start: int = 1) -> int:
        """Per-step metrics in batches (a call per step would dominate a short run), thinned
        to at most ``MAX_POINTS`` points per metric with their true step numbers (a curve of a
        long run needs no more, and MLflow's SQL store writes a row per point). Non-finite
        values are skipped (some stores refuse NaN). Returns the number of points logged."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = []
        for key, values in series.items():
            stride = max(1, math.ceil(len(values) / MAX_POINTS))
            for index in range(0, len(values), stride):
                value = float(values[index])
                if math.isfinite(value):
                    metrics.append(Metric(key, value, now, start + index))
        client = self.client()
        for i in range(0, len(metrics), _BATCH):
            client.log_batch(run_id, metrics=metrics[i : i + _BATCH])
        return len(metrics)

    def log_metrics(self, run_id: str, metrics: Mapping[str, float | None], step: int = 0) -> None:
        self.log_series(run_id, {k: [v] for k, v in metrics.items() if v is not None}, start=step)

    def log_dataset(
        self, run_id: str, name: str, digest: str, source: str, profile: Mapping[str, Any]
    ) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(
            name=name,
            digest=digest[:36],  # MLflow keeps at most 36 characters of a digest
            source_type="worldflux-object-store",
            source=json.dumps({"uri": source, "sha256": digest}),
            schema=None,
            profile=json.dumps(dict(profile)),
        )
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])]
        try:
            self.client().log_inputs(run_id, datasets=inputs)
        except Exception as err:
            # Two runs logging the same data set at once: MLflow's SQL store looks the data set
            # up, then inserts it; the loser's insert breaks the unique key. It exists now.
            if "UNIQUE constraint" not in str(err) and "duplicate key" not in str(err):
                raise
            self.client().log_inputs(run_id, datasets=inputs)

    def log_bytes(self, run_id: str, data: bytes, artifact_file: str) -> None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="worldflux-artifact-") as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_bytes(data)
            folder = str(Path(artifact_file).parent)
            self.client().log_artifact(run_id, str(path), None if folder == "." else folder)

    def log_dict(self, run_id: str, data: Mapping[str, Any], artifact_file: str) -> None:
        self.client().log_dict(run_id, dict(data), artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self.client().log_text(run_id, text, artifact_file)

    def log_artifacts(self, run_id: str, directory: Path, artifact_path: str) -> str:
        client = self.client()
        client.log_artifacts(run_id, str(directory), artifact_path)
        return f"{client.get_run(run_id).info.artifact_uri}/{artifact_path}"

    def end_run(self, run_id: str, ok: bool) -> None:
        self.client().set_terminated(run_id, "FINISHED" if ok else "FAILED")

    def run_url(self, run_id: str) -> str:
        if self.tracking_uri.startswith(("http://", "https://")):
            experiment = self.client().get_run(run_id).info.experiment_id
            return f"{self.tracking_uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"
        return f"MLflow run {run_id} ({self.ui_hint()})"

    # ------------------------------------------------------------------------- registry
    def register_version(
        self, family: str, source: str, run_id: str, tags: Mapping[str, str], description: str
    ) -> str:
        """A new version of the family's registered model; returns its version number."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        name = model_name(family)
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(
                name,
                tags={"family": family},
                description=f"Released weights of the {family} world-model family.",
            )
        version = client.create_model_version(
            name, source=source, run_id=run_id, tags=dict(tags), description=description
        )
        return str(version.version)

    def aliases(self, family: str) -> dict[str, str]:
        """alias -> version of the family's registered model ({} when none is registered).
        Read from the registered model: ``search_model_versions`` returns empty aliases. Any
        other failure (the server unreachable, refused credentials) raises ``MlflowError``: a
        registry that cannot be read must not look like a model without aliases, or a fault
        would be recorded as "no previous champion"."""
        from mlflow.exceptions import MlflowException

        try:
            model = self.client().get_registered_model(model_name(family))
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            if err.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
                what = (
                    "check MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (the platform's "
                    "service account)"
                )
            else:
                what = (
                    "check that the server is running and reachable (MLFLOW_TRACKING_URI names "
                    "it), then retry"
                )
            raise MlflowError(
                f"cannot read the aliases of {model_name(family)!r} from the MLflow registry at "
                f"{self.registry_uri or self.tracking_uri} ({err.error_code}): {err.message}; "
                f"{what}"
            ) from err
        return {alias: str(version) for alias, version in model.aliases.items()}

    def set_alias(self, family: str, alias: str, version: str) -> None:
        self.client().set_registered_model_alias(model_name(family), alias, version)

    def delete_alias(self, family: str, alias: str) -> None:
        self.client().delete_registered_model_alias(model_name(family), alias)

    def put_aliases(self, family: str, wanted: Mapping[str, str | None]) -> None:
        """Make each named alias point at its version (None: unset it); others are untouched."""
        now = self.aliases(family)
        for alias, version in wanted.items():
            if version is None and alias in now:
                self.delete_alias(family, alias)
            elif version is not None and now.get(alias) != version:
                self.set_alias(family, alias, version)

    def set_version_tag(self, family: str, version: str, key: str, value: str) -> None:
        self.client().set_model_version_tag(model_name(family), version, key, value)

    def report_run_tags(self, report_id: str) -> dict[str, str]:
        """The tags of the MLflow run that recorded gate report ``report_id`` ({} if none)."""
        found = self.client().search_runs(
            [self.experiment_id(REPORT_EXPERIMENT)],
            filter_string=f"tags.report_id = '{report_id}'",
            max_results=2,
        )
        return dict(found[0].data.tags) if found else {}

    def version_tags(self, family: str, version: str) -> dict[str, str]:
        return dict(self.client().get_model_version(model_name(family), version).tags)
