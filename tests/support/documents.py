"""Example documents and ways to vary them, for tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from tests.support.schemas import crd_from_file

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CRDS = REPO / "crds"


def example(name: str) -> dict[str, Any]:
    """The (single) document of ``examples/<name>.yaml``."""
    return yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())


def all_examples() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


def changed(document: dict[str, Any], path: str, value: Any, *, delete: bool = False) -> dict[str, Any]:
    """A copy of ``document`` with the dotted ``path`` set to ``value`` (or deleted)."""
    out = copy.deepcopy(document)
    node = out
    *parents, last = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    if delete:
        node.pop(last, None)
    else:
        node[last] = value
    return out


def our_crd(plural: str) -> dict[str, Any]:
    """Our CRD as generated into ``crds/`` (parsed once per process): a copy the caller may change."""
    return copy.deepcopy(crd_from_file(CRDS / f"trainserve.io_{plural}.yaml"))


def full_pod_template() -> dict[str, Any]:
    """A `spec.podTemplate` that uses every field it offers (and a few sub-fields of each)."""
    return {
        "metadata": {
            "labels": {"team": "ml", "cost-center": "research"},
            "annotations": {"sidecar.istio.io/inject": "false", "vault.hashicorp.com/agent-inject": "true"},
        },
        "spec": {
            "serviceAccountName": "my-identity",
            "imagePullSecrets": [{"name": "registry-creds"}],
            "priorityClassName": "ml-batch",
            "runtimeClassName": "nvidia",
            "schedulerName": "volcano",
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchExpressions": [
                                    {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]}
                                ]
                            }
                        ]
                    }
                },
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 50,
                            "podAffinityTerm": {
                                "labelSelector": {"matchLabels": {"team": "ml"}},
                                "topologyKey": "kubernetes.io/hostname",
                            },
                        }
                    ]
                },
            },
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"team": "ml"}},
                }
            ],
            "volumes": [
                {"name": "datasets", "persistentVolumeClaim": {"claimName": "datasets", "readOnly": True}},
                {"name": "cache", "emptyDir": {"sizeLimit": "10Gi"}},
                {
                    "name": "aws-token",
                    "projected": {
                        "sources": [
                            {
                                "serviceAccountToken": {
                                    "audience": "sts.amazonaws.com",
                                    "expirationSeconds": 86400,
                                    "path": "token",
                                }
                            }
                        ]
                    },
                },
            ],
            "containers": [
                {
                    "name": "ray",
                    "env": [
                        {"name": "HF_HOME", "value": "/cache/hf"},
                        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {
                            "name": "MEMORY_LIMIT",
                            "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
                        },
                    ],
                    "envFrom": [
                        {"configMapRef": {"name": "ml-settings"}, "prefix": "ML_"},
                        {"secretRef": {"name": "wandb"}},
                    ],
                    "volumeMounts": [
                        {"name": "datasets", "mountPath": "/data", "readOnly": True},
                        {"name": "cache", "mountPath": "/cache"},
                        {"name": "aws-token", "mountPath": "/var/run/secrets/aws", "readOnly": True},
                    ],
                }
            ],
        },
    }
