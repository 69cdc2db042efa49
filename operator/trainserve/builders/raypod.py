"""Every Ray pod the operator writes, built once: the Ray container, the pod, the head group and a worker group.

Each kind adds only what differs (environment, ServiceAccount, ports it serves, placement, sizes); volumes,
environment and pod overrides that every Ray pod needs belong here, so they land in one place. That includes the
user's `spec.podTemplate`, merged by :func:`apply_pod_template` (the merge rules are written there).
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

from trainserve.api.podtemplate import OWN_VOLUME_PREFIX, PodTemplate
from trainserve.api.storage import CLUSTER_VOLUMES_DIR, VOLUMES_DIR_ENV
from trainserve.builders.common import container_security, pod_security, shm_mount, shm_volume

Object = dict[str, Any]

GCS_PORT = 6379
DASHBOARD_PORT = 8265
CLIENT_PORT = 10001
#: Ray's metrics export port (``--metrics-export-port``) on every Ray pod, scraped by Prometheus.
METRICS_PORT = 8080
SERVE_PORT = 8000
#: The dashboard agent's HTTP port (Ray's default), which KubeRay polls for Serve status.
DASHBOARD_AGENT_PORT = 52365

HEAD_CONTAINER = "ray-head"
WORKER_CONTAINER = "ray-worker"


def port(name: str, number: int) -> Object:
    return {"name": name, "containerPort": number}


#: The head's own ports: GCS, the dashboard (Jobs and Serve REST APIs) and the Ray client.
HEAD_PORTS = (port("gcs", GCS_PORT), port("dashboard", DASHBOARD_PORT), port("client", CLIENT_PORT))
METRICS = port("metrics", METRICS_PORT)


def claim_volume_name(claim: str) -> str:
    """A pod volume name (a DNS label) for a claim name (a DNS subdomain, dots allowed)."""
    name = f"{OWN_VOLUME_PREFIX}{claim.replace('.', '-')}"
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(claim.encode()).hexdigest()[:10]
    return f"{OWN_VOLUME_PREFIX}{claim[:40].replace('.', '-').rstrip('-')}-{digest}"


def claim_volumes(claims: dict[str, bool]) -> tuple[list[Object], list[Object]]:
    """Pod volumes and container mounts for PersistentVolumeClaims (claim -> read-only), each mounted at
    ``CLUSTER_VOLUMES_DIR/CLAIM``, where the workloads resolve ``pvc://CLAIM/PATH``."""
    volumes, mounts = [], []
    for claim, read_only in sorted(claims.items()):
        name = claim_volume_name(claim)
        volumes.append({"name": name, "persistentVolumeClaim": {"claimName": claim, "readOnly": read_only}})
        mounts.append({"name": name, "mountPath": f"{CLUSTER_VOLUMES_DIR}/{claim}", "readOnly": read_only})
    return volumes, mounts


def volumes_env(claims: dict[str, bool]) -> list[Object]:
    """Tells the workloads where the claims are mounted (only pods with claims need it)."""
    return [{"name": VOLUMES_DIR_ENV, "value": CLUSTER_VOLUMES_DIR}] if claims else []


def ray_container(
    name: str,
    image: str,
    env: list[Object],
    resources: Object,
    ports: list[Object],
    storage_secret: str | None = None,
    volume_mounts: list[Object] | None = None,
) -> Object:
    """A Ray container: requests equal limits (Guaranteed QoS), ``/dev/shm`` in memory, restricted security;
    ``storage_secret``'s keys become environment variables (their values are never written here)."""
    container: Object = {
        "name": name,
        "image": image,
        "env": env,
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "ports": ports,
        "volumeMounts": [shm_mount(), *(volume_mounts or [])],
        "securityContext": container_security(),
    }
    if storage_secret:
        container["envFrom"] = [{"secretRef": {"name": storage_secret}}]
    return container


def ray_pod(
    labels: dict[str, str],
    container: Object,
    template: PodTemplate | None = None,
    service_account: str | None = None,
    volumes: list[Object] | None = None,
    **spec: Any,
) -> Object:
    """A Ray pod template with the user's ``template`` merged in; only a pod with a ServiceAccount (given as
    ``service_account``, or the template's) gets an API token (the others never call the Kubernetes API).
    ``volumes`` adds pod volumes (the claims), ``spec`` pod fields such as ``nodeSelector`` and ``tolerations``."""
    pod: Object = {}
    if service_account:
        pod["serviceAccountName"] = service_account
    pod |= {
        "automountServiceAccountToken": bool(service_account),
        "securityContext": pod_security(),
        "containers": [container],
        "volumes": [shm_volume(), *(volumes or [])],
        **spec,
    }
    built = {"metadata": {"labels": dict(labels)}, "spec": pod}
    return apply_pod_template(built, template) if template is not None else built


#: Pod fields a template sets as they are (trainserve sets none of them).
_TEMPLATE_AS_GIVEN = ("priorityClassName", "runtimeClassName", "schedulerName", "affinity", "topologySpreadConstraints")


def apply_pod_template(pod_template: Object, template: PodTemplate) -> Object:
    """``pod_template`` (one of ours) with the user's ``spec.podTemplate`` merged in; the one place of the rules:

    - labels and annotations are added (our label keys cannot be used: the API refuses them);
    - ``volumes``, ``imagePullSecrets`` (by ``name``), the Ray container's ``env`` (by ``name``) and
      ``volumeMounts`` (by ``mountPath``) are ours followed by the user's; ``envFrom`` entries follow ours
      (an exact repeat of ours is left out). A user entry with the key of one of ours is refused by the API
      (``trainserve.api.podtemplate``); should one get here all the same, this raises rather than override;
    - ``serviceAccountName`` replaces ours (a TrainingJob's head account) or is set, and a pod with an account
      mounts its token (workload identity and the progress channel use it);
    - ``priorityClassName``, ``runtimeClassName``, ``schedulerName``, ``affinity`` and
      ``topologySpreadConstraints`` are set as given (trainserve sets none of them);
    - the security contexts are ours alone: the template has no field for them.
    """
    out = copy.deepcopy(pod_template)
    user = template.to_wire()
    metadata, spec = user.get("metadata", {}), user.get("spec", {})
    out["metadata"]["labels"] = {**metadata.get("labels", {}), **out["metadata"]["labels"]}
    if metadata.get("annotations"):
        out["metadata"]["annotations"] = {**metadata["annotations"], **out["metadata"].get("annotations", {})}
    pod = out["spec"]
    if spec.get("serviceAccountName"):
        pod["serviceAccountName"] = spec["serviceAccountName"]
        pod["automountServiceAccountToken"] = True
    for key in _TEMPLATE_AS_GIVEN:
        if spec.get(key):
            pod[key] = spec[key]
    for key in ("imagePullSecrets", "volumes"):
        if spec.get(key):
            pod[key] = merged(pod.get(key, []), spec[key], "name", f"spec.{key}")
    for additions in spec.get("containers", []):
        container = pod["containers"][0]
        if additions.get("env"):
            container["env"] = merged(container.get("env", []), additions["env"], "name", "env")
        if additions.get("volumeMounts"):
            mounts = merged(container.get("volumeMounts", []), additions["volumeMounts"], "mountPath", "volumeMounts")
            container["volumeMounts"] = mounts
        if additions.get("envFrom"):
            ours = container.get("envFrom", [])
            container["envFrom"] = ours + [entry for entry in additions["envFrom"] if entry not in ours]
    return out


def merged(ours: list[Object], theirs: list[Object], key: str, field: str) -> list[Object]:
    """``ours`` followed by ``theirs``, a list keyed by ``key``; a user entry may not take one of our keys."""
    taken = {entry.get(key) for entry in ours}
    clash = [entry.get(key) for entry in theirs if entry.get(key) in taken]
    if clash:
        raise ValueError(f"spec.podTemplate {field}: {clash[0]!r} is trainserve's (the API should have refused it)")
    return [*ours, *theirs]


def head_group(template: Object) -> Object:
    """The head group: no work scheduled on the head (``num-cpus: 0``), the dashboard on every interface."""
    params = {"num-cpus": "0", "dashboard-host": "0.0.0.0", "metrics-export-port": str(METRICS_PORT)}
    return {"rayStartParams": params, "template": template}


def worker_group(
    name: str, template: Object, *, replicas: int, min_replicas: int, max_replicas: int, cpus: int, gpus: float | int
) -> Object:
    """A worker group; Ray's ``--num-cpus`` takes whole CPUs."""
    return {
        "groupName": name,
        "replicas": replicas,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "rayStartParams": {"num-cpus": str(cpus), "num-gpus": str(gpus), "metrics-export-port": str(METRICS_PORT)},
        "template": template,
    }
