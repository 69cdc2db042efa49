"""ModelService -> KubeRay ``RayService`` (``ray.io/v1``) and the NetworkPolicy around its pods; pure.

The Serve application is ``trainserve_workloads.serve:app`` with the deployment options written into
``serveConfigV2`` (:func:`trainserve.serveconfig.serve_application`), so KubeRay and Ray's own tooling see
replicas, autoscaling and resources. The head runs Serve's controller and the ingress, no replicas
(``num-cpus: 0``); one worker group holds the replicas, and Ray's in-tree autoscaler adds and removes
worker pods between bounds derived from the replica bounds as Serve scales.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import yaml

from trainserve.api.base import cpu_quantity, quantity_bytes
from trainserve.api.modelservice import ModelService
from trainserve.api.serving import AUTH_TOKEN_ENV, ServeAppArgs, model_registries
from trainserve.api.storage import claim_of
from trainserve.builders.common import auth_options, child_metadata, cluster_runtime_env, placement
from trainserve.builders.raypod import (
    HEAD_CONTAINER,
    HEAD_PORTS,
    METRICS,
    SERVE_PORT,
    WORKER_CONTAINER,
    claim_volumes,
    head_group,
    port,
    ray_container,
    ray_pod,
    volumes_env,
    worker_group,
)
from trainserve.naming import KUEUE_QUEUE_LABEL, service_labels
from trainserve.serveconfig import FAST_INGRESS_ENV, grpc_options, serve_application
from trainserve.settings import OperatorSettings

RAYSERVICE_API_VERSION = "ray.io/v1"
WORKER_GROUP = "serve"
GRPC_PORT_NAME = "grpc"
#: A worker pod's memory over what its replicas reserve: Ray's object store takes 30% of the pod by default.
MEMORY_HEADROOM = 1.5

Object = dict[str, Any]


@dataclass(frozen=True)
class WorkerShape:
    """How serving replicas pack into worker pods, and how many pods the autoscaler may run."""

    replicas_per_pod: int
    cpus: int
    gpus: int
    memory_mib: int
    min_pods: int
    max_pods: int


def worker_shape(args: ServeAppArgs) -> WorkerShape:
    """Whole CPUs and GPUs per pod (Ray's ``--num-cpus`` takes integers); fractional replicas share a pod."""
    res = args.resources
    cpus = res.cpus_per_replica.cpus
    if res.gpus_per_replica:
        per_pod = max(1, math.floor(1 / res.gpus_per_replica)) if res.gpus_per_replica < 1 else 1
    else:
        per_pod = max(1, math.floor(1 / cpus)) if cpus < 1 else 1
    if args.autoscaling is not None:
        low, high = args.autoscaling.min_replicas, args.autoscaling.max_replicas
    else:
        low = high = args.replicas
    memory = per_pod * quantity_bytes(res.memory_per_replica) * MEMORY_HEADROOM
    return WorkerShape(
        replicas_per_pod=per_pod,
        cpus=max(1, math.ceil(per_pod * cpus - 1e-9)),
        gpus=math.ceil(per_pod * res.gpus_per_replica - 1e-9) if res.gpus_per_replica else 0,
        memory_mib=math.ceil(memory / 2**20),
        min_pods=math.ceil(low / per_pod),
        max_pods=max(1, math.ceil(high / per_pod)),
    )


def serve_config(args: ServeAppArgs) -> Object:
    """The Serve config KubeRay deploys (``serveConfigV2``); Ray Serve's ``ServeDeploySchema`` accepts it."""
    application = serve_application(args)
    if "runtime_env" in application:
        application["runtime_env"] = cluster_runtime_env(application["runtime_env"])
    config: Object = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "0.0.0.0", "port": SERVE_PORT},
        "applications": [application],
    }
    grpc = grpc_options(args)
    if grpc is not None:
        config["grpc_options"] = grpc
    return config


def serving_ports(args: ServeAppArgs) -> list[Object]:
    """The ports every Ray pod serves on. KubeRay's Serve Service carries only the one named ``serve``; the head's
    Service carries every head container port, so gRPC is reached there (ray-operator/controllers/ray/common/service.go,
    ``BuildServeService`` and ``getPortsFromCluster``)."""
    grpc = [port(GRPC_PORT_NAME, args.grpc_port)] if args.grpc_port is not None else []
    return [port("serve", SERVE_PORT), *grpc, METRICS]


def claims(args: ServeAppArgs) -> dict[str, bool]:
    """The PersistentVolumeClaims the served models (and code) come from, mounted read-only: serving never writes."""
    uris = [args.primary.uri, args.canary.uri if args.canary else None]
    uris.append((args.runtime_env or {}).get("working_dir"))
    return {claim: True for claim in filter(None, map(claim_of, uris))}


def _serving_env(service: ModelService, args: ServeAppArgs, settings: OperatorSettings) -> list[Object]:
    """Every name set here is in ``MODELSERVICE_ENV``, which `spec.podTemplate` may not use."""
    env: list[Object] = [{"name": "PYTHONUNBUFFERED", "value": "1"}, {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"}]
    if settings.fast_ingress:
        values = FAST_INGRESS_ENV | {"RAY_SERVE_HAPROXY_NBTHREAD": str(settings.haproxy_threads)}
        env += [{"name": key, "value": value} for key, value in sorted(values.items())]
    if service.spec.auth is not None and args.auth_token_env:
        ref = service.spec.auth.token_secret_ref
        env.append(
            {"name": AUTH_TOKEN_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}},
        )
    return env


def build_rayservice(
    service: ModelService, args: ServeAppArgs, settings: OperatorSettings, storage_secret: str | None = None
) -> Object:
    """The RayService that serves ``args`` (models already resolved to locations) for ``service``.

    ``storage_secret``: the Secret with storage credentials (the spec's, or the source TrainingJob's).
    """
    name = service.metadata.name or ""
    image = service.spec.image or settings.image
    res = args.resources
    shape = worker_shape(args)
    volumes, mounts = claim_volumes(claims(args))
    env = _serving_env(service, args, settings) + volumes_env(claims(args))
    labels = service_labels(name)
    metadata = child_metadata(service, name, queue_label(service))
    serve_ports = serving_ports(args)
    head_resources = {"cpu": settings.head_cpu, "memory": settings.head_memory}
    head_ports = [*HEAD_PORTS, *serve_ports]
    head = ray_container(HEAD_CONTAINER, image, env, head_resources, head_ports, storage_secret, mounts)
    worker_resources: Object = {"cpu": cpu_quantity(shape.cpus), "memory": f"{shape.memory_mib}Mi"}
    if shape.gpus:
        worker_resources[res.gpu_resource_name] = str(shape.gpus)
    worker = ray_container(WORKER_CONTAINER, image, env, worker_resources, serve_ports, storage_secret, mounts)
    for container in (head, worker):
        _with_registry_credentials(container, service)
    where = placement(res.node_selector, res.tolerations, res.gpus_per_replica, res.gpu_resource_name)
    spec: Object = {
        "serveConfigV2": yaml.safe_dump(serve_config(args), sort_keys=True, width=10_000),
        "rayClusterConfig": {
            "rayVersion": settings.ray_version,
            **auth_options(settings),
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": {"upscalingMode": "Default", "idleTimeoutSeconds": 60},
            "headGroupSpec": head_group(ray_pod(labels, head, service.spec.pod_template, volumes=volumes)),
            "workerGroupSpecs": [
                worker_group(
                    WORKER_GROUP,
                    ray_pod(labels, worker, service.spec.pod_template, volumes=volumes, **where),
                    replicas=shape.min_pods,
                    min_replicas=shape.min_pods,
                    max_replicas=shape.max_pods,
                    cpus=shape.cpus,
                    gpus=shape.gpus,
                )
            ],
        },
    }
    strategy = upgrade_strategy(service)
    if strategy is not None:
        spec["upgradeStrategy"] = strategy
    return {"apiVersion": RAYSERVICE_API_VERSION, "kind": "RayService", "metadata": metadata, "spec": spec}


def _with_registry_credentials(container: Object, service: ModelService) -> None:
    """The model registry's credentials Secrets as environment variables (by reference: no value is written)."""
    for registry in model_registries(service):
        if registry.credentials_secret_ref is not None:
            entry = {"secretRef": {"name": registry.credentials_secret_ref.name}}
            if entry not in container.setdefault("envFrom", []):
                container["envFrom"].append(entry)


def queue_label(service: ModelService) -> dict[str, str]:
    """Kueue's queue label, as on a TrainingJob's RayJobs. KubeRay copies a RayService's labels to every RayCluster
    it creates for it (``constructRayClusterForRayService``), and Kueue admits RayClusters by that label."""
    queue = service.metadata.labels.get(KUEUE_QUEUE_LABEL)
    return {KUEUE_QUEUE_LABEL: queue} if queue else {}


def upgrade_strategy(service: ModelService) -> Object | None:
    """The RayService's ``upgradeStrategy`` (KubeRay v1.7 ``RayServiceUpgradeStrategy``); None leaves KubeRay's
    default. ``progressDeadlineSeconds`` is the operator's own and stays out."""
    strategy = service.spec.upgrade_strategy
    if strategy is None:
        return None
    out: Object = {"type": strategy.type}
    options = strategy.cluster_upgrade_options
    if options is not None:
        out["clusterUpgradeOptions"] = {
            "gatewayClassName": options.gateway_class_name,
            "stepSizePercent": options.step_size_percent,
            "intervalSeconds": options.interval_seconds,
            "maxSurgePercent": options.max_surge_percent,
        }
    return out
