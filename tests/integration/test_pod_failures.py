"""Why a job or service is stuck, told in its own conditions: the real operator against the emulated API server,
with the simulated KubeRay creating RayClusters and Ray pods that the test drives into each failure shape."""

from __future__ import annotations

import asyncio
import datetime
import tracemalloc
from typing import Any

import pytest

from tests.support.documents import changed, example
from tests.support.kubesim import (
    MODELSERVICES,
    RAYJOBS,
    RAYSERVICES,
    Cluster,
    Emulator,
    container_status,
    eventually,
    operator_settings,
    running_operator,
    running_pod_status,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]

#: The issue's promise: a failure shows within 5 s.
WITHIN = 5.0
SCHEDULER_MESSAGE = "0/5 nodes are available: 3 Insufficient nvidia.com/gpu, 2 node(s) had untolerated taint."
TRACEBACK = "\n".join(f"  frame {i}" for i in range(20)) + "\nValueError: the dataset has no column 'label'"


def _ago(seconds: float) -> str:
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def unschedulable_status() -> dict[str, Any]:
    scheduled = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": SCHEDULER_MESSAGE,
        "lastTransitionTime": _ago(0),
    }
    return {"phase": "Pending", "conditions": [scheduled], "containerStatuses": []}


def image_pull_status() -> dict[str, Any]:
    waiting = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "ghcr.io/trainserve/workloads:0.1.0"'}
    return container_status("ray-head", state={"waiting": waiting})


def crash_loop_status() -> dict[str, Any]:
    last = {"terminated": {"exitCode": 1, "reason": "Error", "message": TRACEBACK}}
    return container_status("ray-head", state={"waiting": {"reason": "CrashLoopBackOff"}}, lastState=last)


def oom_status() -> dict[str, Any]:
    last = {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
    return container_status("ray-head", state={"waiting": {"reason": "CrashLoopBackOff"}}, lastState=last)


def exited_status() -> dict[str, Any]:
    return container_status("ray-head", state={"terminated": {"exitCode": 3, "reason": "Error", "message": TRACEBACK}})


#: Each failure shape: the pod status, the condition and reason it gives, and what its message must say.
SHAPES = {
    "unschedulable": (unschedulable_status, "Scheduled", "Unschedulable", [SCHEDULER_MESSAGE, "less than a minute"]),
    "image-pull": (image_pull_status, "PodsHealthy", "ImagePullFailed", ["ghcr.io/trainserve/workloads:0.1.0"]),
    "crash-loop": (crash_loop_status, "PodsHealthy", "CrashLoopBackOff", ["ray-head", "exit code 1", "no column"]),
    "oom": (oom_status, "PodsHealthy", "OOMKilled", ["ray-head", "exit code 137"]),
    "non-zero-exit": (exited_status, "PodsHealthy", "ContainerFailed", ["ray-head", "exit code 3", "no column"]),
}


def warnings(cluster: Cluster, name: str, reason: str) -> list[dict[str, Any]]:
    return [e for e in cluster.events(name) if e["reason"] == reason and e["type"] == "Warning"]


async def started_job(cluster: Cluster) -> str:
    """A TrainingJob whose attempt 1 has its RayCluster; returns the cluster's name."""
    await cluster.create_trainingjob(example("digits-trainingjob"))
    await eventually(lambda: cluster.rayjobs().get("digits-1"))
    await cluster.run_rayjob("digits-1")
    await eventually(lambda: cluster.status("digits").get("phase") == "Running")
    await cluster.create_raycluster(RAYJOBS, "digits-1", "digits-1-x7k2p")
    return "digits-1-x7k2p"


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_pod_failure_is_a_condition_and_one_warning_until_the_pod_recovers(
    emulator: Emulator, cluster: Cluster, shape: str
) -> None:
    status_of, condition, reason, says = SHAPES[shape]
    async with running_operator(operator_settings(emulator)):
        ray_cluster = await started_job(cluster)
        await cluster.create_ray_pod(RAYJOBS, "digits-1", ray_cluster, "digits-1-x7k2p-head", running_pod_status())
        await asyncio.sleep(1.0)
        assert cluster.condition("digits", condition) == {}, "a healthy pod adds no condition"

        await cluster.pod_status("digits-1-x7k2p-head", status_of())
        found = await eventually(
            lambda: cluster.condition("digits", condition).get("reason") == reason,
            timeout=WITHIN,
            message=f"{condition}={reason} within {WITHIN}s",
        )
        assert found
        shown = cluster.condition("digits", condition)
        assert shown["status"] == "False" and "digits-1-x7k2p-head" in shown["message"]
        for text in says:
            assert text in shown["message"], (text, shown["message"])
        assert "frame 0" not in shown["message"], "only the last lines of a termination message"
        await eventually(lambda: len(warnings(cluster, "digits", reason)) == 1, timeout=WITHIN)

        before = emulator.request_count()
        await asyncio.sleep(2.5)  # several resyncs: the unchanged failure is written once
        assert [f"{r.method} {r.url}" for r in emulator.writes(since=before)] == []
        assert len(warnings(cluster, "digits", reason)) == 1

        await cluster.pod_status("digits-1-x7k2p-head", running_pod_status())
        await eventually(lambda: cluster.condition("digits", condition).get("status") == "True", timeout=WITHIN)
        assert cluster.status("digits")["phase"] == "Running"
        assert len(warnings(cluster, "digits", reason)) == 1


async def test_a_refused_pod_create_is_told_until_a_pod_is_created(emulator: Emulator, cluster: Cluster) -> None:
    refusal = (
        'Failed to create worker Pod for the cluster ml/digits-1-x7k2p, pods "digits-1-x7k2p-worker-abcde" is '
        "forbidden: exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1, used: 4, limited: 4"
    )
    async with running_operator(operator_settings(emulator)):
        ray_cluster = await started_job(cluster)
        await cluster.create_ray_pod(
            RAYJOBS, "digits-1", ray_cluster, "digits-1-x7k2p-head", running_pod_status(), created=_ago(60)
        )
        await cluster.kuberay_warning(ray_cluster, "FailedToCreateWorkerPod", refusal, when=_ago(2))
        await eventually(
            lambda: cluster.condition("digits", "Scheduled").get("reason") == "PodCreationRefused", timeout=WITHIN
        )
        assert "exceeded quota: gpu-quota" in cluster.condition("digits", "Scheduled")["message"]
        await eventually(lambda: len(warnings(cluster, "digits", "PodCreationRefused")) == 1, timeout=WITHIN)

        # Another cluster's refusal (not ours) and KubeRay's other Warnings change nothing.
        await cluster.kuberay_warning("someone-elses-cluster", "FailedToCreateWorkerPod", refusal, when=_ago(0))
        before = emulator.request_count()
        await asyncio.sleep(1.5)
        assert emulator.writes(since=before) == []

        await cluster.create_ray_pod(
            RAYJOBS, "digits-1", ray_cluster, "digits-1-x7k2p-worker-q8w4z", running_pod_status(), group="worker"
        )
        await eventually(lambda: cluster.condition("digits", "Scheduled").get("status") == "True", timeout=WITHIN)
        assert len(warnings(cluster, "digits", "PodCreationRefused")) == 1


async def test_a_modelservice_replica_that_cannot_pull_its_image(emulator: Emulator, cluster: Cluster) -> None:
    document = changed(example("digits-modelservice"), "spec.model", {"uri": "s3://models/digits/1"})
    async with running_operator(operator_settings(emulator)):
        await cluster.create_modelservice(document)
        await eventually(lambda: cluster.get(RAYSERVICES, "digits"))
        await cluster.create_raycluster(RAYSERVICES, "digits", "digits-raycluster-m2j9d")
        worker = "digits-raycluster-m2j9d-worker-t5x8k"
        waiting = {"waiting": {"reason": "ErrImagePull", "message": "manifest unknown"}}
        await cluster.create_ray_pod(
            RAYSERVICES,
            "digits",
            "digits-raycluster-m2j9d",
            worker,
            container_status("ray-worker", state=waiting),
            group="worker",
        )
        await eventually(
            lambda: cluster.service_condition("digits", "PodsHealthy").get("reason") == "ImagePullFailed",
            timeout=WITHIN,
        )
        assert worker in cluster.service_condition("digits", "PodsHealthy")["message"]
        assert "manifest unknown" in cluster.service_condition("digits", "PodsHealthy")["message"]
        await eventually(lambda: len(warnings(cluster, "digits", "ImagePullFailed")) == 1, timeout=WITHIN)

        await cluster.pod_status(worker, running_pod_status())
        await eventually(lambda: cluster.service_condition("digits", "PodsHealthy").get("status") == "True")
        await cluster.delete_pod(worker)  # a pod going away is no failure either
        await asyncio.sleep(1.0)
        assert cluster.service_condition("digits", "PodsHealthy")["status"] == "True"
        assert len(warnings(cluster, "digits", "ImagePullFailed")) == 1
        assert cluster.get(MODELSERVICES, "digits") is not None


def _unrelated_pod(index: int) -> dict[str, Any]:
    labels = {"app": f"web-{index % 50}", "pod-template-hash": "5d8f7c9b6d"}
    spec = {"containers": [{"name": "web", "image": "nginx:1.27"}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"web-{index}", "labels": labels}, "spec": spec}


async def test_thousands_of_unrelated_pods_reach_neither_memory_nor_writes(
    emulator: Emulator, cluster: Cluster
) -> None:
    async with running_operator(operator_settings(emulator)) as operator:
        ray_cluster = await started_job(cluster)
        await cluster.create_ray_pod(RAYJOBS, "digits-1", ray_cluster, "digits-1-x7k2p-head", unschedulable_status())
        await eventually(lambda: cluster.condition("digits", "Scheduled").get("reason") == "Unschedulable")
        await asyncio.sleep(0.5)
        sent_before = emulator.watch_sent["v1/pods"]
        assert sent_before > 0, "the operator watches pods"
        writes_before = emulator.request_count()
        tracemalloc.start()
        try:
            baseline = _operator_memory()
            for index in range(2000):
                await emulator.store("v1/pods", f"team-{index % 20}", _unrelated_pod(index))
            await asyncio.sleep(1.5)  # several resyncs
            grown = _operator_memory() - baseline
        finally:
            tracemalloc.stop()
        assert emulator.watch_sent.get("v1/pods", 0) == sent_before, "unrelated pods reached the operator's watch"
        assert sum(len(p) for p in operator.trainingjobs.workload.pods.values()) == 1
        assert grown < 256 * 1024, f"the operator's memory grew by {grown} bytes"
        assert emulator.writes(since=writes_before) == []
        assert cluster.condition("digits", "Scheduled")["reason"] == "Unschedulable"


def _operator_memory() -> int:
    """Bytes held by the operator's code (trainserve and Kopf), from tracemalloc."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, "*/trainserve/*"), tracemalloc.Filter(True, "*/kopf/*")]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))
