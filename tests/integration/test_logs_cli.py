"""`trainserve logs` (and `kubectl trainserve logs`) against the emulated API server's pod log endpoint: the pods are
found by the labels KubeRay and trainserve put on them, the log is read over the API, follow included."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.documents import changed, example
from tests.support.kubesim import (
    NAMESPACE,
    PODS,
    RAYJOBS,
    RAYSERVICES,
    Cluster,
    Emulator,
    eventually,
    operator_settings,
    running_operator,
    running_pod_status,
)
from trainserve.cli import main

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


@pytest.fixture()
def kubeconfig(emulator: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's kubeconfig whose context points at the emulated API server, namespace `ml`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sim", "cluster": {"server": str(emulator.url).rstrip("/")}}],
        "users": [{"name": "me", "user": {"token": "t"}}],
        "contexts": [{"name": "sim", "context": {"cluster": "sim", "user": "me", "namespace": NAMESPACE}}],
        "current-context": "sim",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


async def logs(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, ["logs", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def submitter_pod(cluster: Cluster, rayjob: str, pod: str) -> None:
    """The pod of the Kubernetes Job KubeRay runs `ray job submit` in (named like the RayJob; the Job controller
    labels its pods with the Job's name)."""
    labels = {"batch.kubernetes.io/job-name": rayjob, "job-name": rayjob}
    spec = {"containers": [{"name": "ray-job-submitter", "image": "ghcr.io/trainserve/workloads:0.1.0"}]}
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "labels": labels}, "spec": spec}
    await cluster._send("POST", cluster._path(PODS), {**body, "status": running_pod_status()})


async def a_running_job(cluster: Cluster) -> None:
    await cluster.create_trainingjob(example("digits-trainingjob"))
    await eventually(lambda: cluster.rayjobs().get("digits-1"))
    await eventually(lambda: cluster.status("digits").get("attempts") == 1)
    await cluster.create_raycluster(RAYJOBS, "digits-1", "digits-1-x7k2p")
    status = running_pod_status()
    await cluster.create_ray_pod(RAYJOBS, "digits-1", "digits-1-x7k2p", "digits-1-x7k2p-head", status)
    for worker in ("digits-1-x7k2p-worker-b2", "digits-1-x7k2p-worker-a1"):
        await cluster.create_ray_pod(RAYJOBS, "digits-1", "digits-1-x7k2p", worker, status, group="worker")
    await cluster.write_log("digits-1-x7k2p-head", "ray-head", "Ray runtime started.")
    await cluster.write_log("digits-1-x7k2p-worker-a1", "ray-worker", "worker a1 joined")
    await cluster.write_log("digits-1-x7k2p-worker-b2", "ray-worker", "worker b2 joined")


async def test_a_jobs_driver_output_then_followed_to_the_end(
    emulator: Emulator, cluster: Cluster, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_operator(operator_settings(emulator)):
        await a_running_job(cluster)
        code, out, err = await logs(capsys, "tj/digits")
        assert code == 0 and out == "Ray runtime started.\n", "no submitter yet: the head pod's log"
        assert "no submitter pod" in err

        await submitter_pod(cluster, "digits-1", "digits-1-s8d7f")
        await cluster.write_log("digits-1-s8d7f", "ray-job-submitter", "epoch 1/3 loss=0.61", "epoch 2/3 loss=0.32")
        code, out, err = await logs(capsys, "tj/digits", "-n", NAMESPACE)
        assert (code, out, err) == (0, "epoch 1/3 loss=0.61\nepoch 2/3 loss=0.32\n", "")

        following = asyncio.create_task(asyncio.to_thread(main, ["logs", "tj/digits", "-f"]))
        await asyncio.sleep(1.0)
        assert not following.done(), "-f keeps reading while the driver runs"
        await cluster.write_log("digits-1-s8d7f", "ray-job-submitter", "epoch 3/3 loss=0.18")
        seen: list[str] = []

        def printed(text: str) -> bool:
            seen.append(capsys.readouterr().out)
            return text in "".join(seen)

        await eventually(lambda: printed("epoch 3/3"), timeout=5, message="a new line is printed as it comes")
        assert not following.done()
        await cluster.write_log("digits-1-s8d7f", "ray-job-submitter", "model version 1 saved", exited=True)
        assert await asyncio.wait_for(following, timeout=10) == 0
        out = "".join(seen) + capsys.readouterr().out
        assert out.splitlines() == [
            "epoch 1/3 loss=0.61",
            "epoch 2/3 loss=0.32",
            "epoch 3/3 loss=0.18",
            "model version 1 saved",
        ]


async def test_workers_attempts_and_what_is_not_there(
    emulator: Emulator, cluster: Cluster, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_operator(operator_settings(emulator)):
        await a_running_job(cluster)
        assert await logs(capsys, "tj/digits", "--worker", "0") == (0, "worker a1 joined\n", "")
        assert await logs(capsys, "tj/digits", "--worker", "1", "--attempt", "1") == (0, "worker b2 joined\n", "")
        code, _, err = await logs(capsys, "tj/digits", "--worker", "2")
        assert code == 1 and "0: digits-1-x7k2p-worker-a1, 1: digits-1-x7k2p-worker-b2" in err
        code, _, err = await logs(capsys, "tj/digits", "--attempt", "2")
        assert code == 1 and "attempt 2 (RayJob digits-2) has no pods yet" in err
        code, _, err = await logs(capsys, "tj/nope")
        assert code == 1 and "TrainingJob nope not found in namespace ml" in err
        code, _, err = await logs(capsys, "deploy/digits")
        assert code == 1 and "give tj/NAME" in err


async def test_a_modelservice_replicas_log(
    emulator: Emulator, cluster: Cluster, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document: dict[str, Any] = changed(example("digits-modelservice"), "spec.model", {"uri": "s3://models/digits/1"})
    async with running_operator(operator_settings(emulator)):
        await cluster.create_modelservice(document)
        await eventually(lambda: cluster.get(RAYSERVICES, "digits"))
        await cluster.create_raycluster(RAYSERVICES, "digits", "digits-raycluster-m2j9d")
        worker = "digits-raycluster-m2j9d-worker-t5x8k"
        status = running_pod_status()
        await cluster.create_ray_pod(RAYSERVICES, "digits", "digits-raycluster-m2j9d", worker, status, group="worker")
        await cluster.write_log(worker, "ray-worker", "INFO replica started: digits v1 on TensorFlow Lite")
        code, out, _ = await logs(capsys, "ms/digits")
        assert (code, out) == (0, "INFO replica started: digits v1 on TensorFlow Lite\n")
        code, _, err = await logs(capsys, "ms/digits", "--attempt", "1")
        assert code == 1 and "--attempt is for TrainingJobs" in err
