"""`trainserve local serve`: a ModelService YAML served on a local Ray, on the same fast path as a cluster."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainserve.api.modelservice import ModelRef, ModelService
from trainserve.api.serving import AUTH_TOKEN_ENV, ModelTarget, ServeAppArgs, model_registries, serve_args
from trainserve.api.storage import VOLUMES_DIR_ENV
from trainserve.api.trainingjob import TrainingJobStatus
from trainserve.localstate import load_job
from trainserve.plans.common import servable_model
from trainserve.registry import RegistryError, lookup
from trainserve.serveconfig import FAST_INGRESS_ENV, grpc_options, serve_application

from . import modelstore
from .errors import WorkloadError
from .haproxy_bind import BIND_HOST_ENV, REAL_BINARY_ENV
from .haproxy_routes import wait_until_routed
from .lifecycle import LOOPBACK, free_port, handle_stop_signals, use_loopback_ray
from .serve.loopback import BIND_HOST_ENV as REPLICA_BIND_HOST_ENV
from .storage import locate, volumes_root

#: Locally, replicas need not drain for 30 s on shutdown (the cluster default).
LOCAL_ENV = FAST_INGRESS_ENV | {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
HAPROXY_STATS_PORT_ENV = "RAY_SERVE_HAPROXY_STATS_PORT"
HAPROXY_METRICS_PORT_ENV = "RAY_SERVE_HAPROXY_METRICS_PORT"
#: What :func:`start` pins in its own process for its service (ports, bindings): a child process that starts a
#: service of its own must not inherit them, or two services fight over one port.
PER_SERVICE_ENV = (HAPROXY_STATS_PORT_ENV, HAPROXY_METRICS_PORT_ENV, BIND_HOST_ENV, REPLICA_BIND_HOST_ENV)


def resolve_model(ref: ModelRef, state_root: Path, field: str) -> ModelTarget:
    """A concrete model version for a `uri`, a registered model or a local `fromTrainingJob`; WorkloadError when
    it cannot be served."""
    if ref.uri is not None and ref.registry is not None:
        try:
            registered = lookup(ref.registry.tracking_uri, ref.uri)
        except RegistryError as err:
            raise WorkloadError(f"{field}.uri", err.message, "register the model, or set the alias in MLflow") from None
        return ModelTarget(uri=registered.source, version=registered.version)
    if ref.uri is not None:
        try:
            location, card = modelstore.resolve(ref.uri)
        except (FileNotFoundError, ValueError, OSError) as err:
            raise WorkloadError(f"{field}.uri", str(err), "point `uri` at a model written by a TrainingJob") from None
        return ModelTarget(uri=location.uri, version=card.get("version"))
    assert ref.from_training_job is not None
    name = ref.from_training_job.name
    job = load_job(state_root, name)
    where = f"{field}.fromTrainingJob.name"
    if job is None:
        raise WorkloadError(
            where, f"no local TrainingJob {name!r} in {state_root}", f"run `trainserve local train` for {name} first"
        )
    found = servable_model(name, job.status or TrainingJobStatus(), ref.from_training_job.min_metrics)
    if found.reason == "MetricsBelowThreshold":
        raise WorkloadError(
            f"{field}.fromTrainingJob.minMetrics", found.message, "train a better model, or lower the thresholds"
        )
    if found.model is None or found.model.uri is None:
        raise WorkloadError(where, found.message, "wait for it to finish, or train it: `trainserve local train`")
    return ModelTarget(uri=found.model.uri, version=found.model.version)


def local_args(service: ModelService, state_root: Path) -> ServeAppArgs:
    primary = resolve_model(service.spec.model, state_root, "spec.model")
    canary_ref = service.spec.canary.model if service.spec.canary else None
    canary = resolve_model(canary_ref, state_root, "spec.canary.model") if canary_ref is not None else None
    return serve_args(service, primary, canary)


@dataclass
class LocalService:
    """A running local application."""

    name: str
    url: str
    grpc_address: str | None = None  # host:port of the OIP gRPC service; None: off

    def update(self, args: ServeAppArgs) -> None:
        """Apply new arguments: model versions, split and batching change in place (replicas stay)."""
        deploy(args)

    def stop(self) -> None:
        shutdown_local_ray()


def shutdown_local_ray() -> None:
    """Serve first (its replicas drain, HAProxy stops), then Ray; either may be down already."""
    import ray
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
    ray.shutdown()


class RegistryFollower:
    """Resolves the spec's ``models:/`` URIs again every ``resolveIntervalSeconds`` and rolls the application in
    place when one names another version (an alias moved), as the operator does on a cluster."""

    def __init__(self, service: ModelService, state_root: Path, running: LocalService, args: ServeAppArgs):
        self.service, self.state_root, self.running, self.args = service, state_root, running, args
        self.interval = float(min(r.resolve_interval_seconds for r in model_registries(service)))
        self.next_look = time.monotonic() + self.interval

    def tick(self) -> list[str]:
        """What changed (lines to print); waits for the interval between lookups."""
        if time.monotonic() < self.next_look:
            return []
        self.next_look = time.monotonic() + self.interval
        try:
            wanted = local_args(self.service, self.state_root)
        except WorkloadError as err:
            return [f"Warning: RegistryUnavailable: {err.message} (still serving version {self.args.primary.version})"]
        if wanted == self.args:
            return []
        self.running.update(wanted)
        before, self.args = self.args, wanted
        return [f"Normal: ModelChanged: now serving version {wanted.primary.version} (was {before.primary.version})"]


def serve_until_stopped(
    service: ModelService, running: LocalService, args: ServeAppArgs, state_root: Path | None = None
) -> None:
    """Keep serving (and, with ``canary.autoPromote``, promote as the operator would; with a model registry,
    follow its aliases) until interrupted; ``state_root`` holds the local TrainingJobs whose new versions
    ``rollout: canary`` tries."""
    promoter = None
    if service.spec.canary is not None and service.spec.canary.auto_promote is not None:
        from .local_canary import LocalPromoter

        promoter = LocalPromoter(service, running, args, state_root)
        print("  canary     promoted automatically on healthy figures (as the operator does)")
    follower = None
    if model_registries(service) and state_root is not None and promoter is None:
        follower = RegistryFollower(service, state_root, running, args)
        print(f"  registry   resolved again every {follower.interval:.0f}s")
    while True:
        wait = 3600.0
        if follower is not None:
            for line in follower.tick():
                print(line, flush=True)
            wait = max(0.5, follower.next_look - time.monotonic())
        if promoter is not None:
            events, next_look = promoter.tick()
            for event in events:
                print(f"{event.type}: {event.reason}: {event.message}")
            sys.stdout.flush()
            wait = min(next_look or 5.0, 5.0)
        time.sleep(wait)


def aux_env() -> dict[str, str]:
    """HAProxy's stats and metrics frontends on free loopback ports (Serve's fixed defaults would collide with a
    second local service and listen on every interface), through the binding shim of :mod:`.haproxy_bind`."""
    from .haproxy_bind import real_binary, write_shim

    return {
        REAL_BINARY_ENV: real_binary(),
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(write_shim()),
        BIND_HOST_ENV: LOOPBACK,
        REPLICA_BIND_HOST_ENV: LOOPBACK,
        HAPROXY_STATS_PORT_ENV: str(free_port()),
        HAPROXY_METRICS_PORT_ENV: str(free_port()),
    }


def start(
    args: ServeAppArgs, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, cpus: int | None = None
) -> LocalService:
    """Start a local Ray with the fast ingress and run the application; returns when it is ready.

    Only the serving port listens on ``host``; Ray's own servers and HAProxy's other frontends stay on loopback.
    """
    use_loopback_ray()
    for key, value in (LOCAL_ENV | aux_env()).items():
        os.environ.setdefault(key, value)
    if args.auth_token_env:
        if not token:
            raise WorkloadError(
                "spec.auth.tokenSecretRef",
                "auth is on but no token was given",
                f"pass --token-file FILE or set ${AUTH_TOKEN_ENV}",
            )
        os.environ[args.auth_token_env] = token
    import logging

    import ray
    from ray import serve

    if not ray.is_initialized():
        ray.init(
            num_cpus=cpus or max(os.cpu_count() or 1, 4),
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        handle_stop_signals()  # ours again: Ray's driver installed its own
    # HAProxy's gRPC frontend binds on the HTTP host (ray/serve/_private/haproxy.py, grpc_frontend_host)
    serve.start(http_options={"host": host, "port": port}, grpc_options=grpc_options(args))
    deploy(args)
    protocols = ["http"] + (["grpc"] if args.grpc_port is not None else [])
    try:
        wait_until_routed(int(os.environ[HAPROXY_STATS_PORT_ENV]), args.model_name, protocols)
    except TimeoutError as err:  # Serve has it running: it may still answer, through Serve's own proxy
        print(f"warning: {err}; the first requests may be answered by Serve's proxy", file=sys.stderr)
    grpc_address = f"{host}:{args.grpc_port}" if args.grpc_port is not None else None
    return LocalService(args.model_name, f"http://{host}:{port}", grpc_address)


def deploy(args: ServeAppArgs, timeout_s: float = 180) -> None:
    """Deploy through Serve's config path, the one KubeRay's serveConfigV2 takes, and wait until running.

    A config deploy keeps replicas when only ``user_config`` (models, split, batching) or scaling changes;
    redeploying application objects through ``serve.run`` would replace them.
    """

    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate({"applications": [_local_runtime_env(serve_application(args))]})
    client = _get_global_client()  # raises when no Serve controller runs
    assert client is not None
    client.deploy_apps(config)
    deadline = time.monotonic() + timeout_s
    while True:
        status = serve.status().applications.get(args.model_name)
        if status is not None and status.status == "RUNNING" and _settled(status):
            return
        if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"serving {args.model_name} failed: {status.message}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{args.model_name} not running after {timeout_s:.0f}s: {status}")
        time.sleep(0.2)


def _local_runtime_env(application: dict[str, Any]) -> dict[str, Any]:
    """The application as this machine runs it: replicas resolve ``pvc://`` where this process does, and a local
    ``working_dir`` (a Serve config takes only remote URIs) is packed into Ray's object store first, as
    `serve deploy` does (a ``gcs://`` URI replaces the path)."""
    runtime_env = dict(application.get("runtime_env") or {})
    runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), VOLUMES_DIR_ENV: volumes_root()}
    application = {**application, "runtime_env": runtime_env}
    where = runtime_env.get("working_dir")
    if not where or ("://" in where and not where.startswith(("pvc://", "file://"))):
        return application
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    folder = Path(locate(where).path)
    if not folder.is_dir():
        raise WorkloadError(
            "spec.runtimeEnv.workingDir", f"{folder} is not a folder on this machine", "point it at your code's folder"
        )
    uploaded = upload_working_dir_if_needed({**runtime_env, "working_dir": str(folder)}, include_gitignore=True)
    return {**application, "runtime_env": uploaded}


def _settled(status: Any) -> bool:
    """Every deployment healthy (a reconfigure in progress shows as UPDATING)."""
    return all(d.status == "HEALTHY" for d in status.deployments.values())


def urls(service: LocalService) -> dict[str, Any]:
    base, name = service.url, service.name
    return {
        "KServe v1": f"{base}/v1/models/{name}:predict",
        "OIP v2": f"{base}/v2/models/{name}/infer",
        "metadata": f"{base}/v2/models/{name}",
        "stats": f"{base}/v2/models/{name}/stats",
        "health": f"{base}/v2/health/ready",
    } | ({"OIP gRPC": service.grpc_address} if service.grpc_address else {})
