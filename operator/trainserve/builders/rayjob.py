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

import yaml

from trainserve.api.storage import claim_of
from trainserve.api.trainingjob import TrainingJob
from trainserve.builders.common import (
    auth_options,
    child_metadata,
    cluster_runtime_env,
    container_security,
    placement,
    pod_security,
)
from trainserve.builders.raypod import (
    HEAD_CONTAINER,
    HEAD_PORTS,
    METRICS,
    WORKER_CONTAINER,
    claim_volumes,
    head_group,
    ray_container,
    ray_pod,
    volumes_env,
    worker_group,
)
from trainserve.naming import (
    ATTEMPT_ENV,
    ATTEMPT_LABEL,
    JOB_UID_ENV,
    KUEUE_QUEUE_LABEL,
    SPEC_HASH_ANNOTATION,
    child_labels,
    job_account_name,
    rayjob_name,
)
from trainserve.settings import OperatorSettings

RAYJOB_API_VERSION = "ray.io/v1"
ENTRYPOINT_MODULE = "trainserve_workloads.train"
#: Environment variables the workload's Kubernetes progress sink reads (see trainserve_workloads.progress);
#: every name :func:`_env` sets is in ``TRAININGJOB_ENV``, which `spec.podTemplate` may not use.
JOB_NAME_ENV = "TRAINSERVE_JOB_NAME"
JOB_NAMESPACE_ENV = "TRAINSERVE_JOB_NAMESPACE"

Object = dict[str, Any]


def resolved_config(job: TrainingJob) -> Object:
    """The document the workload receives: the TrainingJob with every default filled in, without status.

    ``checkpoint.uri`` is written out, so every attempt (and a human reading the RayJob) sees the same location.
    """
    spec = job.spec.model_copy(deep=True)
    spec.checkpoint.uri = job.spec.checkpoint_uri
    spec.pod_template = None  # the pods', not the workload's (and it would only lengthen the entrypoint)
    named = (("name", job.metadata.name), ("namespace", job.metadata.namespace), ("uid", job.metadata.uid))
    metadata = {k: v for k, v in named if v}  # the uid goes into the model card's lineage
    return {
        "apiVersion": job.api_version,
        "kind": job.kind,
        "metadata": metadata,
        "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


#: Sections of the spec that may not change while the job exists (a CEL rule refuses it in the CRD, too).
#: RayJobs written before a section was added here carry no digest of it, which counts as unchanged.
IMMUTABLE_SECTIONS = ("model", "dataset", "training", "resources", "podTemplate")


def section_hashes(job: TrainingJob) -> dict[str, str]:
    """A digest per immutable section, stored on each RayJob so a change can be named by its field path."""
    spec = job.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {
        key: hashlib.sha256(json.dumps(spec.get(key), sort_keys=True).encode()).hexdigest()[:12]
        for key in IMMUTABLE_SECTIONS
    }


def entrypoint(job: TrainingJob) -> str:
    """The shell command the RayJob submits: the workload with the resolved spec, shell-quoted."""
    config = json.dumps(resolved_config(job), sort_keys=True, separators=(",", ":"))
    return f"python -m {ENTRYPOINT_MODULE} --progress kubernetes --config {shlex.quote(config)}"


def _env(job: TrainingJob, attempt: int) -> list[Object]:
    """The job's identity for the progress channel and tracking, and the workload's interpreter settings."""
    return [
        {"name": JOB_NAME_ENV, "value": job.metadata.name or ""},
        {"name": JOB_NAMESPACE_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": ATTEMPT_ENV, "value": str(attempt)},
        {"name": JOB_UID_ENV, "value": job.metadata.uid or ""},
        {"name": "TF_USE_LEGACY_KERAS", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]


def claims(job: TrainingJob) -> dict[str, bool]:
    """The PersistentVolumeClaims the job reads or writes (``pvc://`` URIs), all mounted read-write: the driver
    on the head checks the output is writable and reads the data, the workers train and write."""
    spec = job.spec
    uris = [spec.dataset.uri, spec.output.uri, spec.checkpoint_uri]
    uris.append(spec.runtime_env.working_dir if spec.runtime_env is not None else None)
    return {claim: False for claim in filter(None, map(claim_of, uris))}


def _with_tracking_credentials(container: Object, job: TrainingJob) -> Object:
    """The MLflow credentials Secret's keys as environment variables (by reference: no value is written here)."""
    mlflow = job.spec.tracking.mlflow if job.spec.tracking is not None else None
    if mlflow is not None and mlflow.credentials_secret_ref is not None:
        container.setdefault("envFrom", []).append({"secretRef": {"name": mlflow.credentials_secret_ref.name}})
    return container


def _head_group(job: TrainingJob, settings: OperatorSettings, image: str, attempt: int) -> Object:
    name = job.metadata.name or ""
    secret = job.spec.storage_secret_ref.name if job.spec.storage_secret_ref else None
    resources = {"cpu": settings.head_cpu, "memory": settings.head_memory}
    volumes, mounts = claim_volumes(claims(job))
    env = _env(job, attempt) + volumes_env(claims(job))
    container = ray_container(HEAD_CONTAINER, image, env, resources, [*HEAD_PORTS, METRICS], secret, mounts)
    container = _with_tracking_credentials(container, job)
    # The driver runs here and reports progress with this account's token (its own status only); a template's
    # serviceAccountName replaces it (and gets the status Role, see builders.rbac).
    template = job.spec.pod_template
    return head_group(
        ray_pod(child_labels(name), container, template, service_account=job_account_name(name), volumes=volumes)
    )


def _worker_group(job: TrainingJob, image: str, attempt: int) -> Object:
    res = job.spec.resources
    secret = job.spec.storage_secret_ref.name if job.spec.storage_secret_ref else None
    amounts: Object = {"cpu": res.cpus_per_worker.quantity, "memory": res.memory_per_worker}
    if res.gpus_per_worker:
        amounts[res.gpu_resource_name] = str(res.gpus_per_worker)
    volumes, mounts = claim_volumes(claims(job))
    env = _env(job, attempt) + volumes_env(claims(job))
    container = ray_container(WORKER_CONTAINER, image, env, amounts, [METRICS], secret, mounts)
    container = _with_tracking_credentials(container, job)
    where = placement(res.node_selector, res.tolerations, res.gpus_per_worker, res.gpu_resource_name)
    return worker_group(
        "trainers",
        ray_pod(child_labels(job.metadata.name or ""), container, job.spec.pod_template, volumes=volumes, **where),
        replicas=res.workers,
        min_replicas=res.workers,
        max_replicas=res.workers,
        cpus=max(1, math.ceil(res.cpus_per_worker.cpus)),
        gpus=res.gpus_per_worker,
    )


#: The container KubeRay runs ``ray job submit`` in (its own default's name, size and image: the head's).
SUBMITTER_CONTAINER = "ray-job-submitter"
SUBMITTER_RESOURCES = {"requests": {"cpu": "500m", "memory": "200Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}


def submitter_template(job_name: str, image: str) -> Object:
    """KubeRay's submitter pod as its default (``common/job.go`` ``GetDefaultSubmitterContainer``), plus the job's
    labels, so the job's NetworkPolicy lets it reach the dashboard, and the restricted security context; KubeRay
    adds the command and the token (``configureSubmitterContainer``)."""
    container = {
        "name": SUBMITTER_CONTAINER,
        "image": image,
        "resources": SUBMITTER_RESOURCES,
        "securityContext": container_security(),
    }
    spec = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security(),
        "containers": [container],
    }
    return {"metadata": {"labels": child_labels(job_name)}, "spec": spec}


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
        "submitterPodTemplate": submitter_template(name, image),
        "rayClusterSpec": {
            "rayVersion": settings.ray_version,
            **auth_options(settings),
            "headGroupSpec": _head_group(job, settings, image, attempt),
            "workerGroupSpecs": [_worker_group(job, image, attempt)],
        },
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = max(1, deadline)
    if job.spec.runtime_env is not None:
        # KubeRay's submitter passes it to the Jobs API: the driver and every worker run in it.
        spec["runtimeEnvYAML"] = yaml.safe_dump(cluster_runtime_env(job.spec.runtime_env.to_ray()), sort_keys=True)
    return {"apiVersion": RAYJOB_API_VERSION, "kind": "RayJob", "metadata": metadata, "spec": spec}
