"""`trainserve local train`: run a TrainingJob YAML on this machine, with a progress bar and a local status."""

from __future__ import annotations

import shutil
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainserve.api.conditions import set_condition
from trainserve.api.progress import ProgressEvent, apply_progress
from trainserve.api.trainingjob import TrainingJob, TrainingJobStatus
from trainserve.localstate import load_job, save_job

from .lifecycle import StopRequested
from .progress import FanOut, ProgressSink, RichProgressSink
from .storage import locate
from .train import TrainingFailed, run

LOCAL_NAMESPACE = "local"


class LocalStatusSink:
    """Keeps the job's record in the state folder up to date, event by event (same status as on a cluster)."""

    def __init__(self, root: Path, job: TrainingJob):
        self.root = root
        self.job = job

    def emit(self, event: ProgressEvent) -> None:
        self.job.status = apply_progress(self.job.status or TrainingJobStatus(), event)
        save_job(self.root, self.job)

    def interrupted(self) -> None:
        now = datetime.now(UTC)
        status = self.job.status or TrainingJobStatus()
        status.phase = "Suspended"
        done = status.last_checkpoint.epoch if status.last_checkpoint else None
        message = f"stopped; run again to resume from epoch {done}" if done else "stopped before the first checkpoint"
        status.conditions = set_condition(status.conditions, "Running", "False", "Interrupted", message, now)
        self.job.status = status
        save_job(self.root, self.job)

    def close(self) -> None:
        pass


def train_locally(
    document: dict[str, Any],
    root: Path,
    *,
    restart: bool = False,
    progress_bar: bool = True,
    verbose: bool = False,
    ray: bool = False,
) -> tuple[int, str]:
    """Run one TrainingJob locally; returns (exit code, one-line outcome). One worker trains in this process unless
    ``ray`` asks for Ray Train, as on a cluster."""
    job = TrainingJob.model_validate(document)
    name = job.metadata.name or "trainingjob"
    job.metadata.namespace = job.metadata.namespace or LOCAL_NAMESPACE
    previous = load_job(root, name)
    if previous and previous.status and previous.status.phase == "Succeeded" and not restart:
        model = previous.status.model
        return (
            0,
            f"{name} already succeeded (model version {model.version if model else '?'}); use --restart to train again",
        )
    if restart:
        checkpoint_root = locate(job.spec.checkpoint_uri)
        if checkpoint_root.is_local:
            shutil.rmtree(checkpoint_root.path, ignore_errors=True)
        else:
            checkpoint_root.delete()
    job.status = previous.status if previous and previous.status and not restart else TrainingJobStatus()
    job.status.attempts = (job.status.attempts or 0) + 1
    status_sink = LocalStatusSink(root, job)  # the record is written from the first event on
    sinks: list[ProgressSink] = [status_sink]
    if progress_bar:
        sinks.append(RichProgressSink(name))
    sink = FanOut(sinks)
    try:
        document = job.model_dump(mode="json", by_alias=True, exclude_none=True)
        model = run(document, sink, verbose=verbose, in_process=not ray)
    except KeyboardInterrupt as stop:
        sink.close()
        status_sink.interrupted()
        # A SIGTERM is a stop as asked (exit 0); Ctrl-C keeps the shell's 130, so `train && serve` stops there.
        code = 0 if isinstance(stop, StopRequested) and stop.signum == signal.SIGTERM else 130
        return code, f"{name} interrupted; run the same command again to resume from the last checkpoint"
    except TrainingFailed as err:
        return 1, f"{name} failed: {err}"
    finally:
        sink.close()
    return 0, f"{name} succeeded: model version {model.version} at {model.uri}"
