"""The job's MLflow run, logged by the chief when ``spec.tracking.mlflow`` is set.

One run per job: its id is kept next to the checkpoints (``mlflow-run.json``), so a resumed attempt (a retry, a
local run started again) logs into the same run, at the same absolute epoch steps. The server is a nicety: the
first call that fails turns tracking off for the rest of the attempt, and the run goes on (reported as
``status.mlflow.error``, the ``Tracking=False`` condition).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from trainserve.api.trainingjob import MlflowRunStatus, MlflowTracking, TrainingJobSpec

from .storage import locate

log = logging.getLogger("trainserve.mlflow")

RUN_FILE = "mlflow-run.json"
MODEL_ARTIFACT = "model"
CARD_ARTIFACT = "model.json"
#: MLflow's own defaults retry an unreachable server for minutes; a tracking server is not worth that here.
CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
MAX_PARAM_LENGTH = 6000


def _flatten(prefix: str, value: Any) -> dict[str, str]:
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, inner in value.items():
            out |= _flatten(f"{prefix}.{key}" if prefix else str(key), inner)
        return out
    text = value if isinstance(value, str) else json.dumps(value)
    return {prefix: text[:MAX_PARAM_LENGTH]}


def run_params(spec: TrainingJobSpec) -> dict[str, str]:
    """What the run was asked to do: the model, data, training recipe and resources, flattened (``training.epochs``)."""
    wire = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return _flatten("", {key: wire[key] for key in ("model", "dataset", "training", "resources") if key in wire})


class MlflowRun:
    """The chief's handle on the run; every method is a no-op once the server has failed."""

    def __init__(self, settings: MlflowTracking, spec: TrainingJobSpec, job: dict[str, Any]):
        self.settings = settings
        self.spec = spec
        self.job = job
        self.client: Any = None
        self.status = MlflowRunStatus()

    @property
    def active(self) -> bool:
        return self.client is not None and self.status.run_id is not None

    def start(self) -> MlflowRunStatus:
        """Open (or continue) the run; returns what to report."""
        for name, value in CLIENT_DEFAULTS.items():
            os.environ.setdefault(name, value)
        try:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=self.settings.tracking_uri)
            self._open()
        except Exception as err:
            self._unavailable("start", err)
        return self.status

    def _open(self) -> None:
        run_file = locate(self.spec.checkpoint_uri).child(RUN_FILE)
        previous = json.loads(run_file.read_text()) if run_file.exists() else {}
        experiment = self.client.get_experiment_by_name(self.settings.experiment)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(self.settings.experiment)
        )
        tags = {
            "trainserve.namespace": str(self.job.get("namespace") or ""),
            "trainserve.name": str(self.job.get("name") or ""),
            "trainserve.attempt": str(self.job.get("attempt") or 1),
            "trainserve.uid": str(self.job.get("uid") or ""),
        }
        if previous.get("runId") and previous.get("experimentId") == experiment_id:
            self.status = MlflowRunStatus(run_id=previous["runId"], experiment_id=experiment_id)
            self.client.update_run(self.status.run_id, status="RUNNING")
            self._log(tags=tags)  # the attempt that logs now
            return
        run = self.client.create_run(experiment_id, tags=tags, run_name=self.job.get("name") or None)
        self.status = MlflowRunStatus(run_id=run.info.run_id, experiment_id=experiment_id)
        self._log(params=run_params(self.spec))
        run_file.write_text(json.dumps({"runId": run.info.run_id, "experimentId": experiment_id}))

    def _log(self, metrics: dict[str, float] | None = None, step: int = 0, **lists: dict[str, str]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            self.status.run_id,
            metrics=[Metric(key, value, now, step) for key, value in (metrics or {}).items()],
            params=[Param(key, value) for key, value in lists.get("params", {}).items()],
            tags=[RunTag(key, value) for key, value in lists.get("tags", {}).items()],
        )

    def epoch(self, step: int, metrics: dict[str, float]) -> MlflowRunStatus | None:
        """Log one epoch's metrics; returns a status to report when the server just failed."""
        if not self.active:
            return None
        try:
            self._log(metrics, step)
        except Exception as err:
            return self._unavailable("log metrics", err)
        return None

    def model_exported(self, export_dir: str, card: dict[str, Any]) -> MlflowRunStatus | None:
        """Log the card and the SavedModel; register it as a new version; finish the run."""
        if not self.active:
            return None
        try:
            with tempfile.TemporaryDirectory(prefix="trainserve-card-") as folder:
                path = Path(folder) / CARD_ARTIFACT
                path.write_text(json.dumps(card, indent=2, default=str))
                self.client.log_artifact(self.status.run_id, str(path))
                # ...and inside the model: a registered version is then a complete model folder to serve
                self.client.log_artifact(self.status.run_id, str(path), MODEL_ARTIFACT)
            self.client.log_artifacts(self.status.run_id, export_dir, MODEL_ARTIFACT)
            if self.settings.registered_model_name:
                self.status.registered_version = self._register(self.settings.registered_model_name)
            self.client.set_terminated(self.status.run_id, "FINISHED")
        except Exception as err:
            return self._unavailable("log the model", err)
        return self.status

    def _register(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name)
        except MlflowException as err:
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        source = f"{self.client.get_run(self.status.run_id).info.artifact_uri}/{MODEL_ARTIFACT}"
        version = self.client.create_model_version(name, source, run_id=self.status.run_id)
        return str(version.version)

    def failed(self) -> None:
        if self.active:
            try:
                self.client.set_terminated(self.status.run_id, "FAILED")
            except Exception as err:
                log.warning("could not mark the MLflow run failed: %s", err)

    def _unavailable(self, what: str, err: Exception) -> MlflowRunStatus:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        message = (
            f"MLflow at {self.settings.tracking_uri}: could not {what} ({first_line}); training goes on without it"
        )
        log.warning("%s", message)
        self.client = None
        self.status = MlflowRunStatus(run_id=self.status.run_id, experiment_id=self.status.experiment_id, error=message)
        return self.status
