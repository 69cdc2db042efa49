"""`trainserve local serve`: a ModelService YAML served on a local Ray, on the same fast path as a cluster."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainserve.api.modelservice import ModelRef, ModelService
from trainserve.api.serving import AUTH_TOKEN_ENV, ModelTarget, ServeAppArgs, serve_args
from trainserve.api.storage import VOLUMES_DIR_ENV
from trainserve.api.trainingjob import TrainingJobStatus
from trainserve.localstate import load_job
from trainserve.plans.common import servable_model
from trainserve.serveconfig import FAST_INGRESS_ENV, serve_application

from . import modelstore
from .errors import WorkloadError
from .storage import locate, volumes_root

#: Locally, replicas need not drain for 30 s on shutdown (the cluster default).
LOCAL_ENV = FAST_INGRESS_ENV | {"RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def resolve_model(ref: ModelRef, state_root: Path, field: str) -> ModelTarget:
    """A concrete model version for a `uri` or a local `fromTrainingJob`; WorkloadError when it cannot be served."""
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
    canary = resolve_model(service.spec.canary.model, state_root, "spec.canary.model") if service.spec.canary else None
    return serve_args(service, primary, canary)


@dataclass
class LocalService:
    """A running local application."""

    name: str
    url: str

    def update(self, args: ServeAppArgs) -> None:
        """Apply new arguments: model versions, split and batching change in place (replicas stay)."""
        deploy(args)

    def stop(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()


def start(
    args: ServeAppArgs, *, host: str = "127.0.0.1", port: int = 8000, token: str | None = None, cpus: int | None = None
) -> LocalService:
    """Start a local Ray with the fast ingress and run the application; returns when it is ready."""
    for key, value in LOCAL_ENV.items():
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
    serve.start(http_options={"host": host, "port": port})
    deploy(args)
    return LocalService(args.model_name, f"http://{host}:{port}")


def deploy(args: ServeAppArgs, timeout_s: float = 180) -> None:
    """Deploy through Serve's config path, the one KubeRay's serveConfigV2 takes, and wait until running.

    A config deploy keeps replicas when only ``user_config`` (models, split, batching) or scaling changes;
    redeploying application objects through ``serve.run`` would replace them.
    """
    import time

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
    }
