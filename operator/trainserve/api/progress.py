"""Progress events of a training run, and how they change a TrainingJob's status.

The training workload emits these events; whoever watches the run (the local runner's state folder, the
operator) folds them into ``TrainingJob.status`` with :func:`apply_progress`, so both show the same thing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .base import Condition, StatusModel
from .conditions import set_condition
from .trainingjob import CheckpointStatus, MlflowRunStatus, ModelStatus, Progress, TrainingJobStatus

EventType = Literal["started", "epoch", "completed", "failed", "tracking"]


class ProgressEvent(StatusModel):
    """One thing that happened in a training run."""

    type: EventType
    time: datetime
    total_epochs: int
    epoch: int | None = Field(None, description="Last completed epoch (1-based).")
    metrics: dict[str, float] = Field(default_factory=dict)
    eta_seconds: float | None = None
    checkpoint: CheckpointStatus | None = Field(None, description="The newest checkpoint, when one was just written.")
    resumed_from_epoch: int | None = Field(None, description="On `started`: the checkpoint epoch the run resumed from.")
    model: ModelStatus | None = Field(None, description="On `completed`: the exported model.")
    reason: str | None = Field(None, description="On `failed`: CamelCase reason.")
    message: str | None = Field(None, description="On `failed`: what went wrong.")
    tensorboard: str | None = Field(None, description="On `started`: the job's TensorBoard logdir.")
    mlflow: MlflowRunStatus | None = Field(None, description="On `tracking`: the MLflow run, or why there is none.")


def _percent(epoch: int, total: int) -> float:
    return round(100.0 * epoch / total, 1) if total else 0.0


def tracking_condition(status: TrainingJobStatus, now: datetime, generation: int | None = None) -> list[Condition]:
    """The conditions with ``Tracking`` as ``status.mlflow`` says (a warning only: training goes on without it)."""
    run = status.mlflow
    if run is None:
        return status.conditions
    if run.error:
        return set_condition(status.conditions, "Tracking", "False", "TrackingUnavailable", run.error, now, generation)
    version = f", model version {run.registered_version} registered" if run.registered_version else ""
    message = f"MLflow run {run.run_id}{version}"
    return set_condition(status.conditions, "Tracking", "True", "Tracked", message, now, generation)


def apply_progress(status: TrainingJobStatus, event: ProgressEvent) -> TrainingJobStatus:
    """The status after ``event``; pure."""
    new = status.model_copy(deep=True)
    if event.type == "started":
        done = event.resumed_from_epoch or 0
        new.phase = "Running"
        new.start_time = new.start_time or event.time
        new.completion_time = None
        new.progress = Progress(
            epoch=done,
            total_epochs=event.total_epochs,
            percent=_percent(done, event.total_epochs),
            updated_at=event.time,
        )
        message = f"resumed from the checkpoint of epoch {done}" if done else "training from scratch"
        new.conditions = set_condition(new.conditions, "Running", "True", "Training", message, event.time)
        new.tensorboard = event.tensorboard or new.tensorboard
    elif event.type == "tracking" and event.mlflow is not None:
        new.mlflow = event.mlflow
        new.conditions = tracking_condition(new, event.time)
    elif event.type == "epoch" and event.epoch is not None:
        new.progress = Progress(
            epoch=event.epoch,
            total_epochs=event.total_epochs,
            percent=_percent(event.epoch, event.total_epochs),
            eta_seconds=event.eta_seconds,
            metrics=dict(event.metrics),
            updated_at=event.time,
        )
        if event.checkpoint is not None:
            new.last_checkpoint = event.checkpoint
    elif event.type == "completed":
        new.phase = "Succeeded"
        new.completion_time = event.time
        new.model = event.model
        if new.progress is not None:
            new.progress.percent = 100.0
            new.progress.eta_seconds = 0.0
        version = event.model.version if event.model else None
        new.conditions = set_condition(new.conditions, "Running", "False", "Completed", "training finished", event.time)
        new.conditions = set_condition(
            new.conditions, "Succeeded", "True", "ModelExported", f"model version {version} exported", event.time
        )
    elif event.type == "failed":
        new.phase = "Failed"
        new.completion_time = event.time
        reason = event.reason or "TrainingFailed"
        new.conditions = set_condition(new.conditions, "Running", "False", reason, event.message or "", event.time)
        new.conditions = set_condition(new.conditions, "Failed", "True", reason, event.message or "", event.time)
    return new
