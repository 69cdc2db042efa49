"""What the chart promises with `replicaCount: 2`: the operator run the way the chart runs it (mandatory Kopf
peering named after the release, Kopf's health endpoint for the probes) elects one leader; the other replica
stands by and takes over when the leader leaves."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp
import kmock
import pytest

from tests.packaging.scenario import PEERING, register_peering
from tests.support.documents import changed, example
from tests.support.kubesim import Cluster, Emulator, eventually, operator_settings, register
from trainserve.runner import Operator
from trainserve.settings import OperatorSettings
from trainserve_workloads.lifecycle import free_port

pytestmark = pytest.mark.timeout(90)


def job(name: str) -> dict[str, Any]:
    return changed(example("digits-trainingjob"), "metadata.name", name)


async def healthz(port: int) -> int:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
        return response.status


class Replica:
    """One operator replica on its own thread and event loop, like a pod: Kopf cancels every task of its loop
    when it stops, so two operators cannot share one loop."""

    def __init__(self, settings: OperatorSettings):
        self.settings = settings
        self.operator: Operator | None = None
        self.stop_flag, self.ready_flag = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="replica", daemon=True)

    def _main(self) -> None:
        try:
            self.operator = Operator(self.settings)
            asyncio.run(self.operator.run(stop_flag=self.stop_flag, ready_flag=self.ready_flag))
        except BaseException as err:  # reported by stop()
            self.error = err

    async def start(self) -> Replica:
        self.thread.start()
        assert await asyncio.to_thread(self.ready_flag.wait, 20), "the replica did not start"
        return self

    async def stop(self) -> None:
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 20)
        assert not self.thread.is_alive(), "the replica did not stop"
        if self.error is not None:
            raise self.error

    @property
    def reconciles(self) -> float:
        assert self.operator is not None
        return (
            self.operator.metrics.sample("trainserve_reconcile_duration_seconds_count", {"kind": "TrainingJob"}) or 0.0
        )


@pytest.mark.asyncio
async def test_the_oldest_replica_leads_and_a_standby_takes_over() -> None:
    async with Emulator() as emulator, kmock.Server(emulator):
        register(emulator)
        register_peering(emulator)
        cluster = Cluster(emulator)
        ports = free_port(), free_port()

        def settings(port: int) -> OperatorSettings:
            endpoint = f"http://127.0.0.1:{port}/healthz"
            return operator_settings(emulator, standalone=False, peering_name=PEERING, liveness_endpoint=endpoint)

        leader = await Replica(settings(ports[0])).start()
        standby: Replica | None = None
        try:
            await cluster.create_trainingjob(job("first"))
            await eventually(lambda: "first-1" in cluster.rayjobs())
            standby = await Replica(settings(ports[1])).start()
            await cluster.create_trainingjob(job("second"))
            await eventually(lambda: "second-1" in cluster.rayjobs())
            await asyncio.sleep(1.5)  # several resyncs
            assert leader.reconciles > 0 and standby.reconciles == 0
            # Both answer the probes: a standby is alive and ready, only paused.
            assert await healthz(ports[0]) == 200 and await healthz(ports[1]) == 200

            await leader.stop()  # a clean shutdown leaves the peering at once: the standby takes over
            await cluster.create_trainingjob(job("third"))
            await eventually(lambda: "third-1" in cluster.rayjobs(), timeout=20)
            assert standby.reconciles > 0
            assert set(cluster.rayjobs()) == {"first-1", "second-1", "third-1"}
        finally:
            for replica in (leader, standby):
                if replica is not None and replica.thread.is_alive():
                    await replica.stop()


def test_peering_arguments() -> None:
    """Mandatory peering with a name; an older replica gets a higher priority (it leads); a fixed priority wins."""
    from trainserve.runner import peering

    base = OperatorSettings(all_namespaces=True, peering_name=PEERING)
    first, second = peering(base), peering(base)
    assert first["peering_name"] == PEERING and first["priority"] > second["priority"]
    assert peering(base.model_copy(update={"peering_priority": 7}))["priority"] == 7
    assert peering(base.model_copy(update={"standalone": True})) == {}
    assert peering(OperatorSettings(all_namespaces=True)) == {}  # Kopf's optional auto-detected peering


def test_run_flags_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import trainserve.runner
    from trainserve.cli import main

    seen: list[OperatorSettings] = []
    monkeypatch.setattr(trainserve.runner, "run", lambda settings, verbose=False: seen.append(settings))
    main(["run", "-A", "--peering", "ops", "--liveness", "http://0.0.0.0:8081/healthz"])
    assert seen[0].peering_name == "ops" and seen[0].liveness_endpoint == "http://0.0.0.0:8081/healthz"
    monkeypatch.setenv("TRAINSERVE_PEERING_NAME", "from-env")
    monkeypatch.setenv("TRAINSERVE_PEERING_PRIORITY", "5")
    main(["run", "-n", "ml"])
    assert (seen[1].peering_name, seen[1].peering_priority, seen[1].namespaces) == ("from-env", 5, ("ml",))
