"""TrainingJob -> KubeRay ``RayJob`` (``ray.io/v1``) with an embedded Ray cluster; pure.

The head pod runs the driver (``python -m trainserve_workloads.train``) and no training (``num-cpus: 0``); one
worker group holds ``resources.workers`` pods, each one Ray Train worker. Every attempt gets its own RayJob
(``<name>-<attempt>``) with the same checkpoint location, so a retry resumes where the last one stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import shlex
from typing import Any

from trainserve.api.trainingjob import TrainingJob
from trainserve.builders.common import (
    child_metadata,
    container_security,
    cpu_quantity,
    placement,
    pod_security,
    shm_mount,
    shm_volume,
)
from trainserve.naming import (
    ATTEMPT_LABEL,
    KUEUE_QUEUE_LABEL,
    SPEC_HASH_ANNOTATION,
    child_labels,
    job_account_name,
    rayjob_name,
)
from trainserve.settings import OperatorSettings

RAYJOB_API_VERSION = "ray.io/v1"
ENTRYPOINT_MODULE = "trainserve_workloads.train"
#: Environment variables the workload's Kubernetes progress sink reads (see trainserve_workloads.progress).
JOB_NAME_ENV = "TRAINSERVE_JOB_NAME"
JOB_NAMESPACE_ENV = "TRAINSERVE_JOB_NAMESPACE"

Object = dict[str, Any]


def resolved_config(job: TrainingJob) -> Object:
    """The document the workload receives: the TrainingJob with every default filled in, without status.

    ``checkpoint.uri`` is written out, so every attempt (and a human reading the RayJob) sees the same location.
    """
    spec = job.spec.model_copy(deep=True)
    spec.checkpoint.uri = job.spec.checkpoint_uri
    metadata = {k: v for k, v in (("name", job.metadata.name), ("namespace", job.metadata.namespace)) if v}
    return {
        "apiVersion": job.api_version,
        "kind": job.kind,
        "metadata": metadata,
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


#: Sections of the spec that may not change while the job exists (a CEL rule refuses it in the CRD, too).
IMMUTABLE_SECTIONS = ("model", "dataset", "training", "resources")


def section_hashes(job: TrainingJob) -> dict[str, str]:
    """A digest per immutable section, stored on each RayJob so a change can be named by its field path."""
    spec = job.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {
        key: hashlib.sha256(json.dumps(spec[key], sort_keys=True).encode()).hexdigest()[:12]
        for key in IMMUTABLE_SECTIONS
    }


def entrypoint(job: TrainingJob) -> str:
    """The shell command the RayJob submits: the workload with the resolved spec, shell-quoted."""
    config = json.dumps(resolved_config(job), sort_keys=True, separators=(",", ":"))
    return f"python -m {ENTRYPOINT_MODULE} --progress kubernetes --config {shlex.quote(config)}"


def _env(job: TrainingJob) -> tuple[list[Object], list[Object]]:
    """(env, envFrom): the job's identity, and the storage Secret's keys as variables (never their values)."""
    env: list[Object] = [
        {"name": JOB_NAME_ENV, "value": job.metadata.name or ""},
        {"name": JOB_NAMESPACE_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "TF_USE_LEGACY_KERAS", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    secret = job.spec.storage_secret_ref
    env_from: list[Object] = [{"secretRef": {"name": secret.name}}] if secret else []
    return env, env_from


def _head_template(job: TrainingJob, settings: OperatorSettings, image: str) -> Object:
    env, env_from = _env(job)
    resources = {"cpu": settings.head_cpu, "memory": settings.head_memory}
    container: Object = {
        "name": "ray-head",
        "image": image,
        "env": env,
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "ports": [
            {"name": "gcs", "containerPort": 6379},
            {"name": "dashboard", "containerPort": 8265},
            {"name": "client", "containerPort": 10001},
            {"name": "metrics", "containerPort": 8080},
        ],
        "volumeMounts": [shm_mount()],
        "securityContext": container_security(),
    }
    if env_from:
        container["envFrom"] = env_from
    return {
        "metadata": {"labels": child_labels(job.metadata.name or "")},
        "spec": {
            # The driver runs here and reports progress with this account's token (its own status only).
            "serviceAccountName": job_account_name(job.metadata.name or ""),
            "automountServiceAccountToken": True,
            "securityContext": pod_security(),
            "containers": [container],
            "volumes": [shm_volume()],
        },
    }


def _worker_template(job: TrainingJob, image: str) -> Object:
    res = job.spec.resources
    env, env_from = _env(job)
    amounts: Object = {"cpu": cpu_quantity(res.cpus_per_worker), "memory": res.memory_per_worker}
    if res.gpus_per_worker:
        amounts[res.gpu_resource_name] = str(res.gpus_per_worker)
    container: Object = {
        "name": "ray-worker",
        "image": image,
        "env": env,
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
        "ports": [{"name": "metrics", "containerPort": 8080}],
        "volumeMounts": [shm_mount()],
        "securityContext": container_security(),
    }
    if env_from:
        container["envFrom"] = env_from
    spec: Object = {
        "automountServiceAccountToken": False,  # workers never talk to the Kubernetes API
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": [shm_volume()],
        **placement(res.node_selector, res.tolerations, res.gpus_per_worker, res.gpu_resource_name),
    }
    return {"metadata": {"labels": child_labels(job.metadata.name or "")}, "spec": spec}


def build_rayjob(
    job: TrainingJob,
    settings: OperatorSettings,
    *,
    attempt: int = 1,
    deadline_seconds: int | None = None,
    suspend: bool | None = None,
) -> Object:
    """The RayJob of ``attempt``.

    ``deadline_seconds``: what is left of ``runPolicy.activeDeadlineSeconds`` for this attempt (default: all
    of it), so KubeRay enforces the deadline even while the operator is down. ``suspend``: the RayJob's
    ``spec.suspend`` (default ``runPolicy.suspend``).
    """
    name = job.metadata.name or ""
    res = job.spec.resources
    image = job.spec.image or settings.image
    labels = {ATTEMPT_LABEL: str(attempt)}
    queue = job.metadata.labels.get(KUEUE_QUEUE_LABEL)
    if queue:
        labels[KUEUE_QUEUE_LABEL] = queue
    metadata = child_metadata(job, rayjob_name(name, attempt), labels)
    metadata["annotations"] = {SPEC_HASH_ANNOTATION: json.dumps(section_hashes(job), sort_keys=True)}
    deadline = deadline_seconds if deadline_seconds is not None else job.spec.run_policy.active_deadline_seconds
    spec: Object = {
        "entrypoint": entrypoint(job),
        "shutdownAfterJobFinishes": True,
        "suspend": job.spec.run_policy.suspend if suspend is None else suspend,
        "rayClusterSpec": {
            "rayVersion": settings.ray_version,
            "headGroupSpec": {
                "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0", "metrics-export-port": "8080"},
                "template": _head_template(job, settings, image),
            },
            "workerGroupSpecs": [
                {
                    "groupName": "trainers",
                    "replicas": res.workers,
                    "minReplicas": res.workers,
                    "maxReplicas": res.workers,
                    "rayStartParams": {
                        "num-cpus": str(max(1, math.ceil(res.cpus_per_worker))),
                        "num-gpus": str(res.gpus_per_worker),
                        "metrics-export-port": "8080",
                    },
                    "template": _worker_template(job, image),
                }
            ],
        },
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = max(1, deadline)
    return {"apiVersion": RAYJOB_API_VERSION, "kind": "RayJob", "metadata": metadata, "spec": spec}
