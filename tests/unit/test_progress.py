"""Progress events fold into TrainingJob status the same way everywhere (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from trainserve.api.conditions import find_condition
from trainserve.api.progress import ProgressEvent, apply_progress
from trainserve.api.trainingjob import CheckpointStatus, MlflowRunStatus, ModelStatus, TrainingJobStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_a_run_from_start_to_model() -> None:
    status = apply_progress(TrainingJobStatus(), ProgressEvent(type="started", time=at(0), total_epochs=4))
    assert status.phase == "Running" and status.start_time == at(0)
    assert status.progress is not None and status.progress.epoch == 0 and status.progress.percent == 0
    running = find_condition(status.conditions, "Running")
    assert running is not None and running.status == "True" and running.last_transition_time == at(0)

    checkpoint = CheckpointStatus(uri="/c/epoch-000001", epoch=1, time=at(5))
    status = apply_progress(
        status,
        ProgressEvent(
            type="epoch",
            time=at(5),
            total_epochs=4,
            epoch=1,
            metrics={"loss": 0.5},
            eta_seconds=15.0,
            checkpoint=checkpoint,
        ),
    )
    assert status.progress is not None and status.progress.percent == 25.0 and status.progress.metrics == {"loss": 0.5}
    assert status.last_checkpoint == checkpoint
    status = apply_progress(
        status, ProgressEvent(type="epoch", time=at(9), total_epochs=4, epoch=2, metrics={"loss": 0.4})
    )
    assert status.last_checkpoint == checkpoint  # an epoch without a checkpoint keeps the last one
    assert find_condition(status.conditions, "Running").last_transition_time == at(0)  # type: ignore[union-attr]

    model = ModelStatus(uri="/m/1", version=1, metrics={"val_accuracy": 0.95})
    status = apply_progress(status, ProgressEvent(type="completed", time=at(20), total_epochs=4, model=model))
    assert status.phase == "Succeeded" and status.completion_time == at(20) and status.model == model
    assert status.progress is not None and status.progress.percent == 100.0
    assert find_condition(status.conditions, "Succeeded").status == "True"  # type: ignore[union-attr]
    assert find_condition(status.conditions, "Running").status == "False"  # type: ignore[union-attr]


def test_resume_and_failure() -> None:
    status = apply_progress(
        TrainingJobStatus(start_time=at(-100)),
        ProgressEvent(type="started", time=at(0), total_epochs=10, resumed_from_epoch=6),
    )
    assert status.start_time == at(-100)  # the job's start, not the attempt's
    assert status.progress is not None and status.progress.epoch == 6 and status.progress.percent == 60.0
    assert "resumed" in (find_condition(status.conditions, "Running").message or "")  # type: ignore[union-attr]
    status = apply_progress(
        status, ProgressEvent(type="failed", time=at(3), total_epochs=10, reason="TrainingFailed", message="boom")
    )
    failed = find_condition(status.conditions, "Failed")
    assert status.phase == "Failed" and failed is not None and failed.message == "boom"


def test_tracking_events_set_the_logdir_the_run_and_the_tracking_condition() -> None:
    started = ProgressEvent(type="started", time=at(0), total_epochs=4, tensorboard="s3://m/digits/tensorboard")
    status = apply_progress(TrainingJobStatus(), started)
    assert status.tensorboard == "s3://m/digits/tensorboard"
    run = MlflowRunStatus(run_id="abc", experiment_id="1", registered_version="3")
    status = apply_progress(status, ProgressEvent(type="tracking", time=at(1), total_epochs=4, mlflow=run))
    tracking = find_condition(status.conditions, "Tracking")
    assert tracking is not None and (tracking.status, tracking.reason) == ("True", "Tracked")
    assert tracking.message == "MLflow run abc, model version 3 registered"
    down = MlflowRunStatus(run_id="abc", error="MLflow at http://x: could not log metrics (refused)")
    status = apply_progress(status, ProgressEvent(type="tracking", time=at(2), total_epochs=4, mlflow=down))
    tracking = find_condition(status.conditions, "Tracking")
    assert tracking is not None and (tracking.status, tracking.reason) == ("False", "TrackingUnavailable")
    assert status.mlflow == down and status.tensorboard == "s3://m/digits/tensorboard"  # a restart keeps the logdir
    restarted = apply_progress(status, ProgressEvent(type="started", time=at(3), total_epochs=4))
    assert restarted.tensorboard == "s3://m/digits/tensorboard"
