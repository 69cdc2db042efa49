"""Operator settings: defaults, overridden by ``TRAINSERVE_*`` environment variables, overridden by flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from trainserve.builders.raypod import SERVE_PORT

ENV_PREFIX = "TRAINSERVE_"

LogFormat = Literal["json", "text"]


class OperatorSettings(BaseModel):
    """Everything the operator needs to know that is not in a TrainingJob."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str = Field("ghcr.io/trainserve/workloads:0.1.0", description="Default workload image of the Ray pods.")
    ray_version: str = Field("2.60.0", description="`rayVersion` of the generated Ray clusters.")
    head_cpu: str = Field("1", description="CPU request and limit of the Ray head pod (it runs no training).")
    head_memory: str = Field("2Gi", description="Memory request and limit of the Ray head pod.")
    metrics_port: int = Field(9090, ge=0, le=65535, description="Port of /metrics; 0 disables the endpoint.")
    log_format: LogFormat = Field("text", description="`json` (one object per line) or `text`.")
    namespaces: tuple[str, ...] = Field((), description="Namespaces to serve; empty with all_namespaces.")
    all_namespaces: bool = Field(False, description="Serve every namespace.")
    standalone: bool = Field(False, description="Skip Kopf peering (no leader election).")
    peering_name: str | None = Field(
        None,
        description="Kopf peering object for leader election (mandatory peering; created when missing); "
        "default: Kopf's optional `default` peering.",
    )
    peering_priority: int | None = Field(
        None, description="Kopf peering priority (the highest runs, the others stand by); default: oldest first."
    )
    liveness_endpoint: str | None = Field(
        None, description="Kopf's health endpoint for probes, e.g. `http://0.0.0.0:8081/healthz`; default: none."
    )
    resync_seconds: float = Field(
        300.0, gt=0, description="Every TrainingJob and ModelService is reconciled at least this often."
    )
    kuberay_probe_seconds: float = Field(
        30.0, gt=0, description="How long a 'KubeRay is (not) installed' answer is trusted."
    )
    workers: int = Field(4, ge=1, le=64, description="Concurrent reconciles.")
    retry_base_seconds: float = Field(1.0, gt=0, description="First delay after a failed reconcile; doubles each time.")
    retry_max_seconds: float = Field(60.0, gt=0, description="Longest delay between retries of a failed reconcile.")
    api_server: str | None = Field(None, description="API server URL; default: in-cluster config, then KUBECONFIG.")
    fast_ingress: bool = Field(
        True,
        description="Serve through Ray Serve's throughput-optimized ingress (HAProxy in front of direct "
        "ingress to replicas) on ModelService pods; false: Serve's classic proxy.",
    )
    haproxy_threads: int = Field(2, ge=1, le=64, description="HAProxy threads per Ray pod with fast ingress.")
    serve_stats_url: str = Field(
        f"http://{{service}}.{{namespace}}.svc:{SERVE_PORT}",
        description="Where the operator reads a ModelService's per-version figures (canary promotion); "
        "`{service}` is the serve Service, `{namespace}` its namespace.",
    )
    ray_auth: bool = Field(
        True,
        description="Ray token authentication on every Ray cluster (KubeRay's `authOptions`, KubeRay v1.5.1 or "
        "newer); false only for an older KubeRay: its clusters then run without authentication.",
    )
    kuberay_namespace: str = Field(
        "kuberay-system",
        description="Namespace of KubeRay's operator: the only one, with ours, that reaches the "
        "Ray dashboard (job submission and status).",
    )
    operator_namespace: str | None = Field(
        None, description="The operator's own namespace (the chart sets it): reaches the dashboard and Serve port."
    )
    prometheus_namespace: str = Field(
        "monitoring", description="Namespace whose pods may scrape Ray's metrics port; `*`: every namespace."
    )
    serve_from_namespace_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels of the namespaces that may reach the Serve port (with the operator's); none: every "
        "namespace and outside the cluster.",
    )
    serve_from_pod_labels: dict[str, str] = Field(
        default_factory=dict, description="Labels of the pods (in those namespaces) that may reach the Serve port."
    )


#: Settings read from the environment, by field name.
_ENV_FIELDS = {
    "image": "IMAGE",
    "ray_version": "RAY_VERSION",
    "head_cpu": "HEAD_CPU",
    "head_memory": "HEAD_MEMORY",
    "metrics_port": "METRICS_PORT",
    "log_format": "LOG_FORMAT",
    "resync_seconds": "RESYNC_SECONDS",
    "workers": "WORKERS",
    "peering_name": "PEERING_NAME",
    "peering_priority": "PEERING_PRIORITY",
    "liveness_endpoint": "LIVENESS_ENDPOINT",
    "fast_ingress": "FAST_INGRESS",
    "haproxy_threads": "HAPROXY_THREADS",
    "serve_stats_url": "SERVE_STATS_URL",
    "ray_auth": "RAY_AUTH",
    "kuberay_namespace": "KUBERAY_NAMESPACE",
    "operator_namespace": "OPERATOR_NAMESPACE",
    "prometheus_namespace": "PROMETHEUS_NAMESPACE",
}
#: Label selectors read from the environment as ``key=value,key=value``.
_ENV_LABELS = {
    "serve_from_namespace_labels": "SERVE_FROM_NAMESPACE_LABELS",
    "serve_from_pod_labels": "SERVE_FROM_POD_LABELS",
}


def parse_labels(text: str, variable: str) -> dict[str, str]:
    """``a=b,c=d`` -> ``{"a": "b", "c": "d"}``; a pair without ``=`` is an error naming ``variable``."""
    labels = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{variable}: {pair!r} is not key=value; write e.g. `team=ml,tier=frontend`")
        labels[key.strip()] = value.strip()
    return labels


def settings_from(environ: Mapping[str, str] | None = None, **overrides: object) -> OperatorSettings:
    """Defaults, then ``TRAINSERVE_<FIELD>`` variables, then ``overrides`` that are not None (the flags)."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {
        field: env[ENV_PREFIX + name] for field, name in _ENV_FIELDS.items() if env.get(ENV_PREFIX + name)
    }
    if env.get(ENV_PREFIX + "NAMESPACES"):
        values["namespaces"] = tuple(ns.strip() for ns in env[ENV_PREFIX + "NAMESPACES"].split(",") if ns.strip())
    for field, name in _ENV_LABELS.items():
        if env.get(ENV_PREFIX + name):
            values[field] = parse_labels(env[ENV_PREFIX + name], ENV_PREFIX + name)
    values.update({key: value for key, value in overrides.items() if value is not None})
    return OperatorSettings.model_validate(values)
