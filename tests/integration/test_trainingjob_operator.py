"""The real operator (Kopf + controller + kubernetes client) against an emulated API server and a simulated
KubeRay: what a user sees in TrainingJob status, RayJobs and Events through a job's whole life."""

from __future__ import annotations

import asyncio
import json
import shlex
import threading
from typing import Any

import kmock
import pytest

from tests.support.documents import changed, example
from tests.support.kubesim import (
    RAYJOBS,
    TRAININGJOBS,
    Cluster,
    Emulator,
    eventually,
    install_kuberay,
    operator_settings,
    register,
    running_operator,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


def digits(**run_policy: Any) -> dict[str, Any]:
    document = example("digits-trainingjob")
    return changed(document, "spec.runPolicy", {**document["spec"].get("runPolicy", {}), **run_policy})


def phase(cluster: Cluster, name: str = "digits") -> str | None:
    return cluster.status(name).get("phase")


async def test_lifecycle_from_create_to_model(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator)) as operator:
        await cluster.create_trainingjob(digits())
        rayjob = await eventually(lambda: cluster.rayjobs().get("digits-1"))
        assert rayjob["metadata"]["labels"]["trainserve.io/trainingjob"] == "digits"
        owner = rayjob["metadata"]["ownerReferences"][0]
        assert owner["uid"] == cluster.trainingjob("digits")["metadata"]["uid"] and owner["controller"] is True
        await eventually(lambda: cluster.condition("digits", "Created").get("reason") == "RayJobCreated")
        assert phase(cluster) == "Pending" and cluster.status("digits")["attempts"] == 1

        await cluster.run_rayjob("digits-1")
        await eventually(lambda: phase(cluster) == "Running")
        # The workload reports progress through the status subresource; the operator keeps it.
        await cluster.report_progress(
            "digits",
            {
                "progress": {"epoch": 3, "totalEpochs": 12, "percent": 25.0, "metrics": {"loss": 0.4}},
                "lastCheckpoint": {"uri": "/m/checkpoints/epoch-000003", "epoch": 3},
            },
        )
        await cluster.report_progress(
            "digits", {"model": {"uri": "/m/1", "version": 1, "metrics": {"val_accuracy": 0.97}}}
        )
        await cluster.succeed_rayjob("digits-1")
        await eventually(lambda: phase(cluster) == "Succeeded")
        status = cluster.status("digits")
        assert status["progress"]["epoch"] == 3 and status["lastCheckpoint"]["epoch"] == 3
        assert status["model"] == {"uri": "/m/1", "version": 1, "metrics": {"val_accuracy": 0.97}}
        assert cluster.condition("digits", "Succeeded")["status"] == "True"
        assert "model version 1 at /m/1" in cluster.condition("digits", "Succeeded")["message"]
        assert cluster.condition("digits", "Running")["status"] == "False"
        assert status["startTime"] and status["completionTime"] and status["observedGeneration"] == 1

        def transitions_posted() -> bool:  # a transition's Events are posted after its status write
            reasons = [e["reason"] for e in cluster.events("digits")]
            assert {"RayJobCreated", "Training", "Succeeded"} <= set(reasons), reasons
            return True

        await eventually(transitions_posted)
        assert operator.metrics.sample("trainserve_trainingjob_attempts_total") == 1
        assert operator.metrics.sample("trainserve_trainingjobs", {"phase": "Succeeded"}) == 1
        assert operator.metrics.sample("trainserve_trainingjob_duration_seconds_count") == 1
        assert operator.metrics.sample("trainserve_reconcile_duration_seconds_count", {"kind": "TrainingJob"})


async def test_failure_is_retried_as_a_new_attempt_that_resumes(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator)):
        await cluster.create_trainingjob(digits(backoffLimit=1))
        await eventually(lambda: "digits-1" in cluster.rayjobs())
        await cluster.run_rayjob("digits-1")
        await cluster.fail_rayjob("digits-1", message="worker OOMKilled")
        second = await eventually(lambda: cluster.rayjobs().get("digits-2"))
        # The new attempt and the status write are two requests: the status may land a moment later.
        failed = await eventually(
            lambda: cluster.condition("digits", "Failed").get("status") and cluster.condition("digits", "Failed")
        )
        assert failed["status"] == "False" and failed["reason"] == "AppFailed" and "OOMKilled" in failed["message"]
        assert cluster.status("digits")["attempts"] == 2
        # Same resolved spec, so the same checkpoint location: the workload resumes from it.
        configs = [_config(cluster.rayjobs()[n]) for n in ("digits-1", "digits-2")]
        assert configs[0] == configs[1] and configs[0]["spec"]["checkpoint"]["uri"].endswith("/checkpoints")
        assert second["metadata"]["labels"]["trainserve.io/attempt"] == "2"

        await cluster.run_rayjob("digits-2")
        await cluster.succeed_rayjob("digits-2")
        await eventually(lambda: phase(cluster) == "Succeeded")
        assert cluster.status("digits")["attempts"] == 2 and set(cluster.rayjobs()) == {"digits-1", "digits-2"}


async def test_backoff_limit_exhausted_fails_with_the_last_reason(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator)):
        await cluster.create_trainingjob(digits(backoffLimit=0))
        await eventually(lambda: "digits-1" in cluster.rayjobs())
        await cluster.fail_rayjob("digits-1", reason="SubmissionFailed", message="image pull failed")
        await eventually(lambda: phase(cluster) == "Failed")
        failed = cluster.condition("digits", "Failed")
        assert failed["status"] == "True" and failed["reason"] == "SubmissionFailed"
        assert "image pull failed" in failed["message"]
        await asyncio.sleep(1.5)  # a few resyncs: a failed job is never started again
        assert set(cluster.rayjobs()) == {"digits-1"}
        assert any(e["type"] == "Warning" and e["reason"] == "SubmissionFailed" for e in cluster.events("digits"))


async def test_deadline_over_all_attempts(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator)):
        await cluster.create_trainingjob(digits(activeDeadlineSeconds=2, backoffLimit=5))
        rayjob = await eventually(lambda: cluster.rayjobs().get("digits-1"))
        assert rayjob["spec"]["activeDeadlineSeconds"] == 2
        await cluster.run_rayjob("digits-1")
        await eventually(lambda: phase(cluster) == "Failed", timeout=8)
        assert cluster.condition("digits", "Failed")["reason"] == "DeadlineExceeded"
        assert "digits-1" not in cluster.rayjobs()  # the running attempt was stopped
        assert "digits-2" not in cluster.rayjobs()


async def test_ttl_deletes_the_children_and_keeps_the_job(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator)):
        await cluster.create_trainingjob(digits(ttlSecondsAfterFinished=1))
        await eventually(lambda: "digits-1" in cluster.rayjobs())
        await cluster.report_progress("digits", {"model": {"uri": "/m/1", "version": 1}})
        await cluster.succeed_rayjob("digits-1")
        await eventually(lambda: phase(cluster) == "Succeeded")
        await eventually(lambda: not cluster.rayjobs(), timeout=8)
        assert (
            cluster.objects_of("v1/serviceaccounts") == []
            and cluster.objects_of("rbac.authorization.k8s.io/v1/roles") == []
        )
        assert cluster.status("digits")["model"]["uri"] == "/m/1" and phase(cluster) == "Succeeded"
        await eventually(lambda: any(e["reason"] == "CleanedUp" for e in cluster.events("digits")))
        await asyncio.sleep(1.5)
        assert not cluster.rayjobs()  # finished: never started again

    # A fresh operator, with the children gone: still not started again.
    async with running_operator(operator_settings(emulator)):
        await asyncio.sleep(1.5)
        assert not cluster.rayjobs() and phase(cluster) == "Succeeded"


async def test_suspend_tears_down_and_resume_continues(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator)):
        await cluster.create_trainingjob(digits())
        await eventually(lambda: "digits-1" in cluster.rayjobs())
        await cluster.run_rayjob("digits-1")
        await eventually(lambda: phase(cluster) == "Running")

        await cluster.patch_trainingjob("digits", {"spec": {"runPolicy": {"suspend": True}}})
        await eventually(lambda: cluster.rayjobs()["digits-1"]["spec"]["suspend"] is True)
        await cluster.follow_suspend("digits-1")
        await eventually(lambda: cluster.condition("digits", "Suspended").get("reason") == "Suspended")
        assert phase(cluster) == "Suspended" and cluster.condition("digits", "Running")["status"] == "False"

        await cluster.patch_trainingjob("digits", {"spec": {"runPolicy": {"suspend": False}}})
        await eventually(lambda: cluster.rayjobs()["digits-1"]["spec"]["suspend"] is False)
        await cluster.follow_suspend("digits-1")
        await eventually(lambda: phase(cluster) == "Running")
        assert cluster.condition("digits", "Suspended")["reason"] == "Resumed"
        assert set(cluster.rayjobs()) == {"digits-1"}  # the same RayJob, resubmitted by KubeRay: it resumes


async def test_operator_restart_creates_no_duplicate(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator)):
        await cluster.create_trainingjob(digits())
        await eventually(lambda: "digits-1" in cluster.rayjobs())
        await cluster.run_rayjob("digits-1")
        await eventually(lambda: phase(cluster) == "Running")
    # Lose the status (as if the write never landed): the RayJob's attempt label is enough.
    emulator.objects[TRAININGJOBS, "ml", "digits"].patch({"status": {"attempts": None, "rayJobName": None}})
    async with running_operator(operator_settings(emulator)):
        await eventually(lambda: cluster.status("digits").get("attempts") == 1)
        await asyncio.sleep(1.0)
        assert set(cluster.rayjobs()) == {"digits-1"}
        creates = [r for r in emulator.writes() if r.method.value == "POST" and "rayjobs" in str(r.url)]
        assert len(creates) == 1


@pytest.mark.parametrize("status", [409, 500, 429])
async def test_api_errors_are_retried_until_converged(emulator: Emulator, cluster: Cluster, status: int) -> None:
    # The first two RayJob creations and status patches fail (kmock still stores a rejected write, like a
    # server that applied it but whose answer was lost, so a 409 here is a real "already exists").
    emulator[kmock.action.CREATE, kmock.resource(RAYJOBS)][:2] << status
    emulator[kmock.action.UPDATE, kmock.resource(TRAININGJOBS), kmock.subresource("status")][:2] << status
    async with running_operator(operator_settings(emulator)) as operator:
        await cluster.create_trainingjob(digits())
        await eventually(lambda: cluster.condition("digits", "Created").get("reason") == "RayJobCreated")
        await cluster.run_rayjob("digits-1")
        await eventually(lambda: phase(cluster) == "Running")
        assert set(cluster.rayjobs()) == {"digits-1"}
        if status == 409:  # not worth the same call again: the reconcile fails and is retried as a whole
            errors = operator.metrics.sample(
                "trainserve_reconcile_errors_total", {"kind": "TrainingJob", "reason": str(status)}
            )
            assert errors and errors >= 1
        else:  # transient: each call is tried again on its own, the reconcile goes through
            retries = operator.metrics.sample("trainserve_api_retries_total", {"status": str(status)})
            assert retries and retries >= 2


async def test_a_late_answer_does_not_replace_a_newer_rayjob_in_the_cache(emulator: Emulator, cluster: Cluster) -> None:
    """The cache holds what the watch delivered and, written through, the answers to the operator's own calls.
    When the RayJob changes after the server answered a call but before the operator stores that answer, the
    watch delivers the newer RayJob first: the late answer must not replace it, since no later event would."""
    emulator[kmock.action.CREATE, kmock.resource(RAYJOBS)][:1] << 409  # the operator reads the existing RayJob
    answered, release = threading.Event(), threading.Event()
    async with running_operator(operator_settings(emulator)) as operator:
        read_rayjob = operator.api.custom.get_namespaced_custom_object

        def read_rayjob_answering_late(*args: Any, **kwargs: Any) -> Any:
            rayjob = read_rayjob(*args, **kwargs)
            if "rayjobs" not in args:  # the owner's own read before creating: answered at once
                return rayjob
            answered.set()
            release.wait(10)  # the thread holding the answer is not scheduled for a while
            return rayjob

        operator.api.custom.get_namespaced_custom_object = read_rayjob_answering_late
        await cluster.create_trainingjob(digits())
        assert await asyncio.to_thread(answered.wait, 10), "the operator did not read the RayJob"
        await cluster.run_rayjob("digits-1")  # newer than the answer the operator holds
        watched = operator.trainingjobs.store.rayjobs
        await eventually(lambda: watched[("ml", "digits")]["digits-1"]["status"]["jobDeploymentStatus"] == "Running")
        release.set()
        await eventually(lambda: phase(cluster) == "Running", timeout=5)


async def test_kuberay_missing_then_appearing() -> None:
    async with Emulator() as emulator, kmock.Server(emulator):
        register(emulator, kuberay=False)
        cluster = Cluster(emulator)
        async with running_operator(operator_settings(emulator)):
            await cluster.create_trainingjob(digits())
            created = await eventually(
                lambda: (
                    cluster.condition("digits", "Created").get("reason") == "KubeRayMissing"
                    and cluster.condition("digits", "Created")
                )
            )
            assert created["status"] == "False" and "helm install kuberay-operator" in created["message"]
            assert phase(cluster) == "Pending"
            await install_kuberay(emulator)
            await eventually(lambda: "digits-1" in cluster.rayjobs(), timeout=10)
            await eventually(lambda: cluster.condition("digits", "Created").get("reason") == "RayJobCreated")
            await cluster.run_rayjob("digits-1")
            await eventually(lambda: phase(cluster) == "Running", timeout=10)


async def test_bad_trainingjobs_get_a_condition_with_the_field_path(emulator: Emulator, cluster: Cluster) -> None:
    bad = changed(digits(), "spec.resources.workers", 0)
    long_name = changed(digits(), "metadata.name", "a-very-long-trainingjob-name-that-kuberay-refuses")
    async with running_operator(operator_settings(emulator)):
        await cluster.create_trainingjob(changed(bad, "metadata.name", "bad"))
        await cluster.create_trainingjob(long_name)
        await cluster.create_trainingjob(digits())
        valid = await eventually(
            lambda: cluster.condition("bad", "Valid").get("status") == "False" and cluster.condition("bad", "Valid")
        )
        assert valid["reason"] == "InvalidSpec" and "spec.resources.workers" in valid["message"]
        too_long = await eventually(lambda: cluster.condition(long_name["metadata"]["name"], "Valid"))
        assert "metadata.name" in too_long["message"] and "43" in too_long["message"]
        await eventually(lambda: "digits-1" in cluster.rayjobs())  # the good one is not held up
        assert set(cluster.rayjobs()) == {"digits-1"}

        # Changing an immutable field while the job exists is refused with the field named.
        await cluster.patch_trainingjob("digits", {"spec": {"training": {"epochs": 99}}})
        refused = await eventually(
            lambda: (
                cluster.condition("digits", "Valid").get("reason") == "ImmutableFieldChanged"
                and cluster.condition("digits", "Valid")
            )
        )
        assert "spec.training" in refused["message"]
        # Fixing the spec clears it.
        await cluster.patch_trainingjob("bad", {"spec": {"resources": {"workers": 2}}})
        await eventually(lambda: "bad-1" in cluster.rayjobs())
        await eventually(lambda: cluster.condition("bad", "Valid")["status"] == "True")


async def test_no_writes_while_nothing_changes(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator, resync_seconds=0.25)):
        await cluster.create_trainingjob(digits())
        await cluster.create_trainingjob(changed(digits(), "metadata.name", "finished"))
        await cluster.create_trainingjob(
            changed(changed(digits(), "metadata.name", "invalid"), "spec.training.epochs", 0)
        )
        await eventually(lambda: {"digits-1", "finished-1"} <= set(cluster.rayjobs()))
        await cluster.run_rayjob("digits-1")
        await cluster.succeed_rayjob("finished-1")
        await eventually(lambda: phase(cluster) == "Running" and phase(cluster, "finished") == "Succeeded")
        await eventually(lambda: cluster.condition("invalid", "Valid").get("status") == "False")
        await asyncio.sleep(1.0)  # let the last Events and watch echoes settle
        before = emulator.request_count()
        await asyncio.sleep(5.0)  # 20 resyncs of every job
        assert emulator.writes(since=before) == []


def _config(rayjob: dict[str, Any]) -> dict[str, Any]:
    entrypoint = shlex.split(rayjob["spec"]["entrypoint"])
    result: dict[str, Any] = json.loads(entrypoint[entrypoint.index("--config") + 1])
    return result


async def test_a_pod_template_conflict_is_invalid_with_the_field_named(emulator: Emulator, cluster: Cluster) -> None:
    template = {
        "spec": {
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "dshm", "emptyDir": {}}],
            "containers": [{"name": "ray", "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
        }
    }
    async with running_operator(operator_settings(emulator)):
        await cluster.create_trainingjob(changed(digits(), "spec.podTemplate", template))
        valid = await eventually(
            lambda: (
                cluster.condition("digits", "Valid").get("status") == "False" and cluster.condition("digits", "Valid")
            )
        )
        assert valid["reason"] == "InvalidSpec"
        assert "spec.podTemplate.spec.volumes[1].name: 'dshm' is used by trainserve for /dev/shm" in valid["message"]
        assert cluster.condition("digits", "Created")["reason"] == "InvalidSpec"
        assert cluster.rayjobs() == {} and cluster.objects_of("rbac.authorization.k8s.io/v1/roles") == []


async def test_a_users_service_account_gets_the_status_binding_and_none_is_created(
    emulator: Emulator, cluster: Cluster
) -> None:
    document = changed(
        digits(ttlSecondsAfterFinished=1), "spec.podTemplate", {"spec": {"serviceAccountName": "my-identity"}}
    )
    async with running_operator(operator_settings(emulator)):
        since = emulator.request_count()
        await cluster.create_trainingjob(document)
        rayjob = await eventually(lambda: cluster.rayjobs().get("digits-1"))
        binding = cluster.get("rbac.authorization.k8s.io/v1/rolebindings", "digits-trainserve-status")
        assert binding is not None and binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "my-identity", "namespace": "ml"}
        ]
        assert binding["roleRef"]["name"] == "digits-trainserve-status"
        assert cluster.objects_of("v1/serviceaccounts") == []
        cluster_spec = rayjob["spec"]["rayClusterSpec"]
        for group in (cluster_spec["headGroupSpec"], *cluster_spec["workerGroupSpecs"]):
            pod = group["template"]["spec"]
            assert pod["serviceAccountName"] == "my-identity" and pod["automountServiceAccountToken"] is True

        # After the TTL the job's Role and RoleBinding go; the user's account is never touched.
        await cluster.succeed_rayjob("digits-1")
        await eventually(lambda: not cluster.rayjobs(), timeout=8)
        await eventually(lambda: cluster.objects_of("rbac.authorization.k8s.io/v1/rolebindings") == [])
        assert cluster.objects_of("rbac.authorization.k8s.io/v1/roles") == []
        account_calls = [f"{r.method} {r.url}" for r in emulator.writes(since) if "serviceaccounts" in str(r.url)]
        assert account_calls == []


async def test_a_local_path_on_the_cluster_is_refused_and_nothing_runs(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator)):
        await cluster.create_trainingjob(changed(digits(), "spec.output.uri", "./.trainserve/models/digits"))
        valid = await eventually(
            lambda: (
                cluster.condition("digits", "Valid").get("reason") == "LocalPathOnCluster"
                and cluster.condition("digits", "Valid")
            )
        )
        assert valid["status"] == "False" and "spec.output.uri" in valid["message"] and "pvc://" in valid["message"]
        await asyncio.sleep(1.0)
        assert cluster.rayjobs() == {} and phase(cluster) == "Pending"
        assert [e["reason"] for e in cluster.events("digits") if e["type"] == "Warning"] == ["LocalPathOnCluster"]
