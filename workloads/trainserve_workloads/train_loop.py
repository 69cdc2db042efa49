"""What every Ray Train worker runs: build, (resume,) fit under MultiWorkerMirroredStrategy, checkpoint, export.

Under that strategy saving is collective: every worker calls ``save_weights``/``save``; only the chief
(rank 0) keeps what it wrote and uploads it, the others write to a throwaway folder.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
import tf_keras as keras

from trainserve.api.progress import ProgressEvent
from trainserve.api.trainingjob import CheckpointStatus, ModelStatus, TrainingJobSpec

from . import checkpoints, modelstore
from .datasets import Dataset, dataset_uri, load_dataset
from .errors import WorkloadError
from .models import INPUT_NAME, OUTPUT_NAME, build_model, compile_model
from .run_tracking import RunTracking
from .storage import locate
from .tf_threads import size_thread_pools

SAMPLE_ROWS = 5


def _now() -> datetime:
    return datetime.now(UTC)


def _floats(logs: dict[str, Any] | None) -> dict[str, float]:
    return {k: float(v) for k, v in (logs or {}).items() if np.isscalar(v) or np.ndim(v) == 0}


class Ledger(Protocol):
    """The worker group's record of an attempt (:class:`WorkerGroupLedger`, held here or by a Ray actor)."""

    def started(self, epoch: int) -> None: ...
    def epoch_done(self, epoch: int) -> None: ...
    def summary(self) -> dict[str, int]: ...


class _RemoteLedger:
    """The ledger of a Ray Train run: a Ray actor the driver created, written to without waiting."""

    def __init__(self, actor: Any):
        self.actor = actor

    def started(self, epoch: int) -> None:
        self.actor.started.remote(epoch)

    def epoch_done(self, epoch: int) -> None:
        self.actor.epoch_done.remote(epoch)

    def summary(self) -> dict[str, int]:
        import ray

        summary: dict[str, int] = ray.get(self.actor.summary.remote())
        return summary


class _Relay:
    """Sends progress events to the driver and keeps the ledger; only the chief sends."""

    def __init__(self, emit: Callable[[dict[str, Any]], None] | None, ledger: Ledger | None, total_epochs: int):
        self.emit = emit
        self.ledger = ledger
        self.total_epochs = total_epochs

    def send(self, event_type: str, **fields: Any) -> None:
        if self.emit is None:
            return
        event = ProgressEvent(type=event_type, time=_now(), total_epochs=self.total_epochs, **fields)
        self.emit(event.model_dump(mode="json", by_alias=True, exclude_none=True))
        if self.ledger is not None and event_type in ("started", "epoch"):
            record = self.ledger.started if event_type == "started" else self.ledger.epoch_done
            record(fields.get("epoch") or 0)

    def restarts(self) -> dict[str, int]:
        return self.ledger.summary() if self.ledger is not None else {}


class TrainingStopped(Exception):
    """The command was asked to stop: training ends after the current step, without a model."""


class _StopWhenAsked(keras.callbacks.Callback):  # type: ignore[misc]
    """Ends ``fit`` after the step in progress once ``stop`` is set (a run in the command's own process)."""

    def __init__(self, stop: threading.Event):
        super().__init__()
        self.stop = stop
        self._supports_tf_logs = True  # Keras then passes the step's logs as they are, with no copy to NumPy

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.stop.is_set():
            raise TrainingStopped("stopped as asked")


class _EpochEnd(keras.callbacks.Callback):  # type: ignore[misc]
    """After each epoch: checkpoint when due (all workers save; the chief uploads), then report progress."""

    def __init__(
        self,
        spec: TrainingJobSpec,
        chief: bool,
        relay: _Relay,
        fingerprint: str,
        tracking: RunTracking | None,
        samples: int,
    ):
        super().__init__()
        self.spec = spec
        self.tracking = tracking
        self.samples = samples
        self.chief = chief
        self.relay = relay
        self.fingerprint = fingerprint
        self.root = locate(spec.checkpoint_uri)
        self.epoch_started = time.monotonic()
        self.durations: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch_started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        done = epoch + 1
        total = self.spec.training.epochs
        metrics = _floats(logs)
        checkpoint = None
        if done % self.spec.checkpoint.every_epochs == 0 or done == total:
            checkpoint = self._checkpoint(done, metrics)
        self.durations.append(time.monotonic() - self.epoch_started)
        eta = sum(self.durations) / len(self.durations) * (total - done)
        if self.tracking is not None:
            throughput = self.samples / max(self.durations[-1], 1e-9)
            self.tracking.epoch(done, metrics, _learning_rate(self.model), throughput)
        self.relay.send("epoch", epoch=done, metrics=metrics, eta_seconds=round(eta, 1), checkpoint=checkpoint)

    def _checkpoint(self, epoch: int, metrics: dict[str, float]) -> CheckpointStatus | None:
        folder = tempfile.mkdtemp(prefix="trainserve-ckpt-")
        try:
            self.model.save_weights(os.path.join(folder, checkpoints.WEIGHTS_PREFIX))
            if not self.chief:
                return None
            record = checkpoints.write_checkpoint(
                self.root, epoch, folder, self.fingerprint, metrics, self.spec.checkpoint.keep
            )
            return CheckpointStatus(uri=record.location.uri, epoch=epoch, time=datetime.fromisoformat(record.time))
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _learning_rate(model: keras.Model) -> float | None:
    """The optimizer's current learning rate (a schedule evaluated at the current step)."""
    try:
        rate = model.optimizer.learning_rate
        if callable(rate) and not isinstance(rate, tf.Variable):
            rate = rate(model.optimizer.iterations)
        return float(keras.backend.get_value(rate))
    except (AttributeError, TypeError, ValueError):
        return None


def _export(model: keras.Model, n_features: int, folder: str) -> None:
    signature = [tf.TensorSpec([None, n_features], tf.float32, name=INPUT_NAME)]

    @tf.function(input_signature=signature)  # type: ignore[untyped-decorator]  # TensorFlow has no type information
    def serve(features: tf.Tensor) -> dict[str, tf.Tensor]:
        return {OUTPUT_NAME: model(features, training=False)}

    model.save(folder, save_format="tf", include_optimizer=False, signatures={"serving_default": serve})


def _versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "tf_keras": keras.__version__,
        "ray": importlib.metadata.version("ray"),
    }


@dataclass(frozen=True)
class RunFacts:
    """What a model card records about the run that made the model."""

    job: dict[str, Any]
    metrics: dict[str, float]
    resumed_from_epoch: int | None
    started: datetime
    workers: int
    restarts: dict[str, int] = field(default_factory=dict)
    #: The checkpoint whose weights the training started from, if any.
    resumed_from: str | None = None
    #: The checkpoints' fingerprint of the spec (model, dataset, training).
    spec_hash: str | None = None
    #: Where it trained: Ray Train's worker group (``ray``) or the local command's own process (``process``).
    runner: str = "ray"


def _card(
    spec: TrainingJobSpec, data: Dataset, run: RunFacts, sample_predictions: list[Any], output_units: int
) -> dict[str, Any]:
    training = spec.training.to_wire() | {"stepsPerExecution": spec.training.steps_per_call(run.workers)}
    return {
        "name": run.job.get("name"),
        "namespace": run.job.get("namespace"),
        "createdBy": "trainserve",
        "task": "classification"
        if data.classes
        else ("binary" if spec.training.loss == "binary_crossentropy" else "regression"),
        "classes": data.classes,
        "signature": {
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, data.n_features]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, output_units]}],
        },
        "featureNames": data.feature_names,
        "metrics": run.metrics,
        "epochsCompleted": spec.training.epochs,
        "resumedFromEpoch": run.resumed_from_epoch,
        **run.restarts,
        "samples": {"train": len(data.x_train), "validation": len(data.x_val)},
        "workers": run.workers,
        "runner": run.runner,
        "model": spec.model.to_wire(),
        "dataset": spec.dataset.to_wire(),
        "training": training,
        "hyperparameters": training.get("hyperparameters", {}),
        "frameworks": _versions(),
        "startTime": run.started.isoformat(),
        "endTime": _now().isoformat(),
        "sample": {"inputs": data.x_val[:SAMPLE_ROWS].tolist(), "predictions": sample_predictions},
    }


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point of each worker; ``config`` is built by :func:`trainserve_workloads.train.run`."""
    import ray.train

    spec = TrainingJobSpec.model_validate(config["spec"])
    context = ray.train.get_context()
    size_thread_pools(_cpu_share(spec, context.get_local_world_size()))
    chief = context.get_world_rank() == 0
    queue = config.get("relay") if chief else None
    ledger = _RemoteLedger(config["ledger"]) if config.get("ledger") is not None else None
    relay = _Relay(queue.put if queue is not None else None, ledger, spec.training.epochs)
    _train(spec, config, chief, context.get_world_size(), relay, None)


def find_devices() -> None:
    """TensorFlow's device discovery (it logs what it does not find), without starting its runtime: the thread
    pools can still be sized after it."""
    tf.config.list_physical_devices()


def train_in_this_process(
    config: dict[str, Any], emit: Callable[[dict[str, Any]], None], ledger: Ledger, stop: threading.Event
) -> None:
    """One worker's training in the calling process, without Ray (a local run of one worker): it shares the whole
    machine, as a local Ray's single worker does. Raises :class:`TrainingStopped` once ``stop`` is set."""
    spec = TrainingJobSpec.model_validate(config["spec"])
    size_thread_pools(max(spec.resources.cpus_per_worker.cpus, os.cpu_count() or 1))
    keras.backend.clear_session()  # a restart, or the next job of the same command, starts from a clean slate
    keras.mixed_precision.set_global_policy("float32")
    _train(spec, config, True, 1, _Relay(emit, ledger, spec.training.epochs), stop)


def _cpu_share(spec: TrainingJobSpec, workers_here: int) -> float:
    """This worker's CPUs: its Ray node's divided among the workers on it (a local run shares the whole machine),
    never fewer than it asked for."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    cpus = next((n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["NodeID"] == node), 0.0)
    return max(spec.resources.cpus_per_worker.cpus, math.floor(cpus / max(1, workers_here)))


def _train(
    spec: TrainingJobSpec,
    config: dict[str, Any],
    chief: bool,
    workers: int,
    relay: _Relay,
    stop: threading.Event | None,
) -> None:
    tracking = RunTracking(spec, config.get("job", {}), relay.send) if chief else None
    succeeded = False
    try:
        try:
            _train_tracked(spec, config, chief, workers, relay, tracking, stop)
            succeeded = True
        finally:  # the run's TensorBoard events are flushed and uploaded before the end is reported
            if tracking is not None:
                tracking.close(succeeded)
    except WorkloadError as err:  # a spec that the data or the model refuses: the job fails with the reason
        relay.send("failed", reason="InvalidSpec", message=str(err))
        raise


def _train_tracked(
    spec: TrainingJobSpec,
    config: dict[str, Any],
    chief: bool,
    workers: int,
    relay: _Relay,
    tracking: RunTracking | None,
    stop: threading.Event | None,
) -> None:
    started = _now()
    attempt_resume: dict[str, Any] | None = config.get("resume")
    resume = _latest_checkpoint(spec, config["fingerprint"])  # newer than the attempt's after a restart
    first_epoch = int(resume["epoch"]) if resume else 0
    if spec.training.seed is not None:
        keras.utils.set_random_seed(spec.training.seed)
    if spec.training.mixed_precision:
        keras.mixed_precision.set_global_policy(_mixed_policy())
    # One worker needs no collectives, nor the gRPC server (on every interface) that the strategy starts.
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if workers > 1 else tf.distribute.get_strategy()
    data = load_dataset(spec.dataset, spec.training.loss)
    # The optimizer's slots are restored lazily, at the first step: the files must outlive `fit`.
    restored = tempfile.mkdtemp(prefix="trainserve-resume-")
    try:
        with strategy.scope():
            model = build_model(spec, data.n_features, len(data.classes), data.x_train)
            compile_model(model, spec.training, workers)
            if resume:
                locate(resume["uri"]).download_dir(restored)
                model.load_weights(os.path.join(restored, checkpoints.WEIGHTS_PREFIX))
        logdir = tracking.logdir if tracking is not None else None
        relay.send("started", resumed_from_epoch=first_epoch or None, epoch=first_epoch, tensorboard=logdir)
        if tracking is not None:
            tracking.start(model, data.n_features)
        metrics = _fit(model, spec, data, first_epoch, chief, relay, config["fingerprint"], tracking, stop)
    finally:
        shutil.rmtree(restored, ignore_errors=True)
    if not metrics and resume:
        metrics = dict(resume.get("metrics", {}))  # nothing was left to train: the checkpoint's figures stand

    if chief:
        resumed_from = int(attempt_resume["epoch"]) if attempt_resume else None
        run = RunFacts(
            config.get("job", {}),
            metrics,
            resumed_from,
            started,
            workers,
            relay.restarts(),
            resumed_from=resume["uri"] if resume else None,
            spec_hash=config["fingerprint"],
            runner="ray" if stop is None else "process",
        )
        model_status = publish_model(model, spec, data, run, tracking)
        relay.send("completed", epoch=spec.training.epochs, metrics=metrics, model=model_status)
    else:
        _export_to_nowhere(model, data.n_features)


def _mixed_policy() -> str:
    """float16 on a GPU (Keras' compile then scales the loss), bfloat16 on CPUs (no loss scaling needed)."""
    return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"


def _latest_checkpoint(spec: TrainingJobSpec, fingerprint: str) -> dict[str, Any] | None:
    """Where this start of the worker group resumes: the newest complete checkpoint (every worker reads the same
    one; nothing writes until they have all started)."""
    record = checkpoints.latest_checkpoint(locate(spec.checkpoint_uri), fingerprint)
    return {"uri": record.location.uri, "epoch": record.epoch, "metrics": record.metrics} if record else None


def _export_to_nowhere(model: keras.Model, n_features: int) -> None:
    """A non-chief worker's part in the collective save."""
    folder = tempfile.mkdtemp(prefix="trainserve-export-")
    try:
        _export(model, n_features, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def publish_model(
    model: keras.Model, spec: TrainingJobSpec, data: Dataset, run: RunFacts, tracking: RunTracking | None = None
) -> ModelStatus:
    """Export the SavedModel, check it by reloading it, and publish it with its card as the next version."""
    export_dir = tempfile.mkdtemp(prefix="trainserve-export-")
    try:
        _export(model, data.n_features, export_dir)
        reloaded = tf.saved_model.load(export_dir).signatures["serving_default"]
        sample = reloaded(**{INPUT_NAME: tf.constant(data.x_val[:SAMPLE_ROWS])})[OUTPUT_NAME].numpy()
        lineage = _lineage(spec, data, run)
        card = _card(spec, data, run, sample.tolist(), int(sample.shape[-1]))
        card["lineage"] = {"trainingJobUid": run.job.get("uid")} | lineage
        version, location = modelstore.publish(locate(spec.output.uri), export_dir, card)
        if tracking is not None:
            tracking.model_exported(export_dir, card | {"version": version, "uri": location.uri})
        return ModelStatus.model_validate({"uri": location.uri, "version": version, "metrics": run.metrics} | lineage)
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)


def _lineage(spec: TrainingJobSpec, data: Dataset, run: RunFacts) -> dict[str, Any]:
    """Where the model came from, as the job's ``status.model`` reports it (a ModelService's adds uid and attempt)."""
    return {
        "datasetUri": dataset_uri(spec.dataset),
        "datasetFingerprint": data.fingerprint(),
        "resumedFrom": run.resumed_from,
        "specHash": run.spec_hash,
    }


def _fit(
    model: keras.Model,
    spec: TrainingJobSpec,
    data: Dataset,
    first_epoch: int,
    chief: bool,
    relay: _Relay,
    fingerprint: str,
    tracking: RunTracking | None = None,
    stop: threading.Event | None = None,
) -> dict[str, float]:
    """Train from ``first_epoch`` to the end; returns the last epoch's metrics (empty if none were left)."""
    y_train, y_val = data.y_train, data.y_val
    if spec.training.loss == "categorical_crossentropy":
        y_train, y_val = (keras.utils.to_categorical(y, len(data.classes)) for y in (y_train, y_val))
    # Arrays, as a plain `fit` takes them: Keras shuffles whole batches of indices (not rows one by one through a
    # tf.data shuffle buffer) and, under MultiWorkerMirroredStrategy, shards every global batch across the workers.
    history = model.fit(
        data.x_train,
        y_train,
        batch_size=spec.training.batch_size,
        epochs=spec.training.epochs,
        initial_epoch=first_epoch,
        validation_data=(data.x_val, y_val) if len(data.x_val) else None,
        callbacks=[
            _EpochEnd(spec, chief, relay, fingerprint, tracking, len(data.x_train)),
            *([_StopWhenAsked(stop)] if stop is not None else []),
        ],
        verbose=0,
    )
    return {k: float(v[-1]) for k, v in history.history.items() if v}
