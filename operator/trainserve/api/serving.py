"""The contract between a ModelService and the serving application: the resolved application arguments.

The operator (into the RayService's ``serveConfigV2``) and `trainserve local serve` build the same
:class:`ServeAppArgs`; the Ray Serve application ``trainserve_workloads.serve:app`` reads only this.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from .base import ApiModel
from .modelservice import AutoscalingSpec, BatchingSpec, ModelRuntime, ModelService, ServingResources

#: Environment variable that carries the bearer token into the serving replicas.
AUTH_TOKEN_ENV = "TRAINSERVE_AUTH_TOKEN"
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_FACTORS = {
    None: 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def quantity_bytes(quantity: str) -> int:
    """``"2Gi"`` -> 2147483648."""
    match = _QUANTITY.match(quantity)
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    return int(float(match.group(1)) * _FACTORS[match.group(2)])


class ModelTarget(ApiModel):
    """One model version to load: a version folder, or an output folder (its newest version)."""

    uri: str = Field(min_length=1, description="Model location.")
    version: int | None = Field(None, description="Version number, when known before loading.")


class CanaryTarget(ModelTarget):
    traffic_percent: int = Field(ge=0, le=100, description="Share of requests the canary answers.")


class ServeAppArgs(ApiModel):
    """Everything the serving application needs, fully resolved."""

    model_name: str = Field(description="Name in the inference URLs.")
    primary: ModelTarget = Field(description="The model answering most requests.")
    canary: CanaryTarget | None = Field(None, description="A second version taking a share of traffic.")
    batching: BatchingSpec = Field(default_factory=BatchingSpec, description="Dynamic batching.")
    runtime: ModelRuntime = Field("auto", description="How replicas run the model: `auto` or `tensorflow`.")
    replicas: int = Field(1, ge=0, description="Fixed replicas when `autoscaling` is unset.")
    autoscaling: AutoscalingSpec | None = Field(None, description="Serve autoscaling.")
    resources: ServingResources = Field(default_factory=ServingResources, description="Per-replica resources.")
    auth_token_env: str | None = Field(
        None, description="Environment variable holding the bearer token; unset: no auth."
    )
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, ge=1024, description="Largest request body accepted.")

    def dynamic_config(self) -> dict[str, Any]:
        """What replicas apply in place on a change (Serve ``user_config``): models, split, batching, runtime, auth."""
        return self.model_dump(
            mode="json",
            by_alias=True,
            include={"model_name", "primary", "canary", "batching", "runtime", "auth_token_env"},
        )


def metric_shortfalls(metrics: dict[str, float], minimum: dict[str, float]) -> list[str]:
    """Each threshold a model's metrics miss, as ``name value < threshold`` (a missing metric misses)."""
    misses = []
    for name, threshold in sorted(minimum.items()):
        value = metrics.get(name)
        if value is None:
            misses.append(f"{name} missing (needs >= {threshold})")
        elif value < threshold:
            misses.append(f"{name} {value:.4g} < {threshold}")
    return misses


def serve_args(
    service: ModelService, primary: ModelTarget, canary: ModelTarget | None, canary_percent: int | None = None
) -> ServeAppArgs:
    """The application arguments for a ModelService whose models are resolved to concrete locations.

    ``canary_percent``: the canary's current share (automatic promotion moves it); default the spec's.
    """
    spec = service.spec
    canary_target = None
    if canary is not None and spec.canary is not None:
        share = spec.canary.traffic_percent if canary_percent is None else canary_percent
        canary_target = CanaryTarget(uri=canary.uri, version=canary.version, traffic_percent=share)
    return ServeAppArgs(
        model_name=spec.model_name or service.metadata.name or "model",
        primary=primary,
        canary=canary_target,
        batching=spec.batching,
        runtime=spec.runtime,
        replicas=spec.replicas,
        autoscaling=spec.autoscaling,
        resources=spec.resources,
        auth_token_env=AUTH_TOKEN_ENV if spec.auth is not None else None,
    )


def max_ongoing_requests(args: ServeAppArgs) -> int:
    """Room for two full batches per replica: batches fill only if at least a batch can queue."""
    return max(2 * args.batching.max_batch_size, 8)


def target_ongoing_requests(args: ServeAppArgs) -> float:
    if args.autoscaling is not None and args.autoscaling.target_ongoing_requests is not None:
        return args.autoscaling.target_ongoing_requests
    return float(max(args.batching.max_batch_size // 2, 2))


#: Serve's logging in our replicas. Serve builds an access-log record for every request and filters it out only
#: afterwards when access logs are off (about 7% of the event loop under load, from a py-spy profile at c=32);
#: at level WARNING ``logger.info`` returns at once. Serve's warnings and errors still reach the replica logs.
REPLICA_LOGGING: dict[str, Any] = {"enable_access_log": False, "log_level": "WARNING"}


def deployment_options(args: ServeAppArgs) -> dict[str, Any]:
    """Ray Serve options of the model deployment, in the form of ``serveConfigV2`` deployment entries."""
    resources = args.resources
    actor: dict[str, Any] = {
        "num_cpus": resources.cpus_per_replica,
        "memory": quantity_bytes(resources.memory_per_replica),
    }
    if resources.gpus_per_replica:
        actor["num_gpus"] = resources.gpus_per_replica
    options: dict[str, Any] = {
        "max_ongoing_requests": max_ongoing_requests(args),
        "ray_actor_options": actor,
        "user_config": args.dynamic_config(),
        "logging_config": dict(REPLICA_LOGGING),
    }
    if args.autoscaling is not None:
        scaling = args.autoscaling
        options["autoscaling_config"] = {
            "min_replicas": scaling.min_replicas,
            "initial_replicas": max(scaling.min_replicas, 1),
            "max_replicas": scaling.max_replicas,
            "target_ongoing_requests": target_ongoing_requests(args),
            "upscale_delay_s": scaling.upscale_delay_seconds,
            "downscale_delay_s": scaling.downscale_delay_seconds,
        }
    else:
        options["num_replicas"] = args.replicas
    return options


#: Environment of the Ray processes that serve: the throughput-optimized path (direct ingress to replicas behind
#: HAProxy on the usual port, user code and router on the main loop), with HAProxy's own metrics off and one
#: thread (size it to the node on a cluster), our middleware on Serve's HTTP servers (it lets Serve await the
#: handler directly; see its module), and no access log from HAProxy: Serve's template ends its ``log`` line
#: with level ``info``, so HAProxy formats and sends a syslog datagram per request (to 127.0.0.1:514, where
#: nothing listens in a Ray pod); our target sets level ``notice`` and comments the template's level out, which
#: keeps HAProxy's own events and cuts its CPU per request from 57 to 46-50 us (measured).
FAST_INGRESS_ENV: dict[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    "RAY_SERVE_HAPROXY_NBTHREAD": "1",
    "RAY_SERVE_HAPROXY_LOG_TARGET": "127.0.0.1:514 local0 notice #",
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "trainserve_workloads.serve.http_middleware:middlewares",
}


SERVE_IMPORT_PATH = "trainserve_workloads.serve:app"
MODEL_DEPLOYMENT = "ModelServer"
STATS_DEPLOYMENT = "StatsCollector"


def serve_application(args: ServeAppArgs) -> dict[str, Any]:
    """One application of a Serve config (``serveConfigV2`` in KubeRay): import path, args, deployments.

    Serve restarts every replica when an application's ``args`` change (they are part of its code
    version), so ``args`` hold only what needs new replicas anyway; the models, the canary split and
    batching travel in the model deployment's ``user_config`` and are applied in place by ``reconfigure``,
    and scaling and resources in the deployment entries, where KubeRay and Ray's tooling see them.
    """
    return {
        "name": args.model_name,
        "route_prefix": "/",
        "import_path": SERVE_IMPORT_PATH,
        "args": {"maxBodyBytes": args.max_body_bytes},
        "deployments": [
            {"name": MODEL_DEPLOYMENT, **deployment_options(args)},
            {"name": STATS_DEPLOYMENT, "num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
        ],
    }
