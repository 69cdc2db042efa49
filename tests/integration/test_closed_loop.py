"""The real operator against an emulated API server and a simulated KubeRay: ``fromTrainingJob.rollout: canary``.

Each newer version the TrainingJob produces enters as a canary and earns its traffic on live figures (fed by
the test), or is rolled back and remembered; the served model carries its lineage."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.documents import changed, example
from tests.support.kubesim import Cluster, Emulator, eventually, operator_settings, running_operator
from tests.support.servestats import FakeServeStats
from trainserve.runner import Operator

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(180)]

POLICY = {"stepPercent": 50, "intervalSeconds": 5, "minRequests": 20, "maxErrorRate": 0.05}


def closed_loop_service() -> dict[str, Any]:
    document = changed(example("digits-modelservice"), "spec.model.fromTrainingJob.rollout", "canary")
    return changed(document, "spec.canary", {"trafficPercent": 50, "autoPromote": POLICY})


def uri(version: int) -> str:
    return f"s3://models/digits/{version}"


async def train_version(cluster: Cluster, version: int, rerun: bool = True) -> None:
    """A (re-)run of the digits TrainingJob that ends with model ``version``, as its workload reports it."""
    if rerun:
        await cluster.delete_trainingjob("digits")
        await cluster.collect_garbage("digits-1")
        await cluster.create_trainingjob(example("digits-trainingjob"))
    await eventually(lambda: "digits-1" in cluster.rayjobs())
    await cluster.run_rayjob("digits-1")
    model = {
        "uri": uri(version),
        "version": version,
        "metrics": {"val_accuracy": 0.97},
        "datasetUri": "builtin:digits",
        "datasetFingerprint": f"sha256-of-data-{version}",
        "resumedFrom": "s3://models/digits/checkpoints/epoch-000003",
        "specHash": "0123456789abcdef",
    }
    await cluster.report_progress("digits", {"model": model})
    await cluster.succeed_rayjob("digits-1")
    await eventually(lambda: cluster.status("digits").get("phase") == "Succeeded")


def canary_share(cluster: Cluster) -> tuple[int | None, int | None]:
    canary = cluster.served("digits").get("user_config", {}).get("canary") or {}
    return canary.get("version"), canary.get("trafficPercent")


def canary_has_served(fake: FakeServeStats, version: int) -> None:
    """The figures the canary ``version``'s step starts from: set before the version exists, so that the operator's
    baseline is these however soon it takes it."""
    fake.serve(str(version), uri(version), "canary", requests=5)


async def step_begins(operator: Operator, version: int) -> None:
    """The canary ``version`` runs and the operator took the figures its step starts from."""
    baselines = operator.modelservices.canary.baselines
    await eventually(lambda: any(b.uri == uri(version) for b in baselines.values()), timeout=30)


async def promoted(cluster: Cluster, operator: Operator, fake: FakeServeStats, version: int) -> None:
    await eventually(lambda: canary_share(cluster) == (version, 50))
    await step_begins(operator, version)
    fake.serve(str(version), uri(version), "canary", requests=105)  # 100 healthy requests in the step
    await eventually(lambda: cluster.served("digits")["user_config"]["primary"]["version"] == version, timeout=20)
    assert canary_share(cluster) == (None, None)
    await cluster.rayservice_ready("digits")
    await eventually(lambda: cluster.service_status("digits").get("model", {}).get("version") == version)


def event_messages(cluster: Cluster, reason: str) -> list[str]:
    return [e["message"] for e in cluster.events("digits") if e["reason"] == reason]


async def test_new_versions_earn_their_traffic_and_a_rejected_one_is_not_tried_again(
    emulator: Emulator, cluster: Cluster, stats: tuple[FakeServeStats, str]
) -> None:
    fake, url = stats
    async with running_operator(operator_settings(emulator, serve_stats_url=url)) as operator:
        await cluster.create_trainingjob(example("digits-trainingjob"))
        await cluster.create_modelservice(closed_loop_service())
        await train_version(cluster, 1, rerun=False)
        # The first version has nothing to be compared with: it serves at once.
        await eventually(lambda: cluster.served("digits").get("user_config", {}).get("primary", {}).get("version") == 1)
        assert canary_share(cluster) == (None, None)
        await cluster.rayservice_ready("digits")
        await eventually(lambda: cluster.service_status("digits").get("model", {}).get("version") == 1)

        for version in (2, 3):
            canary_has_served(fake, version)
            await train_version(cluster, version)
            await promoted(cluster, operator, fake, version)
        promotions = await eventually(
            lambda: [m for m in event_messages(cluster, "CanaryPromoted") if "promoted version 3 over version 2" in m]
        )
        assert all("105 requests" not in m for m in promotions), promotions
        lineage = cluster.service_status("digits")["model"]["lineage"]
        job = cluster.trainingjob("digits")
        assert job is not None
        assert lineage == {
            "trainingJob": "digits",
            "trainingJobUid": job["metadata"]["uid"],
            "attempt": 1,
            "datasetUri": "builtin:digits",
            "datasetFingerprint": "sha256-of-data-3",
            "resumedFrom": "s3://models/digits/checkpoints/epoch-000003",
            "specHash": "0123456789abcdef",
            "metrics": {"val_accuracy": 0.97},
        }

        # Version 4 fails on live errors: rolled back, remembered, and version 3 keeps all the traffic.
        canary_has_served(fake, 4)
        await train_version(cluster, 4)
        await eventually(lambda: canary_share(cluster) == (4, 50))
        await step_begins(operator, 4)
        fake.serve("4", uri(4), "canary", requests=105, errors=30)
        rejected = await eventually(
            lambda: cluster.service_status("digits").get("model", {}).get("rejectedVersions"), timeout=20
        )
        assert [(r["version"], r["uri"]) for r in rejected] == [(4, uri(4))]
        assert "error rate 30.00% > 5.00%" in rejected[0]["figures"]
        await eventually(lambda: canary_share(cluster) == (None, None))
        assert cluster.served("digits")["user_config"]["primary"]["version"] == 3
        assert cluster.service_condition("digits", "Canary")["reason"] == "RolledBack"
        warnings = await eventually(lambda: event_messages(cluster, "CanaryRolledBack"))
        assert "rolled back version 4 at 50%, version 3 keeps serving: error rate 30.00%" in warnings[0]

        # Nothing changes while version 4 is the newest: several resyncs, not one write.
        await eventually(lambda: cluster.service_status("digits").get("canary") is None)
        before = emulator.request_count()
        await asyncio.sleep(2.5)
        assert [f"{r.method} {r.url} {r.data}" for r in emulator.writes(since=before)] == []

        # The next newer version is tried.
        await train_version(cluster, 5)
        await eventually(lambda: canary_share(cluster) == (5, 50))
        await eventually(lambda: cluster.service_status("digits").get("canary", {}).get("state") == "Progressing")
        assert [r["version"] for r in cluster.service_status("digits")["model"]["rejectedVersions"]] == [4]
        started = await eventually(lambda: event_messages(cluster, "CanaryStarted"))
        assert "canary version 2 takes 50% beside version 1" in started
        await eventually(
            lambda: "canary version 5 takes 50% beside version 3" in event_messages(cluster, "CanaryStarted")
        )
