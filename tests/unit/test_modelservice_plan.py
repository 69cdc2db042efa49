"""The ModelService plan: model resolution, Ready/ModelLoaded from KubeRay, and the canary's steps."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from tests.support.documents import changed, example
from trainserve.api.figures import LATENCY_BUCKETS_MS, Figures, ShadowCounts
from trainserve.plans.modelservice import RayServiceView, ServiceObserved, plan_service, service_status_patch
from trainserve.registry import RegisteredVersion, RegistryError

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def body(document: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = copy.deepcopy(document)
    doc["metadata"].update({"namespace": "ml", "uid": "u1", "generation": 1})
    if status is not None:
        doc["status"] = status
    return doc


def trainingjob(phase: str, version: int = 1, accuracy: float = 0.95) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if phase == "Succeeded":
        uri = f"s3://m/digits/{version}"
        status["model"] = {"uri": uri, "version": version, "metrics": {"val_accuracy": accuracy}}
    return {"metadata": {"name": "digits"}, "spec": {}, "status": status}


READY = RayServiceView("digits", True, "RUNNING", "", True, 1, 1)


def plan(doc: dict[str, Any], jobs: dict[str, Any] | None = None, view: RayServiceView | None = READY, **kw: Any):  # type: ignore[no-untyped-def]
    return plan_service(
        ServiceObserved(body=doc, trainingjobs=jobs or {}, rayservice=view, kuberay_installed=True, now=NOW, **kw)
    )


def condition(result: Any, type_: str) -> Any:
    return next(c for c in result.status.conditions if c.type == type_)


def test_waits_for_the_trainingjob_then_serves_its_model() -> None:
    doc = body(example("digits-modelservice"))
    waiting = plan(doc, {"digits": trainingjob("Running")}, None)
    assert waiting.args is None and condition(waiting, "Ready").reason == "WaitingForModel"
    assert "is Running" in condition(waiting, "Ready").message
    served = plan(doc, {"digits": trainingjob("Succeeded")})
    assert served.args is not None and served.args.primary.uri == "s3://m/digits/1"
    assert condition(served, "Ready").status == "True" and served.status.model is not None
    assert served.status.model.version == 1


def test_a_metric_miss_is_named_and_the_running_model_stays() -> None:
    doc = body(example("digits-modelservice"))
    short = plan(doc, {"digits": trainingjob("Succeeded", accuracy=0.5)}, None)
    assert short.args is None
    assert "val_accuracy 0.5 < 0.9" in condition(short, "ModelLoaded").message
    serving = body(example("digits-modelservice"), {"model": {"uri": "s3://m/digits/1", "version": 1}})
    newer_but_short = plan(serving, {"digits": trainingjob("Succeeded", version=2, accuracy=0.5)})
    assert newer_but_short.args is not None and newer_but_short.args.primary.uri == "s3://m/digits/1"
    assert "misses minMetrics" in condition(newer_but_short, "ModelLoaded").message


def test_a_registry_uri_serves_the_version_the_registry_names_and_keeps_it_while_the_registry_is_down() -> None:
    uri = "models:/digits@champion"
    model = {"uri": uri, "registry": {"trackingUri": "http://mlflow:5000", "resolveIntervalSeconds": 30}}
    doc = body(changed(example("digits-modelservice"), "spec.model", model))
    asking = plan(doc, view=None)
    assert asking.args is None and condition(asking, "ModelLoaded").reason == "ResolvingModel"
    answer = RegisteredVersion(7, "mlflow-artifacts:/1/abc/artifacts/model")
    served = plan(doc, registry={uri: answer})
    assert served.args is not None and served.args.primary.uri == answer.source
    assert served.args.primary.version == 7 and served.requeue_after == 30, "asked again after the interval"
    assert served.status.model is not None and served.status.model.registered == uri
    assert served.args.runtime_env == {"env_vars": {"MLFLOW_TRACKING_URI": "http://mlflow:5000"}}

    serving = body(doc, {"model": {"uri": answer.source, "version": 7, "registered": uri}})
    down = plan(serving, registry={uri: RegistryError("RegistryUnavailable", "MLflow did not answer")})
    assert down.args is not None and down.args.primary.uri == answer.source
    loaded = condition(down, "ModelLoaded")
    assert loaded.status == "True" and "still serving version 7: MLflow did not answer" in loaded.message


def test_application_failure_surfaces_its_message() -> None:
    doc = body(example("digits-modelservice"))
    failed = RayServiceView("digits", False, "DEPLOY_FAILED", "ModelServer: cannot load s3://m", True, 0, 1)
    result = plan(doc, {"digits": trainingjob("Succeeded")}, failed)
    assert condition(result, "Ready").reason == "ApplicationFailed"
    assert "cannot load" in condition(result, "Ready").message


def _canary_doc(start: int = 50, step: int = 25) -> dict[str, Any]:
    doc = changed(example("digits-modelservice"), "spec.model", {"uri": "s3://m/digits/1"})
    canary = {
        "model": {"uri": "s3://m/digits/2"},
        "trafficPercent": start,
        "autoPromote": {"stepPercent": step, "intervalSeconds": 5, "minRequests": 100, "maxErrorRate": 0.05},
    }
    return body(changed(doc, "spec.canary", canary))


def _figures(requests: int, errors: int = 0, latency_ms: float = 2.0) -> Figures:
    counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    counts[next(i for i, b in enumerate(LATENCY_BUCKETS_MS) if latency_ms <= b)] = requests
    return Figures(requests, errors, tuple(counts))


def _advance(doc: dict[str, Any], window: Figures | None) -> Any:
    result = plan(doc, canary_window=window)
    doc["status"] = result.status.to_wire()
    return result


def test_canary_steps_up_on_healthy_figures_then_is_promoted() -> None:
    doc = _canary_doc()
    first = _advance(doc, None)
    assert first.args.canary.traffic_percent == 50 and doc["status"]["canary"]["state"] == "Progressing"
    assert _advance(doc, _figures(10)).args.canary.traffic_percent == 50  # too few requests: no judgement
    step = _advance(doc, _figures(200))
    assert step.args.canary.traffic_percent == 75 and [e.reason for e in step.events] == ["CanaryStep"]
    promoted = _advance(doc, _figures(200))
    assert promoted.canary_results == ["promoted"] and promoted.args.canary is None
    assert promoted.args.primary.uri == "s3://m/digits/2" and "canary" not in doc["status"]
    again = _advance(doc, None)  # promotion sticks while spec.model stays as it was
    assert again.args.primary.uri == "s3://m/digits/2" and again.events == []
    moved = changed(doc, "spec.model", {"uri": "s3://m/digits/7"})
    assert plan(moved).args.primary.uri == "s3://m/digits/7"


def test_canary_breach_rolls_back_to_zero_and_stays() -> None:
    doc = _canary_doc()
    _advance(doc, None)
    rolled = _advance(doc, _figures(200, errors=40))
    assert rolled.canary_results == ["rolled_back"] and rolled.args.canary.traffic_percent == 0
    assert "error rate 20.00% > 5.00%" in doc["status"]["canary"]["message"]
    assert [e.type for e in rolled.events] == ["Warning"]
    assert _advance(doc, _figures(500)).args.canary.traffic_percent == 0


def test_status_patch_is_empty_when_nothing_changed() -> None:
    doc = body(example("digits-modelservice"))
    first = plan(doc, {"digits": trainingjob("Succeeded")})
    settled = body(example("digits-modelservice"), first.status.to_wire())
    again = plan(settled, {"digits": trainingjob("Succeeded")})
    assert service_status_patch(settled["status"], again.status) == {} and again.events == []


def test_a_bad_spec_is_reported_with_its_field_path_and_nothing_is_served() -> None:
    doc = body(changed(example("digits-modelservice"), "spec.batching.maxBatchSize", 0))
    result = plan(doc, {"digits": trainingjob("Succeeded")})
    ready = condition(result, "Ready")
    assert result.args is None and ready.status == "False" and ready.reason == "InvalidSpec"
    assert "spec.batching.maxBatchSize" in ready.message and "fix:" in ready.message
    too_long = body(changed(example("digits-modelservice"), "metadata.name", "a" * 48))
    assert "at most 47" in condition(plan(too_long), "Ready").message


def test_without_kuberay_the_service_waits_and_says_how_to_install_it() -> None:
    doc = body(example("digits-modelservice"))
    result = plan_service(
        ServiceObserved(
            body=doc,
            trainingjobs={"digits": trainingjob("Succeeded")},
            rayservice=None,
            kuberay_installed=False,
            now=NOW,
        )
    )
    ready = condition(result, "Ready")
    assert result.args is None and ready.reason == "KubeRayMissing" and "rayservices.ray.io" in ready.message


def test_a_kuberay_without_auth_options_gets_no_rayservice_and_a_warning() -> None:
    doc = body(example("digits-modelservice"))
    result = plan_service(
        ServiceObserved(
            body=doc,
            trainingjobs={"digits": trainingjob("Succeeded")},
            rayservice=None,
            kuberay_installed=True,
            now=NOW,
            ray_auth_unsupported=True,
        )
    )
    ready = condition(result, "Ready")
    assert result.args is None and ready.reason == "RayAuthUnsupported" and "TRAINSERVE_RAY_AUTH=false" in ready.message
    assert [(e.type, e.reason) for e in result.events] == [("Warning", "RayAuthUnsupported")]


def test_a_local_model_path_on_a_cluster_is_refused_with_one_warning() -> None:
    document = changed(example("digits-modelservice"), "spec.model", {"uri": "/home/me/models/digits/3"})
    document["metadata"].update(namespace="ml", uid="u9", generation=1)
    decision = plan_service(
        ServiceObserved(body=document, trainingjobs={}, rayservice=None, kuberay_installed=True, now=NOW)
    )
    ready = next(c for c in decision.status.conditions if c.type == "Ready")
    assert decision.args is None and ready.reason == "LocalPathOnCluster" and "spec.model.uri" in (ready.message or "")
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "LocalPathOnCluster")]


def test_an_upgrade_is_reported_then_warned_about_once_past_its_deadline() -> None:
    from datetime import timedelta

    from tests.support.schemas import kuberay_schema, schema_errors
    from tests.support.status_scenarios import PENDING_CLUSTER, rayservice

    doc = changed(body(example("digits-modelservice")), "spec.upgradeStrategy", {"progressDeadlineSeconds": 300})
    jobs = {"digits": trainingjob("Succeeded")}
    rolling = rayservice(pending=PENDING_CLUSTER)
    status_schema = kuberay_schema("RayService")["properties"]["status"]
    assert schema_errors(rolling["status"], status_schema) == []  # the status KubeRay v1.7 writes

    def step(document: dict[str, Any], ray: dict[str, Any], at: float) -> Any:
        view = RayServiceView.from_object(ray, "digits")
        return plan_service(
            ServiceObserved(document, jobs, view, kuberay_installed=True, now=NOW + timedelta(seconds=at))
        )

    serving = step(doc, rayservice(), 0)
    doc = {**doc, "status": serving.status.to_wire()}
    started = step(doc, rolling, 10)
    upgrading = condition(started, "Upgrading")
    assert (upgrading.status, upgrading.reason) == ("True", "UpgradeInProgress")
    assert "new RayCluster digits-def34: 0 of 1 workers ready" in upgrading.message
    assert [(e.type, e.reason) for e in started.events] == [("Normal", "UpgradeInProgress")]
    assert started.requeue_after == 300 and condition(started, "Ready").status == "True"
    doc = {**doc, "status": started.status.to_wire()}
    waiting = step(doc, rolling, 200)
    assert waiting.events == [] and waiting.requeue_after == 110
    assert service_status_patch(doc["status"], waiting.status) == {}  # quiet while it waits
    stuck = step(doc, rolling, 310)
    assert condition(stuck, "Upgrading").reason == "UpgradeStuck"
    assert "progressDeadlineSeconds (300s)" in condition(stuck, "Upgrading").message
    assert [(e.type, e.reason) for e in stuck.events] == [("Warning", "UpgradeStuck")]
    assert condition(stuck, "Stalled").reason == "UpgradeStuck"
    doc = {**doc, "status": stuck.status.to_wire()}
    assert step(doc, rolling, 900).events == []
    done = step(doc, rayservice(), 950)
    assert (condition(done, "Upgrading").status, condition(done, "Upgrading").reason) == ("False", "UpgradeComplete")
    assert [(e.type, e.reason) for e in done.events] == [("Normal", "UpgradeComplete")]
    assert not [c for c in done.status.conditions if c.type in ("Stalled", "Reconciling")]


def test_older_kuberay_upgrades_are_read_from_the_pending_cluster() -> None:
    from tests.support.status_scenarios import PENDING_CLUSTER, rayservice

    ray = rayservice(pending=PENDING_CLUSTER)
    ray["status"]["conditions"] = [c for c in ray["status"]["conditions"] if c["type"] == "Ready"]
    assert RayServiceView.from_object(ray, "digits").upgrading
    ray["status"].pop("pendingServiceStatus")
    assert not RayServiceView.from_object(ray, "digits").upgrading


def _closed_loop_doc(served: int, rejected: list[int]) -> dict[str, Any]:
    doc = changed(example("digits-modelservice"), "spec.model.fromTrainingJob.rollout", "canary")
    doc = changed(doc, "spec.canary", {"trafficPercent": 20, "autoPromote": {"intervalSeconds": 5}})
    model = {"uri": f"s3://m/digits/{served}", "version": served}
    model["rejectedVersions"] = [{"version": v, "uri": f"s3://m/digits/{v}", "figures": "error rate"} for v in rejected]
    return body(doc, {"model": model})


def test_rollout_canary_tries_only_a_newer_version_not_rejected_before() -> None:
    doc = _closed_loop_doc(served=3, rejected=[4])
    for job, reason in ((trainingjob("Succeeded", 3), "NoNewerVersion"), (trainingjob("Succeeded", 2), None)):
        same = plan(doc, {"digits": job})
        assert same.args.primary.version == 3 and same.args.canary is None
        assert reason is None or condition(same, "Canary").reason == reason
    rejected = plan(doc, {"digits": trainingjob("Succeeded", 4)})
    assert rejected.args.primary.version == 3 and rejected.args.canary is None
    assert condition(rejected, "Canary").reason == "RolledBack"
    assert "version 4 was rolled back (error rate)" in condition(rejected, "Canary").message
    tried = plan(doc, {"digits": trainingjob("Succeeded", 5)})
    assert tried.args.primary.version == 3
    assert (tried.args.canary.version, tried.args.canary.traffic_percent) == (5, 20)
    assert "CanaryStarted" in [e.reason for e in tried.events]
    assert [r.version for r in tried.status.model.rejected_versions] == [4]  # kept while version 3 serves
    rerun = plan(doc, {"digits": trainingjob("Running")})
    assert rerun.args.primary.version == 3 and rerun.args.canary is None
    assert "still serving version 3" in condition(rerun, "ModelLoaded").message
    replace = changed(doc, "spec.model.fromTrainingJob.rollout", "replace")
    replace = changed(replace, "spec.canary", None, delete=True)
    assert plan(replace, {"digits": trainingjob("Succeeded", 5)}).args.primary.version == 5


def test_rollout_canary_remembers_a_rollback_with_its_figures() -> None:
    doc = _closed_loop_doc(served=3, rejected=list(range(100, 120)))
    jobs = {"digits": trainingjob("Succeeded", 121)}
    started = plan(doc, jobs)
    doc["status"] = started.status.to_wire()
    rolled = plan(doc, jobs, canary_window=_figures(200, errors=40))
    assert rolled.canary_results == ["rolled_back"]
    listed = rolled.status.model.rejected_versions
    assert len(listed) == 20 and listed[-1].version == 121 and listed[0].version == 101  # the oldest went first
    assert "rolled back version 121 at 20%, version 3 keeps serving: error rate 20.00% > 1.00%" in listed[-1].figures


def _shadow_doc(after: str | None = None, min_agreement: float = 0.9) -> dict[str, Any]:
    doc = _canary_doc(start=20)
    auto = doc["spec"]["canary"]["autoPromote"] | {"minAgreement": min_agreement}
    doc["spec"]["canary"] |= {
        "mode": "shadow",
        "shadowPercent": 40,
        "autoPromote": auto | ({"afterShadow": after} if after else {}),
    }
    return doc


def _shadow_window(scored: int, rows: int, agreed: int) -> Figures:
    counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    counts[3] = scored
    return Figures(shadow=ShadowCounts(scored, rows, agreed, latency_counts=tuple(counts)))


def test_a_shadow_candidate_answers_nothing_and_is_promoted_on_agreement() -> None:
    doc = _shadow_doc()
    first = _advance(doc, None)
    canary = first.args.canary
    assert (canary.mode, canary.traffic_percent, canary.shadow_percent) == ("shadow", 0, 40)
    assert [e.message for e in first.events if e.reason == "CanaryStarted"] == [
        "candidate version 2 scores 40% of the requests in the shadow of version 1"
    ]
    assert doc["status"]["canary"]["mode"] == "shadow" and doc["status"]["canary"]["trafficPercent"] == 0
    waiting = _advance(doc, _shadow_window(50, 100, 100))  # fewer than minRequests scored: no judgement
    assert waiting.args.canary.mode == "shadow" and doc["status"]["canary"]["shadow"]["scored"] == 50
    promoted = _advance(doc, _shadow_window(150, 300, 291))
    assert promoted.canary_results == ["promoted"] and promoted.args.canary is None
    assert promoted.args.primary.uri == "s3://m/digits/2"
    message = next(e.message for e in promoted.events if e.reason == "CanaryPromoted")
    assert "promoted version 2 over version 1 after its shadow evaluation" in message
    assert "97.00% agreement (291/300 rows)" in message


def test_a_disagreeing_shadow_candidate_is_rolled_back_and_stops_scoring() -> None:
    doc = _shadow_doc()
    _advance(doc, None)
    rolled = _advance(doc, _shadow_window(150, 300, 120))
    assert rolled.canary_results == ["rolled_back"]
    assert rolled.args.canary.mode == "split" and rolled.args.canary.traffic_percent == 0
    warning = next(e for e in rolled.events if e.reason == "CanaryRolledBack")
    assert warning.type == "Warning"
    assert "rolled back version 2 in shadow mode, version 1 keeps serving: agreement 40.00% < 90.00%" in warning.message
    assert doc["status"]["canary"]["state"] == "RolledBack"
    assert _advance(doc, None).args.canary.mode == "split"


def test_after_shadow_split_moves_the_candidate_into_split_mode_then_steps() -> None:
    doc = _shadow_doc(after="split")
    _advance(doc, None)
    passed = _advance(doc, _shadow_window(150, 300, 300))
    assert (passed.args.canary.mode, passed.args.canary.traffic_percent) == ("split", 20)
    assert [e.reason for e in passed.events] == ["CanaryShadowPassed"]
    assert doc["status"]["canary"]["mode"] == "split"
    step = _advance(doc, _figures(200))
    assert (step.args.canary.mode, step.args.canary.traffic_percent) == ("split", 45)
