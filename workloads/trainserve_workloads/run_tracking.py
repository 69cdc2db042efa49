"""Where the chief records a run besides the status: TensorBoard always, MLflow when the spec asks for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trainserve.api.storage import tensorboard_logdir
from trainserve.api.trainingjob import MlflowRunStatus, TrainingJobSpec

from .mlflow_run import MlflowRun
from .tensorboard_log import TensorBoardLog

#: Sends a progress event (``_Relay.send``): the MLflow run's status goes out as a ``tracking`` event.
Send = Callable[..., None]


class RunTracking:
    def __init__(self, spec: TrainingJobSpec, job: dict[str, Any], send: Send):
        self.send = send
        self.tensorboard = TensorBoardLog(spec.output.uri, int(job.get("attempt") or 1))
        self.logdir = tensorboard_logdir(spec.output.uri)
        settings = spec.tracking.mlflow if spec.tracking is not None else None
        self.mlflow = MlflowRun(settings, spec, job) if settings is not None else None

    def start(self, model: Any, n_features: int) -> None:
        self.tensorboard.graph(model, n_features)
        if self.mlflow is not None:
            self._report(self.mlflow.start())

    def epoch(
        self, step: int, metrics: dict[str, float], learning_rate: float | None, samples_per_second: float
    ) -> None:
        self.tensorboard.epoch(step, metrics, learning_rate, samples_per_second)
        if self.mlflow is not None:
            extra = {"samples_per_second": samples_per_second}
            if learning_rate is not None:
                extra["learning_rate"] = learning_rate
            self._report(self.mlflow.epoch(step, metrics | extra))

    def model_exported(self, export_dir: str, card: dict[str, Any]) -> None:
        if self.mlflow is not None:
            self._report(self.mlflow.model_exported(export_dir, card))

    def close(self, succeeded: bool) -> None:
        self.tensorboard.close()
        if self.mlflow is not None and not succeeded:
            self.mlflow.failed()

    def _report(self, status: MlflowRunStatus | None) -> None:
        if status is not None:
            self.send("tracking", mlflow=status.model_copy())
