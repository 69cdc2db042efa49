"""The operator as its own process, the emulated API server (plain HTTP for the operator, TLS for the pods) and
the process-level KubeRay stand-in running real Ray clusters; every Ray process ends with the test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kmock
import pytest
import pytest_asyncio

from tests.support.kuberay_local import KubeRayLocal
from tests.support.kubesim import NAMESPACE, Cluster, Emulator, register
from tests.support.operatorprocess import OperatorProcess, write_kubeconfig
from tests.support.podidentity import TlsEndpoint
from trainserve_workloads.lifecycle import free_port

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _mount_namespaces() -> bool:
    """The stand-in's pods need their own mount namespace (root, as on CI and the development machines)."""
    try:
        return subprocess.run(["unshare", "--mount", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _mount_namespaces():
        return
    skip = pytest.mark.skip(reason="the KubeRay stand-in needs mount namespaces: run as root (unshare --mount)")
    for item in items:
        if "e2e_local" in str(item.fspath):
            item.add_marker(skip)


@dataclass
class World:
    api: Emulator
    cluster: Cluster
    kuberay: KubeRayLocal
    operator: OperatorProcess
    workdir: Path

    async def apply(self, document: dict[str, Any]) -> dict[str, Any]:
        """What client-side `kubectl apply` sends for a new object: the document with its last-applied annotation."""
        metadata = {**document["metadata"], "namespace": NAMESPACE}
        annotations = {**metadata.get("annotations", {}), LAST_APPLIED: json.dumps(document, sort_keys=True)}
        sent = {**document, "metadata": {**metadata, "annotations": annotations}}
        if document["kind"] == "TrainingJob":
            return await self.cluster.create_trainingjob(sent)
        return await self.cluster.create_modelservice(sent)


@pytest_asyncio.fixture()
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with Emulator() as api, kmock.Server(api), TlsEndpoint(api, tmp_path) as tls:
        register(api)
        kuberay = KubeRayLocal(api, tmp_path, tls.ca_file, tls.port)
        task = asyncio.create_task(kuberay.run())
        operator = OperatorProcess(
            write_kubeconfig(tmp_path / "kubeconfig", str(api.url)), free_port(), tmp_path / "operator.log"
        )
        operator.start()
        try:
            yield World(api, Cluster(api), kuberay, operator, tmp_path)
        finally:
            await operator.stop_serving()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            leftovers = {c.plan.name: c.pids() for c in kuberay.started if c.pids()}
            assert not leftovers, f"Ray processes left behind: {leftovers}"
            assert not kuberay.errors, kuberay.errors
