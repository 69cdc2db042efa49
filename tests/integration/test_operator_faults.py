"""The operator against the faults an SRE sees: a job re-created under the same name, a deletion missed during a
watch outage, a stored status it cannot read, and an API server answering 500s and 429s."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import kmock
import pytest

from tests.support.documents import example
from tests.support.kubesim import (
    NAMESPACE,
    RAYJOBS,
    RAYSERVICES,
    TRAININGJOBS,
    Cluster,
    Emulator,
    eventually,
    operator_settings,
    running_operator,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


def digits(name: str = "digits") -> dict[str, Any]:
    document = example("digits-trainingjob")
    document["metadata"] = {"name": name}
    return document


def owner_uid(obj: dict[str, Any] | None) -> str | None:
    refs = ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
    return next((ref["uid"] for ref in refs if ref.get("controller")), None)


async def test_recreated_namesake_waits_for_the_old_children_and_never_adopts_them(
    emulator: Emulator, cluster: Cluster
) -> None:
    async with running_operator(operator_settings(emulator)):
        old = await cluster.create_trainingjob(digits())
        await eventually(lambda: "digits-1" in cluster.rayjobs())
        await cluster.delete_trainingjob("digits")  # `kubectl delete -f`: KubeRay's finalizer keeps the RayJob
        new = await cluster.create_trainingjob(digits())  # `kubectl apply -f` at once
        created = await eventually(
            lambda: (
                cluster.condition("digits", "Created").get("reason") == "WaitingForOldObjects"
                and cluster.condition("digits", "Created")
            )
        )
        assert created["status"] == "False" and "still belong to a deleted TrainingJob" in created["message"]
        assert owner_uid(cluster.rayjobs()["digits-1"]) == old["metadata"]["uid"], "the old RayJob is untouched"
        # The Warning Event follows the status write: let it land before counting.
        await eventually(lambda: "WaitingForOldObjects" in [e["reason"] for e in cluster.events("digits")])
        since = emulator.request_count()
        await asyncio.sleep(2.0)
        assert [f"{r.method} {r.url}" for r in emulator.writes(since)] == [], "waiting is quiet: reads only"

        await cluster.collect_garbage()  # the old job's RayJob and access objects go
        await eventually(lambda: owner_uid(cluster.rayjobs().get("digits-1")) == new["metadata"]["uid"])
        await eventually(lambda: cluster.condition("digits", "Created").get("reason") == "RayJobCreated")
        account = cluster.get("v1/serviceaccounts", "digits-trainserve-status")
        assert owner_uid(account) == new["metadata"]["uid"], "the new job's pods get its own ServiceAccount"


async def test_recreated_modelservice_waits_for_the_old_rayservice_and_never_patches_it(
    emulator: Emulator, cluster: Cluster
) -> None:
    document = example("digits-modelservice")
    document["spec"]["model"] = {"uri": "s3://models/digits/1"}
    async with running_operator(operator_settings(emulator)):
        old = await cluster.create_modelservice(document)
        old_rayservice = await eventually(lambda: cluster.get(RAYSERVICES, "digits"))
        await cluster.delete_modelservice("digits")
        document["spec"]["model"] = {"uri": "s3://models/digits/2"}
        new = await cluster.create_modelservice(document)
        await eventually(lambda: cluster.service_condition("digits", "Ready").get("reason") == "WaitingForOldObjects")
        await eventually(lambda: "WaitingForOldObjects" in [e["reason"] for e in cluster.events("digits")])
        rayservice = cluster.get(RAYSERVICES, "digits")
        assert owner_uid(rayservice) == old["metadata"]["uid"]
        assert rayservice["spec"] == old_rayservice["spec"], "the namesake's RayService is not patched"
        since = emulator.request_count()
        await asyncio.sleep(2.0)
        assert [f"{r.method} {r.url}" for r in emulator.writes(since)] == [], "waiting is quiet: reads only"

        await cluster.collect_garbage()
        await eventually(lambda: owner_uid(cluster.get(RAYSERVICES, "digits")) == new["metadata"]["uid"], timeout=15)
        assert "s3://models/digits/2" in cluster.get(RAYSERVICES, "digits")["spec"]["serveConfigV2"]


async def test_a_job_deleted_while_the_watch_was_down_gets_no_new_children(
    emulator: Emulator, cluster: Cluster
) -> None:
    async with running_operator(operator_settings(emulator)):
        await cluster.create_trainingjob(digits())
        await eventually(lambda: "digits-1" in cluster.rayjobs())
        # Deleted, and its RayJob collected, with no watch event (as after a 410 and a relist).
        del emulator.objects[TRAININGJOBS, NAMESPACE, "digits"]
        del emulator.objects[RAYJOBS, NAMESPACE, "digits-1"]
        since = emulator.request_count()
        await asyncio.sleep(2.5)  # several resyncs
        creates = [r for r in emulator.writes(since) if r.method.value == "POST" and "rayjobs" in str(r.url)]
        assert creates == [] and cluster.rayjobs() == {}


async def test_an_unreadable_stored_status_is_repaired_once(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator)) as operator:
        await cluster.create_trainingjob(digits())
        await eventually(lambda: "digits-1" in cluster.rayjobs())
        await cluster.run_rayjob("digits-1")
        await eventually(lambda: cluster.status("digits").get("phase") == "Running")
        # A field written by another version: the operator cannot parse it.
        await cluster.report_progress("digits", {"progress": "epoch three", "attempts": "one"})
        await eventually(lambda: cluster.status("digits").get("attempts") == 1)
        assert "progress" not in cluster.status("digits")
        # The Warning Event follows the status write: let it land before counting.
        await eventually(lambda: "StatusRepaired" in [e["reason"] for e in cluster.events("digits")])
        repaired = [e for e in cluster.events("digits") if e["reason"] == "StatusRepaired"]
        assert len(repaired) == 1 and "status.attempts" in repaired[0]["message"]
        assert repaired[0]["type"] == "Warning"
        since = emulator.request_count()
        await asyncio.sleep(2.0)
        assert emulator.writes(since) == [], "no rewrite loop"
        assert operator.metrics.sample("trainserve_trainingjobs", {"phase": "Running"}) == 1


#: A reconcile that fails several times in a row is retried after 1, 2, 4, ... s (up to 60 s): the bound leaves
#: room for the longest delay on a busy machine. (The misses that set it came from the emulator's dispatch, since
#: made linear: tests/support/kmock_membership.py.)
CONVERGED_WITHIN = 90


async def test_many_jobs_converge_under_api_faults(emulator: Emulator, cluster: Cluster) -> None:
    faults = random.Random(15)

    def fault(request: kmock.Request) -> int | None:
        roll = faults.random()
        return 500 if roll < 0.20 else 429 if roll < 0.25 else None

    count = 20
    for index in range(count):
        await cluster.create_trainingjob(digits(f"job-{index}"))
    emulator.faults = fault
    # Production backoff (1 s doubling to 60 s): convergence must come from retrying each call, not the queue.
    settings = operator_settings(
        emulator, retry_base_seconds=1.0, retry_max_seconds=60.0, resync_seconds=300, workers=4
    )
    started = time.monotonic()
    async with running_operator(settings) as operator:
        await eventually(
            lambda: all(
                cluster.condition(f"job-{i}", "Created").get("reason") == "RayJobCreated" for i in range(count)
            ),
            timeout=CONVERGED_WITHIN,
        )
        elapsed = time.monotonic() - started
        assert len(cluster.rayjobs()) == count, "one RayJob each, no duplicates"
        assert all(
            owner_uid(r) == cluster.trainingjob(r["metadata"]["name"][:-2])["metadata"]["uid"]
            for r in cluster.rayjobs().values()
        )
        retried = sum(
            operator.metrics.sample("trainserve_api_retries_total", {"status": s}) or 0 for s in ("500", "429")
        )
        assert retried > 0
    assert elapsed < CONVERGED_WITHIN


async def test_the_operator_outlives_a_list_that_fails_many_times_in_a_row(
    emulator: Emulator, cluster: Cluster
) -> None:
    failed_lists = 0

    def fault(request: kmock.Request) -> int | None:
        nonlocal failed_lists
        kopf_listing = (
            request.action == kmock.action.LIST
            and str(request.url.path).endswith("/trainingjobs")
            and request.headers.get("User-Agent", "").startswith("kopf/")
        )
        if kopf_listing and failed_lists < 8:  # more failures in a row than a fixed retry budget allows
            failed_lists += 1
            return 500
        return None

    emulator.faults = fault
    async with running_operator(operator_settings(emulator, retry_base_seconds=0.05, retry_max_seconds=0.2)):
        await eventually(lambda: failed_lists == 8, timeout=20)
        await cluster.create_trainingjob(digits())  # seen through the watch that finally started
        await eventually(lambda: "digits-1" in cluster.rayjobs(), timeout=20)
