"""Training entrypoint: ``python -m trainserve_workloads.train --config <json or path>``.

Takes the resolved TrainingJob (as the operator or `trainserve local train` builds it), checks it, joins the
Ray cluster it runs in (``RAY_ADDRESS``) or starts a local Ray, and trains on ``resources.workers`` Ray
Train workers with TensorFlow's MultiWorkerMirroredStrategy. Progress goes to a pluggable sink.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import yaml

from trainserve.api.progress import ProgressEvent
from trainserve.api.runtimeenv import REMOTE_SCHEMES
from trainserve.api.storage import VOLUMES_DIR_ENV
from trainserve.api.trainingjob import ModelStatus, TrainingJob, TrainingJobSpec
from trainserve.api.validation import InvalidResource, parse
from trainserve.naming import ATTEMPT_ENV, JOB_UID_ENV

from . import checkpoints
from .datasets import dataset_size
from .errors import WorkloadError
from .ledger import WorkerGroupLedger
from .lifecycle import handle_stop_signals
from .progress import FanOut, JsonLinesSink, KubernetesStatusSink, ProgressSink
from .storage import locate, volumes_root

log = logging.getLogger("trainserve.train")


#: Environment of the Ray processes TensorFlow runs in: legacy Keras, quiet C++ logs.
WORKER_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}


class TrainingFailed(Exception):
    """The run ended without a model; ``reason`` is a CamelCase reason for the status."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


def load_config(value: str) -> dict[str, Any]:
    """The resolved TrainingJob, given inline as JSON or as a path to a JSON/YAML file."""
    text = value if value.lstrip().startswith("{") else Path(value).read_text(encoding="utf-8")
    document = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    if not isinstance(document, dict):
        raise ValueError("--config must be a TrainingJob document (a JSON or YAML mapping)")
    return document


def _check_writable(uri: str, field: str) -> None:
    try:
        locate(uri).check_writable()
    except (OSError, ValueError) as err:
        raise WorkloadError(
            field, f"cannot write to {uri}: {err}", "use a writable location, or fix the storage credentials"
        ) from None


def preflight(spec: TrainingJobSpec) -> checkpoints.CheckpointRecord | None:
    """Every check that can fail before a worker starts; returns the checkpoint to resume from, if any."""
    n_features, n_classes = dataset_size(spec.dataset, spec.training.loss)
    if spec.training.batch_size < spec.resources.workers:
        raise WorkloadError(
            "spec.training.batchSize",
            f"the global batch of {spec.training.batch_size} cannot be split across {spec.resources.workers} workers",
            f"use a batchSize of at least {spec.resources.workers}",
        )
    if spec.model.entrypoint is not None:
        from .models import build_entrypoint, output_units

        units, _ = output_units(spec.training.loss, n_classes)
        build_entrypoint(spec.model.entrypoint, spec.training.hyperparameters, n_features, units)
    elif spec.model.builtin is not None and spec.model.builtin.name == "cnn":
        from .models import cnn_input_shape

        cnn_input_shape(spec.model.builtin, n_features)
    _check_writable(spec.output.uri, "spec.output.uri")
    _check_writable(spec.checkpoint_uri, "spec.checkpoint.uri")
    root = locate(spec.checkpoint_uri)
    checkpoints.remove_partial(root)
    return checkpoints.latest_checkpoint(root, checkpoints.fingerprint(spec))


def local_working_dir(spec: TrainingJobSpec) -> str | None:
    """``runtimeEnv.workingDir`` when it is a folder on this machine (local runs), made absolute; else None."""
    where = spec.runtime_env.working_dir if spec.runtime_env is not None else None
    if where is None or (where.startswith(REMOTE_SCHEMES) and not where.startswith("pvc://")):
        return None
    path = Path(locate(where).path)
    if not path.is_dir():
        raise WorkloadError(
            "spec.runtimeEnv.workingDir",
            f"{path} is not a folder on this machine",
            "point workingDir at the folder that holds your code (or at an s3:// or https:// zip)",
        )
    return str(path)


def init_ray(spec: TrainingJobSpec, verbose: bool, working_dir: str | None = None) -> None:
    """Join the cluster in ``RAY_ADDRESS`` (a submitted job already runs in its runtime environment), or start a
    local Ray big enough for the workers, with ``runtimeEnv`` (``working_dir`` resolved to a local folder)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.update({k: v for k, v in WORKER_ENV.items() if k not in os.environ})
    options: dict[str, Any] = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], **options)
        return
    needed = math.ceil(spec.resources.workers * spec.resources.cpus_per_worker.cpus)
    runtime_env = spec.runtime_env.to_ray(working_dir) if spec.runtime_env is not None else {}
    # Workers resolve pvc:// where the driver does, whatever directory Ray starts them in.
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), VOLUMES_DIR_ENV: volumes_root()}
    options["runtime_env"] = runtime_env
    ray.init(
        num_cpus=max(needed, os.cpu_count() or 1),
        num_gpus=spec.resources.workers * spec.resources.gpus_per_worker or None,
        include_dashboard=False,
        **options,
    )
    handle_stop_signals()  # ours again, if the command set them: Ray's driver installed its own


class _Fit(threading.Thread):
    """Runs the training off the main thread, so Ctrl-C reaches us (and not Ray Train's own handler)."""

    def __init__(self, train: Callable[[], Any]):
        super().__init__(daemon=True, name="trainserve-fit")
        self.train = train
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.train()
        except BaseException as err:  # handed to the main thread
            self.error = err


def _relay_until_done(fit: _Fit, queue: Any, sink: ProgressSink) -> tuple[ProgressEvent | None, ProgressEvent | None]:
    """Pass the workers' events (from a Ray queue or a ``queue.Queue``) to the sink until training ends; returns
    the (completed, failed) events."""
    completed = failed = None
    while True:
        try:
            item = queue.get(timeout=0.2)
        except Empty:  # Ray's queue raises a subclass of it
            if not fit.is_alive():
                return completed, failed
            continue
        event = ProgressEvent.model_validate(item)
        if event.type == "failed":
            failed = event  # reported once by the driver, with the best message
            continue
        if event.type == "completed":
            completed = event
        sink.emit(event)


def run(
    document: dict[str, Any], sink: ProgressSink, *, verbose: bool = False, in_process: bool = False
) -> ModelStatus:
    """Train one TrainingJob to completion; returns the exported model, raises TrainingFailed or WorkloadError.

    ``in_process``: a run that can, trains in this process, without Ray (see :func:`needs_ray`)."""
    try:
        job = parse(document)
    except InvalidResource as invalid:
        first = invalid.problems[0]
        raise WorkloadError(first.path, first.message, first.fix) from None
    assert isinstance(job, TrainingJob)
    spec = absolute_uris(job.spec)
    working_dir = local_working_dir(spec)
    if working_dir is not None and working_dir not in sys.path:
        sys.path.insert(0, working_dir)  # the driver's preflight imports the entrypoint too
    resume = preflight(spec)
    config: dict[str, Any] = {
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        "job": _identity(job),
        "resume": {"uri": resume.location.uri, "epoch": resume.epoch, "metrics": resume.metrics} if resume else None,
        "fingerprint": checkpoints.fingerprint(spec),
    }
    if in_process and needs_ray(spec) is None:
        completed, failed, error = _train_in_this_process(spec, config, sink, verbose, working_dir)
    else:
        completed, failed, error = _train_under_ray(job, spec, config, sink, verbose, working_dir)
    if error is not None:
        reason = failed.reason if failed and failed.reason else "TrainingFailed"
        message = failed.message if failed and failed.message else _root_cause(error)
        sink.emit(
            ProgressEvent(
                type="failed", time=_utcnow(), total_epochs=spec.training.epochs, reason=reason, message=message
            )
        )
        raise TrainingFailed(reason, message)
    if completed is None or completed.model is None:
        raise TrainingFailed("NoModel", "training ended without exporting a model")
    return completed.model


#: How long a stopped run in this process may take to finish its current step before the command goes on.
STOP_GRACE_SECONDS = 30.0


def needs_ray(spec: TrainingJobSpec) -> str | None:
    """Why this run needs Ray Train, or None when one process can train it: Ray Train's own local mode runs one
    worker in the calling process for the same reason (docs.ray.io, Ray Train user guide "Local mode"): it skips
    starting Ray, its Train controller and a worker process, most of a short run's time (docs/performance.md)."""
    if os.environ.get("RAY_ADDRESS"):
        return "it joins the Ray cluster in RAY_ADDRESS"
    if spec.resources.workers > 1:
        return f"{spec.resources.workers} workers are {spec.resources.workers} processes"
    runtime_env = spec.runtime_env
    if runtime_env is not None and runtime_env.pip:
        return "runtimeEnv.pip installs packages into Ray's worker environment"
    if runtime_env is not None and local_working_dir(spec) is None and runtime_env.working_dir is not None:
        return "Ray downloads runtimeEnv.workingDir"
    return None


@contextlib.contextmanager
def _runtime_env_here(spec: TrainingJobSpec, working_dir: str | None) -> Iterator[None]:
    """This process as Ray would start the worker: its environment variables (ours, then ``runtimeEnv.envVars``)
    and, with a ``workingDir``, that folder as the current one; all put back afterwards."""
    variables = {k: v for k, v in WORKER_ENV.items() if k not in os.environ}
    if spec.runtime_env is not None:
        variables |= dict(spec.runtime_env.env_vars)
    before = {key: os.environ.get(key) for key in variables}
    cwd = os.getcwd()
    os.environ.update(variables)
    try:
        if working_dir is not None:
            os.chdir(working_dir)
        yield
    finally:
        os.chdir(cwd)
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


Outcome = tuple[ProgressEvent | None, ProgressEvent | None, Exception | None]
"""How training ended: the completed and failed events, and the error that failed the run (raised otherwise)."""


def _train_in_this_process(
    spec: TrainingJobSpec, config: dict[str, Any], sink: ProgressSink, verbose: bool, working_dir: str | None
) -> Outcome:
    log.info("training in this process: one worker needs no Ray (the `--ray` option trains under Ray Train)")
    with _runtime_env_here(spec, working_dir):
        fit, queue = _start_in_this_process(spec, config, verbose)
        try:
            completed, failed = _relay_until_done(fit, queue, sink)
        except KeyboardInterrupt:
            fit.stop.set()  # training ends after its current step; the checkpoints written so far stay
            fit.join(timeout=STOP_GRACE_SECONDS)
            raise
    fit.join()
    if fit.error is not None and not isinstance(fit.error, Exception):
        raise fit.error
    return completed, failed, fit.error  # any error of the training's own fails the run


class _InProcessFit(_Fit):
    """A run in this process: ``stop`` ends it after the current step."""

    def __init__(self, train: Callable[[threading.Event], Any]):
        self.stop = threading.Event()
        super().__init__(lambda: train(self.stop))


@contextlib.contextmanager
def _native_stderr_hidden(hide: bool) -> Iterator[None]:
    """File descriptor 2 to /dev/null for the block: TensorFlow writes C++ log lines there as it is imported and
    finds its devices (oneDNN on, no CUDA driver), before its own log settings apply. A Ray worker's go to Ray's
    log files; a run in this process drops them unless ``--verbose``. Python's exceptions are raised after."""
    if not hide:
        yield
        return
    sys.stderr.flush()
    terminal = os.dup(2)
    silent = os.open(os.devnull, os.O_WRONLY)
    os.dup2(silent, 2)
    os.close(silent)
    try:
        yield
    finally:
        os.dup2(terminal, 2)
        os.close(terminal)


def _start_in_this_process(
    spec: TrainingJobSpec, config: dict[str, Any], verbose: bool
) -> tuple[_InProcessFit, Queue[Any]]:
    """Start the training thread; up to ``runPolicy.workerRestarts`` failures restart it from the last checkpoint,
    as Ray Train restarts a worker group."""
    with _native_stderr_hidden(not verbose):
        from .train_loop import TrainingStopped, find_devices, train_in_this_process  # TensorFlow is imported here

        find_devices()

    events: Queue[Any] = Queue()
    ledger = WorkerGroupLedger()

    def attempts(stop: threading.Event) -> None:
        for attempt in range(spec.run_policy.worker_restarts + 1):
            try:
                train_in_this_process(config, events.put, ledger, stop)
                return
            except TrainingStopped:
                return
            except WorkloadError:
                raise  # the next attempt would fail the same way
            except Exception as err:
                if attempt == spec.run_policy.worker_restarts:
                    raise
                log.warning("training failed (%s); restarting from the last checkpoint", _root_cause(err))

    fit = _InProcessFit(attempts)
    fit.start()
    return fit, events


def _train_under_ray(
    job: TrainingJob,
    spec: TrainingJobSpec,
    config: dict[str, Any],
    sink: ProgressSink,
    verbose: bool,
    working_dir: str | None,
) -> Outcome:
    """Train on Ray Train workers; a worker group that failed (Ray Train's verdict) fails the run."""
    init_ray(spec, verbose, working_dir)

    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer
    from ray.util.queue import Queue as RayQueue

    from .tf_cluster import TensorflowCluster

    queue = RayQueue(actor_options={"num_cpus": 0})
    config = config | {"relay": queue, "ledger": ray.remote(num_cpus=0)(WorkerGroupLedger).remote()}
    gpus = spec.resources.gpus_per_worker
    # Ray's TensorflowTrainer is this trainer with a TensorFlow backend that imports TensorFlow in this process and
    # in the Train controller: TensorflowCluster does the same set-up without it.
    trainer = DataParallelTrainer(
        _worker,
        train_loop_config=config,
        backend_config=TensorflowCluster(),
        scaling_config=ScalingConfig(
            num_workers=spec.resources.workers,
            use_gpu=gpus > 0,
            resources_per_worker={"CPU": spec.resources.cpus_per_worker.cpus, **({"GPU": gpus} if gpus else {})},
        ),
        run_config=RunConfig(
            name=f"{job.metadata.name or 'trainingjob'}-{uuid.uuid4().hex[:8]}",
            storage_path=os.path.join(tempfile.gettempdir(), "trainserve-ray-results"),
            # A failed worker group restarts here, from the last checkpoint, this often; then the attempt fails and
            # the operator's retry (a new Ray cluster) takes over.
            failure_config=FailureConfig(max_failures=spec.run_policy.worker_restarts),
        ),
    )
    fit = _Fit(trainer.fit)
    fit.start()
    try:
        completed, failed = _relay_until_done(fit, queue, sink)
    except KeyboardInterrupt:
        ray.shutdown()  # stops the workers; the checkpoints written so far stay for the next run
        raise
    fit.join()
    if isinstance(fit.error, TrainingFailedError):
        return completed, failed, fit.error
    if fit.error is not None:
        raise fit.error
    return completed, failed, None


def _identity(job: TrainingJob) -> dict[str, Any]:
    """Who the run is, for tracking: the RayJob sets the attempt and uid; locally the state folder counts attempts."""
    attempt = os.environ.get(ATTEMPT_ENV) or (job.status.attempts if job.status else None) or 1
    uid = os.environ.get(JOB_UID_ENV) or job.metadata.uid
    return {"name": job.metadata.name, "namespace": job.metadata.namespace, "attempt": int(attempt), "uid": uid}


def _worker(config: dict[str, Any]) -> None:
    """Runs in each Ray Train worker; TensorFlow is imported there, never in the driver."""
    from .train_loop import train_worker

    train_worker(config)


def absolute_uris(spec: TrainingJobSpec) -> TrainingJobSpec:
    """The spec with relative local paths made absolute: Ray Train runs workers in another directory."""

    def absolute(uri: str, field: str) -> str:
        try:
            return locate(uri).uri
        except ValueError as err:
            raise WorkloadError(field, str(err), "use a local path, file://... or s3://bucket/prefix") from None

    updated = spec.model_copy(deep=True)
    updated.output.uri = absolute(spec.output.uri, "spec.output.uri")
    updated.checkpoint.uri = absolute(spec.checkpoint_uri, "spec.checkpoint.uri")
    if spec.dataset.uri is not None:
        updated.dataset.uri = absolute(spec.dataset.uri, "spec.dataset.uri")
    return updated


def _utcnow() -> Any:
    from datetime import datetime

    return datetime.now(UTC)


def _root_cause(err: BaseException) -> str:
    """One line for the status: the first worker's error, whose last line says what went wrong."""
    failures = list((getattr(err, "worker_failures", None) or {}).values())
    cause: BaseException = failures[0] if failures else err
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    # TensorFlow errors end with graph-node lines and a stack; the sentence that explains is before them.
    noise = ("File ", "[[", "Detected at node", "Graph execution error", "in user code")
    telling = [line for line in lines if not line.startswith(noise) and not line.endswith(":")]
    detail = (telling or lines or [""])[-1]
    name = type(cause).__name__
    return (detail if detail.startswith(name) else f"{name}: {detail}")[:500]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainserve_workloads.train", description=__doc__)
    parser.add_argument("--config", required=True, help="the resolved TrainingJob: inline JSON, or a JSON/YAML file")
    parser.add_argument("--verbose", action="store_true", help="show Ray and TensorFlow logs")
    parser.add_argument(
        "--progress",
        choices=["log", "kubernetes"],
        default="log",
        help="where progress goes: `log` (TRAINSERVE_PROGRESS lines on stdout) or `kubernetes` (also the "
        "TrainingJob's status, named by TRAINSERVE_JOB_NAME/TRAINSERVE_JOB_NAMESPACE)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sink: ProgressSink = JsonLinesSink()
    if args.progress == "kubernetes":
        sink = FanOut([sink, KubernetesStatusSink.from_environment()])
    try:
        model = run(load_config(args.config), sink, verbose=args.verbose)
    except WorkloadError as err:
        log.error("invalid TrainingJob: %s", err)
        sink.emit(ProgressEvent(type="failed", time=_utcnow(), total_epochs=0, reason="InvalidSpec", message=str(err)))
        return 2
    except TrainingFailed as err:
        log.error("training failed: %s", err)
        return 1
    finally:
        sink.close()
    log.info("model version %s written to %s", model.version, model.uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
