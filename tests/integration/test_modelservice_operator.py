"""The real operator against an emulated API server and a simulated KubeRay, for ModelServices: what a user
sees in status, RayServices and Events, from the train-to-serve link to canary promotion."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from tests.support.documents import changed, example
from tests.support.kubesim import (
    MODELSERVICES,
    NETWORKPOLICIES,
    RAYSERVICES,
    Cluster,
    Emulator,
    eventually,
    operator_settings,
    running_operator,
)
from tests.support.schemas import kuberay_schema, schema_errors
from tests.support.servestats import FakeServeStats
from trainserve.runner import Operator

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(90)]


def from_uri(uri: str = "s3://models/digits/1", **spec: Any) -> dict[str, Any]:
    document = changed(example("digits-modelservice"), "spec.model", {"uri": uri})
    for key, value in spec.items():
        document = changed(document, f"spec.{key}", value)
    return document


def ready(cluster: Cluster, name: str = "digits") -> bool:
    return cluster.service_condition(name, "Ready").get("status") == "True"


async def test_uri_to_ready_with_a_valid_rayservice(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator)) as operator:
        await cluster.create_modelservice(from_uri())
        rayservice = await eventually(lambda: cluster.get(RAYSERVICES, "digits"))
        assert schema_errors(rayservice, kuberay_schema("RayService")) == []
        ServeDeploySchema.model_validate(yaml.safe_load(rayservice["spec"]["serveConfigV2"]))
        owner = rayservice["metadata"]["ownerReferences"][0]
        assert (
            owner["kind"] == "ModelService" and owner["uid"] == cluster.get(MODELSERVICES, "digits")["metadata"]["uid"]
        )
        policy = await eventually(lambda: cluster.get(NETWORKPOLICIES, "digits-ray"))
        assert policy["metadata"]["ownerReferences"][0]["uid"] == owner["uid"]
        await eventually(lambda: cluster.service_condition("digits", "Ready").get("reason") == "Deploying")

        await cluster.rayservice_ready("digits")
        await eventually(lambda: ready(cluster))
        status = cluster.service_status("digits")
        assert status["url"] == "http://digits-serve-svc.ml.svc.cluster.local:8000"
        assert status["endpoints"]["v2"].endswith("/v2/models/digits/infer")
        assert status["model"] == {"uri": "s3://models/digits/1", "version": 1}
        assert status["replicas"] == status["readyReplicas"] == 1
        assert status["selector"].startswith("trainserve.io/modelservice=digits")
        assert cluster.service_condition("digits", "ModelLoaded")["status"] == "True"
        await eventually(lambda: operator.metrics.sample("trainserve_modelservices", {"ready": "true"}) == 1)
        # The Events of a change follow its status write.
        await eventually(lambda: {"Serving", "Loaded"} <= {e["reason"] for e in cluster.events("digits")})

        # Quiet when nothing changes: several resyncs, not one write.
        before = emulator.request_count()
        await asyncio.sleep(2.5)
        assert [f"{r.method} {r.url} {r.data}" for r in emulator.writes(since=before)] == []

        await cluster.rayservice_ready("digits", ready=False)
        await eventually(lambda: cluster.service_condition("digits", "Ready").get("reason") == "ApplicationFailed")
        assert "cannot load the model" in cluster.service_condition("digits", "Ready")["message"]
        await eventually(lambda: "ApplicationFailed" in [e["reason"] for e in cluster.events("digits")])


async def test_from_trainingjob_waits_serves_then_rolls_to_a_newer_version(
    emulator: Emulator, cluster: Cluster
) -> None:
    async with running_operator(operator_settings(emulator)):
        await cluster.create_trainingjob(example("digits-trainingjob"))
        await cluster.create_modelservice(example("digits-modelservice"))
        # The service may see itself before the job ("does not exist"), then it names the job's phase.
        await eventually(
            lambda: "TrainingJob 'digits' is Pending" in cluster.service_condition("digits", "Ready").get("message", "")
        )
        assert cluster.service_condition("digits", "Ready")["reason"] == "WaitingForModel"
        assert cluster.get(RAYSERVICES, "digits") is None

        await finish_training(cluster, version=1, accuracy=0.97)
        await eventually(lambda: cluster.served("digits").get("user_config", {}).get("primary", {}).get("version") == 1)
        await cluster.rayservice_ready("digits")
        await eventually(lambda: cluster.service_status("digits").get("model", {}).get("version") == 1)
        created = cluster.get(RAYSERVICES, "digits")["metadata"]["uid"]

        # A new run of the job (deleted and created again): version 1 keeps serving while it trains.
        await cluster.delete_trainingjob("digits")
        await cluster.collect_garbage("digits-1")
        await cluster.create_trainingjob(example("digits-trainingjob"))
        await eventually(lambda: "is Pending" in cluster.service_condition("digits", "ModelLoaded").get("message", ""))
        assert ready(cluster) and cluster.served("digits")["user_config"]["primary"]["version"] == 1

        await finish_training(cluster, version=2, accuracy=0.98)
        await eventually(lambda: cluster.served("digits")["user_config"]["primary"]["version"] == 2)
        rayservice = cluster.get(RAYSERVICES, "digits")
        assert rayservice["metadata"]["uid"] == created, "the RayService is updated in place, not replaced"
        await cluster.rayservice_ready("digits")
        await eventually(lambda: cluster.service_status("digits").get("model", {}).get("version") == 2)


async def test_a_min_metrics_miss_is_reported(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator)):
        await cluster.create_trainingjob(example("digits-trainingjob"))
        await cluster.create_modelservice(example("digits-modelservice"))
        await finish_training(cluster, version=1, accuracy=0.5)
        await eventually(
            lambda: "val_accuracy 0.5 < 0.9" in cluster.service_condition("digits", "ModelLoaded")["message"]
        )
        assert cluster.service_condition("digits", "Ready")["reason"] == "WaitingForModel"
        assert cluster.get(RAYSERVICES, "digits") is None


async def finish_training(cluster: Cluster, version: int, accuracy: float) -> None:
    """What the training workload and KubeRay do for one run of the digits TrainingJob."""
    rayjob = await eventually(lambda: [n for n in cluster.rayjobs() if n.startswith("digits-")])
    name = sorted(rayjob)[-1]
    await cluster.run_rayjob(name)
    model = {"uri": f"s3://models/digits/{version}", "version": version, "metrics": {"val_accuracy": accuracy}}
    await cluster.report_progress("digits", {"model": model})
    await cluster.succeed_rayjob(name)
    await eventually(lambda: cluster.status("digits").get("phase") == "Succeeded")


async def test_kubectl_scale_changes_the_serve_config(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator)):
        await cluster.create_modelservice(from_uri())
        await eventually(lambda: cluster.served("digits").get("num_replicas") == 1)
        await cluster.patch_modelservice("digits", {"spec": {"replicas": 3}}, subresource="scale")
        await eventually(lambda: cluster.served("digits").get("num_replicas") == 3)
        group = cluster.get(RAYSERVICES, "digits")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
        assert group["maxReplicas"] == 2  # 0.5 CPU replicas, two per worker pod
        await eventually(lambda: cluster.service_status("digits").get("replicas") == 3)


def canary_service(max_error_rate: float = 0.05) -> dict[str, Any]:
    canary = {
        "model": {"uri": "s3://models/digits/2"},
        "trafficPercent": 50,
        "autoPromote": {"stepPercent": 50, "intervalSeconds": 5, "minRequests": 20, "maxErrorRate": max_error_rate},
    }
    return from_uri(canary=canary)


async def test_canary_is_promoted_on_healthy_figures(
    emulator: Emulator, cluster: Cluster, stats: tuple[FakeServeStats, str]
) -> None:
    fake, url = stats
    async with running_operator(operator_settings(emulator, serve_stats_url=url)) as operator:
        fake.serve("2", "s3://models/digits/2", "canary", requests=5)
        await cluster.create_modelservice(canary_service())
        await eventually(
            lambda: cluster.served("digits").get("user_config", {}).get("canary", {}).get("trafficPercent") == 50
        )
        await eventually(lambda: cluster.service_status("digits")["canary"]["state"] == "Progressing")
        await asyncio.sleep(1)
        fake.serve("2", "s3://models/digits/2", "canary", requests=105)  # 100 healthy requests in the step
        await eventually(
            lambda: (
                "promoted" in (cluster.service_status("digits").get("promoted") or {}).get("uri", "")
                or cluster.service_status("digits").get("promoted")
            ),
            timeout=15,
        )
        server = cluster.served("digits")
        assert server["user_config"]["primary"]["uri"] == "s3://models/digits/2"
        assert server["user_config"].get("canary") is None
        assert "canary" not in cluster.service_status("digits")
        await eventually(lambda: "CanaryPromoted" in [e["reason"] for e in cluster.events("digits")])
        assert operator.metrics.sample("trainserve_canary_promotions_total", {"result": "promoted"}) == 1


async def test_canary_is_rolled_back_on_errors(
    emulator: Emulator, cluster: Cluster, stats: tuple[FakeServeStats, str]
) -> None:
    fake, url = stats
    async with running_operator(operator_settings(emulator, serve_stats_url=url)) as operator:
        fake.serve("2", "s3://models/digits/2", "canary", requests=0)
        await cluster.create_modelservice(canary_service())
        await eventually(lambda: cluster.service_status("digits").get("canary", {}).get("state") == "Progressing")
        await asyncio.sleep(1)
        fake.serve("2", "s3://models/digits/2", "canary", requests=100, errors=30)
        await eventually(
            lambda: cluster.service_status("digits").get("canary", {}).get("state") == "RolledBack", timeout=15
        )
        assert cluster.served("digits")["user_config"]["canary"]["trafficPercent"] == 0
        message = cluster.service_status("digits")["canary"]["message"]
        assert "error rate 30.00% > 5.00%" in message and "100 requests" in message
        # The Event and the metrics follow the status write: wait for them, do not race them.
        warnings = await eventually(lambda: [e for e in cluster.events("digits") if e["reason"] == "CanaryRolledBack"])
        assert warnings[0]["type"] == "Warning"
        await eventually(
            lambda: operator.metrics.sample("trainserve_canary_promotions_total", {"result": "rolled_back"}) == 1
        )
        share = {"namespace": "ml", "modelservice": "digits"}
        await eventually(lambda: operator.metrics.sample("trainserve_canary_traffic_percent", share) == 0)


def shadow_service(after_shadow: str | None = None) -> dict[str, Any]:
    policy = {"stepPercent": 50, "intervalSeconds": 5, "minRequests": 20, "maxErrorRate": 0.05, "minAgreement": 0.9}
    canary = {
        "model": {"uri": "s3://models/digits/2"},
        "mode": "shadow",
        "shadowPercent": 100,
        "trafficPercent": 50,
        "autoPromote": policy | ({"afterShadow": after_shadow} if after_shadow else {}),
    }
    return from_uri(canary=canary)


async def shadow_window_begins(operator: Operator, cluster: Cluster) -> None:
    """The candidate scores in shadow mode, and the operator took the figures its window starts from."""
    await eventually(lambda: cluster.service_status("digits").get("canary", {}).get("mode") == "shadow")
    baselines = operator.modelservices.canary.baselines
    await eventually(lambda: any(b.uri == "s3://models/digits/2" for b in baselines.values()), timeout=30)


def served_canary(cluster: Cluster) -> dict[str, Any]:
    return dict(cluster.served("digits").get("user_config", {}).get("canary") or {})


def reasons(cluster: Cluster) -> list[str]:
    return [e["reason"] for e in cluster.events("digits")]


async def test_a_shadow_candidate_that_agrees_moves_into_split_mode_then_is_promoted(
    emulator: Emulator, cluster: Cluster, stats: tuple[FakeServeStats, str]
) -> None:
    fake, url = stats
    async with running_operator(operator_settings(emulator, serve_stats_url=url)) as operator:
        fake.shadow("2", "s3://models/digits/2", scored=0, rows=0, agreed=0)
        await cluster.create_modelservice(shadow_service(after_shadow="split"))
        canary = await eventually(lambda: cluster.served("digits").get("user_config", {}).get("canary"))
        assert (canary["mode"], canary["trafficPercent"], canary["shadowPercent"]) == ("shadow", 0, 100)
        await shadow_window_begins(operator, cluster)
        fake.shadow("2", "s3://models/digits/2", scored=30, rows=60, agreed=58)  # 96.67% agreement
        await eventually(lambda: served_canary(cluster).get("trafficPercent") == 50, timeout=20)
        assert "mode" not in served_canary(cluster)  # a split canary's config, as before shadow mode existed
        passed = await eventually(lambda: [e for e in cluster.events("digits") if e["reason"] == "CanaryShadowPassed"])
        assert "version 2 passed its shadow evaluation against version 1" in passed[0]["message"]
        assert "96.67% agreement (58/60 rows)" in passed[0]["message"]
        # Split mode from here: the canary's own answered requests decide, as for any canary.
        baselines = operator.modelservices.canary.baselines
        fake.serve("2", "s3://models/digits/2", "canary", requests=5)
        await eventually(lambda: any(b.share == 50 for b in baselines.values()), timeout=30)
        fake.serve("2", "s3://models/digits/2", "canary", requests=105)
        await eventually(lambda: cluster.served("digits")["user_config"]["primary"]["uri"] == "s3://models/digits/2")
        assert cluster.served("digits")["user_config"].get("canary") is None
        await eventually(lambda: "CanaryPromoted" in reasons(cluster))


async def test_a_shadow_candidate_that_disagrees_is_rolled_back_without_ever_answering(
    emulator: Emulator, cluster: Cluster, stats: tuple[FakeServeStats, str]
) -> None:
    fake, url = stats
    async with running_operator(operator_settings(emulator, serve_stats_url=url)) as operator:
        fake.shadow("2", "s3://models/digits/2", scored=0, rows=0, agreed=0)
        await cluster.create_modelservice(shadow_service())
        await shadow_window_begins(operator, cluster)
        fake.shadow("2", "s3://models/digits/2", scored=10, rows=10, agreed=0)  # too few scored: no verdict yet
        await asyncio.sleep(6)
        assert cluster.service_status("digits")["canary"]["state"] == "Progressing"
        fake.shadow("2", "s3://models/digits/2", scored=40, rows=80, agreed=40)
        await eventually(
            lambda: cluster.service_status("digits").get("canary", {}).get("state") == "RolledBack", timeout=20
        )
        status = cluster.service_status("digits")
        assert status["canary"]["shadow"]["agreement"] == 0.5 and "promoted" not in status
        server = cluster.served("digits")["user_config"]
        assert server["primary"]["uri"] == "s3://models/digits/1"
        assert "mode" not in server["canary"] and server["canary"]["trafficPercent"] == 0  # split at 0: scores no more
        warnings = await eventually(lambda: [e for e in cluster.events("digits") if e["reason"] == "CanaryRolledBack"])
        assert warnings[0]["type"] == "Warning"
        assert (
            "rolled back version 2 in shadow mode, version 1 keeps serving: agreement 50.00% < 90.00%"
            in warnings[0]["message"]
        )
        assert "40 requests scored" in warnings[0]["message"]
        await eventually(
            lambda: operator.metrics.sample("trainserve_canary_promotions_total", {"result": "rolled_back"}) == 1
        )


async def test_operator_restart_changes_nothing(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator)):
        await cluster.create_modelservice(from_uri())
        await eventually(lambda: cluster.get(RAYSERVICES, "digits") and cluster.get(NETWORKPOLICIES, "digits-ray"))
        await cluster.rayservice_ready("digits")
        await eventually(lambda: ready(cluster))
        await asyncio.sleep(0.5)
    before = emulator.request_count()
    async with running_operator(operator_settings(emulator)):
        await asyncio.sleep(2.5)
        assert emulator.writes(since=before) == [], "a restarted operator rewrote something"


async def test_deletion_leaves_nothing_behind(emulator: Emulator, cluster: Cluster) -> None:
    async with running_operator(operator_settings(emulator)) as operator:
        await cluster.create_modelservice(from_uri())
        await eventually(lambda: cluster.get(RAYSERVICES, "digits") and cluster.get(NETWORKPOLICIES, "digits-ray"))
        await cluster.rayservice_ready("digits")
        await eventually(lambda: ready(cluster))
        uid = cluster.get(MODELSERVICES, "digits")["metadata"]["uid"]
        await asyncio.sleep(0.5)
        await cluster.delete_modelservice("digits")
        # Kubernetes' garbage collector deletes the children by their owner reference (the emulator has none).
        for resource, name in ((RAYSERVICES, "digits"), (NETWORKPOLICIES, "digits-ray")):
            assert cluster.get(resource, name)["metadata"]["ownerReferences"][0]["uid"] == uid
        await eventually(lambda: ("ml", "digits") not in operator.modelservices.store.services)
        after_delete = emulator.request_count()
        await asyncio.sleep(1.5)
        assert emulator.writes(since=after_delete) == [], "the operator acted on a deleted ModelService"


async def test_a_pod_template_is_applied_and_its_conflict_named(emulator: Emulator, cluster: Cluster) -> None:
    labels = {"metadata": {"labels": {"team": "ml"}}, "spec": {"serviceAccountName": "my-identity"}}
    async with running_operator(operator_settings(emulator)):
        await cluster.create_modelservice(from_uri(podTemplate=labels))
        rayservice = await eventually(lambda: cluster.get(RAYSERVICES, "digits"))
        head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
        assert head["metadata"]["labels"]["team"] == "ml" and head["spec"]["serviceAccountName"] == "my-identity"

        env = [{"name": "RAY_SERVE_THROUGHPUT_OPTIMIZED", "value": "0"}]
        conflict = {"spec": {"containers": [{"name": "ray", "env": env}]}}
        await cluster.create_modelservice(changed(from_uri(podTemplate=conflict), "metadata.name", "bad"))
        refused = await eventually(
            lambda: (
                cluster.service_condition("bad", "Ready").get("reason") == "InvalidSpec"
                and cluster.service_condition("bad", "Ready")
            )
        )
        assert "spec.podTemplate.spec.containers[0].env[0].name: 'RAY_SERVE_THROUGHPUT_OPTIMIZED'" in refused["message"]
        assert cluster.get(RAYSERVICES, "bad") is None


async def test_an_upgrade_is_followed_and_a_stuck_one_warned_about_once(emulator: Emulator, cluster: Cluster) -> None:
    document = from_uri(upgradeStrategy={"type": "NewCluster", "progressDeadlineSeconds": 2})
    document["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "serving"}
    async with running_operator(operator_settings(emulator)):
        await cluster.create_modelservice(document)
        rayservice = await eventually(lambda: cluster.get(RAYSERVICES, "digits"))
        assert rayservice["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
        assert rayservice["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "serving"
        assert schema_errors(rayservice, kuberay_schema("RayService")) == []
        await cluster.rayservice_ready("digits")
        await eventually(lambda: ready(cluster))

        await cluster.patch_modelservice("digits", {"spec": {"resources": {"cpusPerReplica": 2}}})
        await eventually(lambda: cluster.get(RAYSERVICES, "digits")["metadata"].get("generation") == 2)
        await cluster.rayservice_upgrading("digits")
        upgrading = await eventually(lambda: cluster.service_condition("digits", "Upgrading").get("status") == "True")
        assert upgrading and ready(cluster)  # the old cluster keeps serving
        assert (
            "new RayCluster digits-next: 0 of 1 workers ready"
            in cluster.service_condition("digits", "Upgrading")["message"]
        )
        await eventually(lambda: cluster.service_condition("digits", "Upgrading").get("reason") == "UpgradeStuck")
        assert cluster.service_condition("digits", "Stalled")["reason"] == "UpgradeStuck"
        await asyncio.sleep(1.5)
        warnings = [e for e in cluster.events("digits") if e["reason"] == "UpgradeStuck"]
        assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
        assert "progressDeadlineSeconds (2s)" in warnings[0]["message"]

        await cluster.rayservice_ready("digits")
        await eventually(lambda: cluster.service_condition("digits", "Upgrading").get("reason") == "UpgradeComplete")
        conditions = {c["type"] for c in cluster.service_status("digits")["conditions"]}
        assert not conditions & {"Stalled", "Reconciling"}

        # A new queue reaches the RayService (and so the next RayCluster KubeRay creates).
        await cluster.patch_modelservice("digits", {"metadata": {"labels": {"kueue.x-k8s.io/queue-name": "gold"}}})
        await eventually(
            lambda: cluster.get(RAYSERVICES, "digits")["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gold"
        )
        before = emulator.request_count()
        await asyncio.sleep(2.5)
        assert [f"{r.method} {r.url} {r.data}" for r in emulator.writes(since=before)] == []
