"""Pieces every generated object shares: child metadata with owner references, pod security, GPU placement."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainserve.api.base import Toleration
from trainserve.api.modelservice import ModelService
from trainserve.api.podtemplate import SHM_PATH, SHM_VOLUME
from trainserve.api.storage import claim_of, mounted_path
from trainserve.api.trainingjob import TrainingJob
from trainserve.naming import owner_labels

if TYPE_CHECKING:  # settings import the ports of builders.raypod, which imports this module
    from trainserve.settings import OperatorSettings

Object = dict[str, Any]
Owner = TrainingJob | ModelService

RAY_UID = 1000  # the `ray` user of the rayproject images
RAY_GID = 100


def owner_reference(owner: Owner) -> Object:
    return {
        "apiVersion": owner.api_version,
        "kind": owner.kind,
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(owner: Owner, name: str, labels: dict[str, str] | None = None) -> Object:
    """Metadata of a child: labels that find it, and an owner reference so deleting the owner deletes it."""
    metadata: Object = {
        "name": name,
        "labels": {**owner_labels(owner.kind, owner.metadata.name or ""), **(labels or {})},
    }
    if owner.metadata.namespace:
        metadata["namespace"] = owner.metadata.namespace
    if owner.metadata.uid:  # absent when rendering a file that is not in a cluster yet
        metadata["ownerReferences"] = [owner_reference(owner)]
    return metadata


def container_security() -> Object:
    """The "restricted" Pod Security Standard, container part."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> Object:
    return {
        "runAsNonRoot": True,
        "runAsUser": RAY_UID,
        "runAsGroup": RAY_GID,
        "fsGroup": RAY_GID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def shm_volume() -> Object:
    """``/dev/shm`` in memory: the Ray object store and TensorFlow's collectives use it."""
    return {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory"}}


def shm_mount() -> Object:
    return {"name": SHM_VOLUME, "mountPath": SHM_PATH}


def placement(node_selector: dict[str, str], tolerations: list[Toleration], gpus: float, gpu_resource: str) -> Object:
    """``nodeSelector`` and ``tolerations`` of a pod spec; GPU pods tolerate the GPU taint by default."""
    out: Object = {}
    wire = [t.to_wire() for t in tolerations]
    if gpus:
        gpu = {"key": gpu_resource, "operator": "Exists", "effect": "NoSchedule"}
        if gpu not in wire:
            wire.append(gpu)
    if node_selector:
        out["nodeSelector"] = dict(node_selector)
    if wire:
        out["tolerations"] = wire
    return out


def cluster_runtime_env(runtime_env: Object) -> Object:
    """Ray's ``runtime_env`` as the cluster needs it: a ``pvc://`` working directory is already on every Ray pod
    (mounted), so it goes on ``PYTHONPATH`` rather than to Ray's uploader, which would look for it on the
    machine that submits the job."""
    where = runtime_env.get("working_dir")
    if not where or claim_of(where) is None:
        return runtime_env
    out = {key: value for key, value in runtime_env.items() if key != "working_dir"}
    out["env_vars"] = {**runtime_env.get("env_vars", {}), "PYTHONPATH": mounted_path(where)}
    return out


def auth_options(settings: OperatorSettings) -> Object:
    """The Ray cluster spec's ``authOptions``: Ray token authentication, unless the settings opt out.

    Without ``secretName`` KubeRay generates a random token per RayCluster in a Secret of the cluster's name (key
    ``auth_token``), sets ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN`` (from that Secret) on every Ray container
    and on its job submitter, and its own dashboard client sends the token (KubeRay v1.7.0:
    ``raycluster_controller.go`` ``reconcileAuthSecret``, ``common/pod.go`` ``SetContainerTokenAuthEnvVars``,
    ``utils/util.go`` ``GetRayDashboardClientFunc``). trainserve never sees the token.
    """
    return {"authOptions": {"mode": "token"}} if settings.ray_auth else {}
