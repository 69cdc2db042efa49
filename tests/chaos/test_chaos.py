"""The operator as its own process (`trainserve run`) against an emulated API server that fails on purpose:
500s before and after applying a write, 429s with Retry-After, watch cuts and a watch outage, SIGKILLs at random
moments; and objects re-created under the same name, deleted while being created, stored with an invalid spec
or status. Whatever happens in between, the end state is right and the operator is quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kmock
import pytest
import pytest_asyncio

from tests.support.documents import changed, example
from tests.support.kubesim import (
    MODELSERVICES,
    RAYJOBS,
    RAYSERVICES,
    TRAININGJOBS,
    Cluster,
    Emulator,
    eventually,
    register,
)
from tests.support.operatorprocess import OperatorProcess, write_kubeconfig
from trainserve_workloads.lifecycle import free_port

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(240)]
SEEDS = [15, 23]
#: After the faults stop, an object whose reconcile failed many times in a row may wait up to the operator's
#: longest retry delay (60 s) before its next try: the bound leaves room for that on a busy machine.
CONVERGED_WITHIN = 120


@pytest_asyncio.fixture()
async def emulator() -> AsyncIterator[Emulator]:
    async with Emulator() as api, kmock.Server(api):
        register(api)
        yield api


@pytest_asyncio.fixture()
async def operator(emulator: Emulator, tmp_path: Path) -> AsyncIterator[OperatorProcess]:
    process = OperatorProcess(
        write_kubeconfig(tmp_path / "kubeconfig", str(emulator.url)), free_port(), tmp_path / "operator.log"
    )
    process.start()
    yield process
    await process.stop_serving()


class Scrapes:
    """Scrapes the operator's /metrics every 0.2 s: every answer must be a 200 (no answer while it is down)."""

    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.statuses: list[int] = []

    async def run(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                try:
                    async with session.get(self.url) as response:
                        self.statuses.append(response.status)
                except (aiohttp.ClientError, TimeoutError):
                    pass  # not listening (killed, starting)
                await asyncio.sleep(0.2)


async def play_kuberay(cluster: Cluster) -> None:
    """What KubeRay does, quickly: every RayJob starts running, every RayService becomes ready. A status write
    that fails (its connection dropped, the object deleted meanwhile: a 404) is tried again on the next round, as
    KubeRay's reconciler would, without holding up the other objects."""
    while True:
        for name, rayjob in cluster.rayjobs().items():
            if not rayjob.get("status"):
                with contextlib.suppress(aiohttp.ClientError, AssertionError):
                    await cluster.run_rayjob(name)
        for name in cluster.objects_of(RAYSERVICES):
            rayservice = cluster.get(RAYSERVICES, name) or {}
            status = rayservice.get("status") or {}
            if status.get("observedGeneration") != rayservice.get("metadata", {}).get("generation"):
                with contextlib.suppress(aiohttp.ClientError, AssertionError):
                    await cluster.rayservice_ready(name)
        await asyncio.sleep(0.2)


def job(name: str) -> dict[str, Any]:
    return changed(example("digits-trainingjob"), "metadata.name", name)


def service(name: str) -> dict[str, Any]:
    document = changed(example("digits-modelservice"), "metadata.name", name)
    document["spec"]["model"] = {"uri": f"s3://models/{name}/1"}
    return document


def uid(obj: dict[str, Any] | None) -> str | None:
    return ((obj or {}).get("metadata") or {}).get("uid")


def owner(obj: dict[str, Any]) -> str | None:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((ref["uid"] for ref in refs if ref.get("controller")), None)


@pytest.mark.parametrize("seed", SEEDS)
async def test_the_operator_converges_through_faults_and_kills(
    emulator: Emulator, operator: OperatorProcess, seed: int
) -> None:
    rng = random.Random(seed)
    cluster = Cluster(emulator)
    emulator.faults = lambda _: 500 if rng.random() < 0.10 else 429 if rng.random() < 0.05 else None
    emulator.faults_after = lambda _: 500 if rng.random() < 0.05 else None
    scrapes = Scrapes(operator.metrics_port)
    background = [asyncio.create_task(scrapes.run()), asyncio.create_task(play_kuberay(cluster))]
    try:
        await _burst(emulator, cluster, operator, rng)
        emulator.faults = emulator.faults_after = None
        await _converged(emulator, cluster)
        await _settled(emulator)  # the last Events follow the status writes the convergence check saw
        since = emulator.request_count()
        await asyncio.sleep(3.0)
        writes = [f"{r.method} {r.url} {r.data}" for r in emulator.writes(since)]
        assert writes == [], "a converged operator is quiet"
    finally:
        died = [task.exception() for task in background if task.done() and not task.cancelled()]
        for task in background:
            task.cancel()
    assert not died, f"a background task of the test died: {died}"
    assert operator.kills == 3 and operator.alive()
    assert scrapes.statuses and set(scrapes.statuses) == {200}, "/metrics answers 200 whenever it answers"


async def _burst(emulator: Emulator, cluster: Cluster, operator: OperatorProcess, rng: random.Random) -> None:
    """Creates, deletes and breaks objects while the API fails, watches drop and the operator is killed."""
    kill_after = sorted(rng.sample(range(24), 3))
    for index in range(24):
        await cluster.create_trainingjob(job(f"job-{index}"))
        if index % 6 == 0:
            await cluster.create_modelservice(service(f"svc-{index}"))
        if index in kill_after:
            operator.kill()
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            operator.start()
        if index % 8 == 3:
            emulator.cut_watches()
        await asyncio.sleep(rng.uniform(0.0, 0.3))
    # Deleted and re-created under the same name at once (`kubectl delete -f && kubectl apply -f`).
    for name in ("job-1", "job-2"):
        await cluster.delete_trainingjob(name)
        await cluster.create_trainingjob(job(name))
    await cluster.delete_modelservice("svc-0")
    await cluster.create_modelservice(service("svc-0"))
    # Deleted while being created.
    await cluster.create_trainingjob(job("brief"))
    await cluster.delete_trainingjob("brief")
    # Stored under an older, looser schema: an invalid spec, an unreadable status.
    bad = job("bad-spec")
    bad["spec"]["resources"]["workers"] = 0
    await cluster.create_trainingjob(bad)
    await cluster.report_progress("job-7", {"attempts": "one", "progress": "epoch three"})
    # A watch outage: deletions meanwhile send no event; the garbage collector removes their children.
    emulator.watch_down = True
    emulator.cut_watches()
    for name in ("job-10", "job-11"):
        await cluster.delete_trainingjob(name)
    await asyncio.sleep(3.0)
    await cluster.collect_garbage()
    emulator.watch_down = False


async def _settled(emulator: Emulator, timeout: float = 15.0) -> None:
    """Waits for a second without writes."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        since = emulator.request_count()
        await asyncio.sleep(1.0)
        if not emulator.writes(since):
            return
    raise AssertionError(f"still writing after {timeout}s")


async def _converged(emulator: Emulator, cluster: Cluster) -> None:
    """Every live object is right; nothing belongs to anyone who is gone (the last collection ran before)."""
    live_jobs = {name: cluster.trainingjob(name) for name in cluster.objects_of(TRAININGJOBS)}
    assert "job-10" not in live_jobs and "brief" not in live_jobs
    valid = [name for name in live_jobs if name != "bad-spec"]

    def jobs_right() -> bool:
        rayjobs = cluster.rayjobs()
        for name in valid:
            mine = [r for r in rayjobs.values() if owner(r) == uid(cluster.trainingjob(name))]
            assert [r["metadata"]["name"] for r in mine] == [f"{name}-1"], f"{name}: {sorted(rayjobs)}"
            assert cluster.status(name).get("phase") == "Running", f"{name}: {cluster.status(name)}"
        return True

    await eventually(jobs_right, timeout=CONVERGED_WITHIN, message="every TrainingJob runs with exactly its own RayJob")
    assert cluster.condition("bad-spec", "Valid")["reason"] == "InvalidSpec"
    assert "spec.resources.workers" in cluster.condition("bad-spec", "Valid")["message"]
    assert cluster.status("job-7").get("attempts") == 1
    assert any(e["reason"] == "StatusRepaired" for e in cluster.events("job-7"))
    live = {uid(cluster.trainingjob(n)) for n in cluster.objects_of(TRAININGJOBS)}
    live |= {uid(cluster.get(MODELSERVICES, n)) for n in cluster.objects_of(MODELSERVICES)}
    orphans = [n for n in cluster.objects_of(RAYJOBS) if owner(cluster.rayjobs()[n]) not in live]
    assert orphans == [], "no child of a deleted owner after the relist"

    def services_right() -> bool:
        for name in cluster.objects_of(MODELSERVICES):
            rayservice = cluster.get(RAYSERVICES, name)
            assert owner(rayservice or {}) == uid(cluster.get(MODELSERVICES, name)), name
            assert cluster.service_condition(name, "Ready").get("status") == "True", name
        return True

    await eventually(services_right, timeout=CONVERGED_WITHIN, message="every ModelService ready on its own RayService")


async def test_sigterm_stops_the_operator_cleanly(emulator: Emulator, operator: OperatorProcess) -> None:
    """What a pod's termination does: the operator finishes, exits 0 and frees its port within the grace period."""
    cluster = Cluster(emulator)
    await cluster.create_trainingjob(job("digits"))
    await eventually(lambda: "digits-1" in cluster.rayjobs(), timeout=60)
    assert operator.process is not None
    started = asyncio.get_running_loop().time()
    operator.process.terminate()
    code = await asyncio.to_thread(operator.process.wait, 30)
    assert code == 0, operator.log.read_text()[-3000:]
    assert asyncio.get_running_loop().time() - started < 30  # a pod's default grace period
    with socket.socket() as probe:  # the metrics port is free again
        probe.bind(("127.0.0.1", operator.metrics_port))
