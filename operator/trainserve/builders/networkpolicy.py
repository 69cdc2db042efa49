"""The NetworkPolicy of every Ray cluster we create (a TrainingJob's or a ModelService's); pure.

It selects the owner's pods (Ray head, workers and, for a TrainingJob, KubeRay's submitter pod, which carries the
same labels) and allows, for ingress:

- every port from the same owner's pods: GCS, object manager, node manager, workers, Ray client, dashboard agent;
- the dashboard (Jobs and Serve REST APIs) from KubeRay's operator namespace, which submits jobs and reads their
  status there, and from ours;
- the Serve ports (ModelServices: HTTP, and gRPC unless `spec.grpc.enabled` is false) from everywhere, or from the configured namespace/pod labels and ours;
- the metrics port from the Prometheus namespace.

Anything else is refused: once a policy selects a pod, only what one of its rules allows reaches it.
"""

from __future__ import annotations

from typing import Any

from trainserve.api.modelservice import ModelService
from trainserve.builders.common import Owner, child_metadata
from trainserve.builders.raypod import DASHBOARD_PORT, METRICS_PORT, SERVE_PORT
from trainserve.naming import MODELSERVICE_LABEL, TRAININGJOB_LABEL
from trainserve.settings import OperatorSettings

Object = dict[str, Any]
#: The label every namespace carries with its own name (Kubernetes sets it since v1.21).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
#: ``prometheus_namespace`` that lets every namespace scrape the metrics port.
ANY_NAMESPACE = "*"


def network_policy_name(kind: str, owner: str) -> str:
    """``<service>-ray`` for a ModelService, ``<job>-training-ray`` for a TrainingJob: a job and the service that
    serves its model often share a name (at most 43 + 13 characters: a valid object name)."""
    return f"{owner}-ray" if kind == "ModelService" else f"{owner}-training-ray"


def owner_pods(owner: Owner) -> Object:
    """The selector of every pod of the owner's Ray cluster(s)."""
    label = MODELSERVICE_LABEL if owner.kind == "ModelService" else TRAININGJOB_LABEL
    return {"matchLabels": {label: owner.metadata.name or ""}}


def _namespaces(*names: str | None) -> list[Object]:
    """Peers: every pod of each named namespace (each name once, in order)."""
    unique = dict.fromkeys(name for name in names if name)
    return [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: name}}} for name in unique]


def _tcp(number: int) -> list[Object]:
    return [{"protocol": "TCP", "port": number}]


def _serve_rule(settings: OperatorSettings, grpc_port: int | None) -> Object:
    """The Serve ports (HTTP, and gRPC when on): from everywhere, or from the configured peers and the operator
    (canary figures)."""
    ports = _tcp(SERVE_PORT) + (_tcp(grpc_port) if grpc_port is not None else [])
    namespaces, pods = settings.serve_from_namespace_labels, settings.serve_from_pod_labels
    if not namespaces and not pods:
        return {"ports": ports}
    peer: Object = {"namespaceSelector": {"matchLabels": dict(namespaces)} if namespaces else {}}
    if pods:
        peer["podSelector"] = {"matchLabels": dict(pods)}
    return {"from": [peer, *_namespaces(settings.operator_namespace)], "ports": ports}


def _metrics_rule(settings: OperatorSettings) -> Object:
    if settings.prometheus_namespace == ANY_NAMESPACE:
        return {"from": [{"namespaceSelector": {}}], "ports": _tcp(METRICS_PORT)}
    return {"from": _namespaces(settings.prometheus_namespace), "ports": _tcp(METRICS_PORT)}


def build_network_policy(owner: Owner, settings: OperatorSettings) -> Object:
    """The owner's NetworkPolicy (``<name>-ray``), owned by it so the garbage collector removes it."""
    pods = owner_pods(owner)
    dashboard = _namespaces(settings.kuberay_namespace, settings.operator_namespace)
    ingress = [
        {"from": [{"podSelector": pods}]},
        {"from": dashboard, "ports": _tcp(DASHBOARD_PORT)},
    ]
    if isinstance(owner, ModelService):
        grpc = owner.spec.grpc
        ingress.append(_serve_rule(settings, grpc.port if grpc.enabled else None))
    ingress.append(_metrics_rule(settings))
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": child_metadata(owner, network_policy_name(owner.kind, owner.metadata.name or "")),
        "spec": {"podSelector": pods, "policyTypes": ["Ingress"], "ingress": ingress},
    }
