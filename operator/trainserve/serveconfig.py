"""The Ray Serve side of a ModelService: the Serve application and deployment options, the environment of the
serving Ray processes, and the deployment names; shared by the operator (``serveConfigV2``), `trainserve local
serve` and the serving application itself, so it imports only pydantic and the standard library.
"""

from __future__ import annotations

from typing import Any

from trainserve.api.base import quantity_bytes
from trainserve.api.serving import ServeAppArgs


def max_ongoing_requests(args: ServeAppArgs) -> int:
    """Room for two full batches per replica: batches fill only if at least a batch can queue."""
    return max(2 * args.batching.max_batch_size, 8)


def max_queued_requests(args: ServeAppArgs) -> int:
    """Waiting room for as many requests as a replica runs: a longer queue only adds latency and memory."""
    return args.overload.max_queued_requests or max_ongoing_requests(args)


def target_ongoing_requests(args: ServeAppArgs) -> float:
    if args.autoscaling is not None and args.autoscaling.target_ongoing_requests is not None:
        return args.autoscaling.target_ongoing_requests
    return float(max(args.batching.max_batch_size // 2, 2))


#: Serve's logging in our replicas: Serve builds an access-log record per request even with access logs off; at
#: level WARNING ``logger.info`` returns at once (docs/performance.md#serving-replica-logging). Warnings still reach the logs.
REPLICA_LOGGING: dict[str, Any] = {"enable_access_log": False, "log_level": "WARNING"}


def deployment_options(args: ServeAppArgs) -> dict[str, Any]:
    """Ray Serve options of the model deployment, in the form of ``serveConfigV2`` deployment entries."""
    resources = args.resources
    actor: dict[str, Any] = {
        "num_cpus": resources.cpus_per_replica.cpus,
        "memory": quantity_bytes(resources.memory_per_replica),
    }
    if resources.gpus_per_replica:
        actor["num_gpus"] = resources.gpus_per_replica
    options: dict[str, Any] = {
        "max_ongoing_requests": max_ongoing_requests(args),
        "max_queued_requests": max_queued_requests(args),
        "backpressure_config": {"status_code": 503, "retry_after_s": args.overload.retry_after_seconds},
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
#: with level ``info``, so HAProxy would send a syslog datagram per request; our target sets level ``notice``
#: and comments the template's level out, keeping HAProxy's own events (docs/performance.md#serving-haproxy-logging).
FAST_INGRESS_ENV: dict[str, str] = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
    "RAY_SERVE_HAPROXY_NBTHREAD": "1",
    "RAY_SERVE_HAPROXY_LOG_TARGET": "127.0.0.1:514 local0 notice #",
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "trainserve_workloads.serve.http_middleware:middlewares",
}


#: The OIP gRPC service the ingress replicas register (tritonclient's generated stubs: KServe's and Triton's
#: ``inference.GRPCInferenceService``, through our module that makes their requests picklable); Serve imports it by
#: name in every process that serves gRPC (ray/serve/config.py, ``gRPCOptions``).
GRPC_SERVICER_FUNCTION = "trainserve_workloads.serve.grpc_stubs.add_GRPCInferenceServiceServicer_to_server"


def grpc_options(args: ServeAppArgs) -> dict[str, Any] | None:
    """Serve's cluster-wide ``grpc_options``: every ingress replica then answers gRPC next to HTTP, and HAProxy
    listens on the port (ray/serve/_private/replica.py, ``_maybe_start_direct_ingress_servers``); None: no gRPC."""
    if args.grpc_port is None:
        return None
    return {"port": args.grpc_port, "grpc_servicer_functions": [GRPC_SERVICER_FUNCTION]}


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
    application: dict[str, Any] = {
        "name": args.model_name,
        "route_prefix": "/",
        "import_path": SERVE_IMPORT_PATH,
        "args": {"maxBodyBytes": args.max_body_bytes},
        "deployments": [
            {"name": MODEL_DEPLOYMENT, **deployment_options(args)},
            {"name": STATS_DEPLOYMENT, "num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
        ],
    }
    if args.runtime_env:
        application["runtime_env"] = dict(args.runtime_env)
    return application
