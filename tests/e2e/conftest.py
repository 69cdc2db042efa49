"""End-to-end tests on a real cluster (kind + KubeRay + trainserve installed); skipped without KUBECONFIG.

    KUBECONFIG=~/.kube/config TRAINSERVE_E2E_NAMESPACE=default pytest tests/e2e

The cluster needs KubeRay, the CRDs in crds/ and a running `trainserve run` (or the Helm chart), and a
workload image that can write to the TrainingJob's `output.uri` (the examples use a local path: mount a
PVC there, or point `output.uri` at an S3 bucket with `storageSecretRef`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

NAMESPACE = os.environ.get("TRAINSERVE_E2E_NAMESPACE", "default")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("KUBECONFIG"):
        return
    skip = pytest.mark.skip(reason="needs a cluster: set KUBECONFIG (kind + KubeRay + trainserve)")
    for item in items:
        if "tests/e2e/" in str(item.fspath):  # not tests/e2e_local
            item.add_marker(skip)


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        ["kubectl", "-n", NAMESPACE, *args], input=stdin, capture_output=True, text=True, timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result.stdout


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    for resource in reversed(created):
        kubectl("delete", resource, "--ignore-not-found", "--wait=false", check=False)
