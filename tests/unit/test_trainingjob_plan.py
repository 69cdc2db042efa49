"""The reconcile decision, pure: observed TrainingJob + RayJobs + time -> status, actions, Events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.documents import changed, example
from trainserve.plans.trainingjob import Observed, RayJobView, plan, status_patch

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def body(status: dict[str, Any] | None = None, **run_policy: Any) -> dict[str, Any]:
    doc = changed(example("digits-trainingjob"), "spec.runPolicy", run_policy)
    doc["metadata"].update(namespace="ml", uid="u1", generation=1)
    if status is not None:
        doc["status"] = status
    return doc


def observe(doc: dict[str, Any], *rayjobs: RayJobView, at: float = 0, kuberay: bool = True) -> Any:
    return plan(Observed(body=doc, rayjobs=list(rayjobs), kuberay_installed=kuberay, now=T0 + timedelta(seconds=at)))


def settle(doc: dict[str, Any], *rayjobs: RayJobView, at: float = 0) -> dict[str, Any]:
    """The body after the operator wrote the planned status."""
    decision = observe(doc, *rayjobs, at=at)
    return {**doc, "status": decision.status.to_wire()}


def test_first_reconcile_creates_attempt_one_then_nothing() -> None:
    decision = observe(body())
    assert decision.create_attempt == 1 and decision.status.attempts == 1 and decision.status.phase == "Pending"
    assert [e.reason for e in decision.events] == ["SpecAccepted", "RayJobCreated"]
    settled = settle(body())
    again = observe(settled, RayJobView("digits-1", 1))
    assert again.create_attempt is None
    assert observe({**settled, "status": again.status.to_wire()}, RayJobView("digits-1", 1)).events == []


def test_attempt_is_recovered_from_the_children_when_status_is_lost() -> None:
    decision = observe(body(), RayJobView("digits-1", 1, "Running", "RUNNING"))
    assert decision.create_attempt is None and decision.status.attempts == 1 and decision.status.phase == "Running"


def test_status_patch_is_empty_when_nothing_changed_and_never_touches_progress() -> None:
    settled = settle(body())
    decision = observe(settled, RayJobView("digits-1", 1))
    settled = {**settled, "status": decision.status.to_wire()}
    assert status_patch(settled["status"], observe(settled, RayJobView("digits-1", 1)).status) == {}
    with_progress = {**settled["status"], "progress": {"epoch": 4}, "model": {"uri": "/m/1"}}
    assert status_patch(with_progress, observe(settled, RayJobView("digits-1", 1)).status) == {}


def test_retry_until_backoff_limit_then_fail() -> None:
    doc = settle(body(backoffLimit=1))
    failed_1 = RayJobView("digits-1", 1, "Failed", "FAILED", reason="AppFailed", message="boom")
    retry = observe(doc, failed_1)
    assert retry.create_attempt == 2 and retry.status.attempts == 2
    doc = {**doc, "status": retry.status.to_wire()}
    failed_2 = RayJobView("digits-2", 2, "Failed", "FAILED", reason="AppFailed", message="boom again")
    final = observe(doc, failed_1, failed_2)
    assert final.create_attempt is None and final.status.phase == "Failed" and final.finished_now
    failed = next(c for c in final.status.conditions if c.type == "Failed")
    assert failed.status == "True" and failed.reason == "AppFailed" and "boom again" in (failed.message or "")


def test_deadline_fails_and_stops_the_running_attempt() -> None:
    doc = settle(body(activeDeadlineSeconds=60))
    running = RayJobView("digits-1", 1, "Running", "RUNNING")
    assert observe(doc, running, at=30).requeue_after == 30
    late = observe(doc, running, at=61)
    assert late.status.phase == "Failed" and late.delete_rayjobs == ["digits-1"]
    assert next(c for c in late.status.conditions if c.type == "Failed").reason == "DeadlineExceeded"


def test_ttl_after_finish() -> None:
    doc = settle(body(ttlSecondsAfterFinished=10))
    done = RayJobView("digits-1", 1, "Complete", "SUCCEEDED")
    finished = observe(doc, done, at=5)
    assert finished.status.phase == "Succeeded" and finished.requeue_after == 10
    doc = {**doc, "status": finished.status.to_wire()}
    assert observe(doc, done, at=14).delete_rayjobs == []
    cleanup = observe(doc, done, at=15)
    assert cleanup.delete_rayjobs == ["digits-1"] and cleanup.delete_access
    gone = observe(doc, at=100)
    assert gone.create_attempt is None and gone.status.phase == "Succeeded"


def test_suspend_and_resume_pass_through() -> None:
    doc = settle(body())
    running = RayJobView("digits-1", 1, "Running", "RUNNING")
    suspend = observe(body(doc["status"], suspend=True), running)
    assert suspend.set_suspend is True and suspend.status.phase == "Suspended"
    resumed = observe(body(suspend.status.to_wire()), RayJobView("digits-1", 1, "Suspended", "", suspend=True))
    assert resumed.set_suspend is False


def test_kuberay_missing_is_a_created_false_condition() -> None:
    decision = observe(body(), kuberay=False)
    created = next(c for c in decision.status.conditions if c.type == "Created")
    assert (
        decision.create_attempt is None and created.reason == "KubeRayMissing" and "KubeRay" in (created.message or "")
    )


def test_a_kuberay_without_auth_options_starts_no_cluster_and_says_how_to_go_on() -> None:
    observed = Observed(body=body(), rayjobs=[], kuberay_installed=True, now=T0, ray_auth_unsupported=True)
    decision = plan(observed)
    created = next(c for c in decision.status.conditions if c.type == "Created")
    assert decision.create_attempt is None and decision.status.phase == "Pending"
    assert created.status == "False" and created.reason == "RayAuthUnsupported"
    assert "v1.5.1" in (created.message or "") and "rayAuth: false" in (created.message or "")


def test_invalid_spec_is_reported_once() -> None:
    doc = changed(body(), "spec.training.epochs", 0)
    first = observe(doc)
    valid = next(c for c in first.status.conditions if c.type == "Valid")
    assert valid.status == "False" and "spec.training.epochs" in (valid.message or "")
    assert first.create_attempt is None and first.events
    doc["status"] = first.status.to_wire()
    again = observe(doc, at=60)
    assert status_patch(doc["status"], again.status) == {} and again.events == []


def test_a_local_path_on_a_cluster_is_refused_and_nothing_starts() -> None:
    doc = changed(body(), "spec.output.uri", "./.trainserve/models/digits")
    decision = observe(doc)
    valid = next(c for c in decision.status.conditions if c.type == "Valid")
    assert decision.create_attempt is None and decision.status.phase == "Pending"
    assert valid.status == "False" and valid.reason == "LocalPathOnCluster"
    assert "spec.output.uri" in (valid.message or "") and "pvc://CLAIM/PATH" in (valid.message or "")
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "LocalPathOnCluster")]
    assert observe({**doc, "status": decision.status.to_wire()}).events == [], "reported once"


def test_an_unreachable_mlflow_server_reported_by_the_chief_is_a_warning_once() -> None:
    running = settle(body(), RayJobView("digits-1", 1, "Running", "RUNNING"))
    error = "MLflow at http://mlflow:5000: could not start (connection refused); training goes on without it"
    reported = {**running, "status": {**running["status"], "mlflow": {"error": error}}}
    decision = observe(reported, RayJobView("digits-1", 1, "Running", "RUNNING"))
    tracking = next(c for c in decision.status.conditions if c.type == "Tracking")
    assert (tracking.status, tracking.reason, tracking.message) == ("False", "TrackingUnavailable", error)
    assert [(e.type, e.reason) for e in decision.events] == [("Warning", "TrackingUnavailable")]
    assert decision.status.phase == "Running"  # training goes on
    settled = {**reported, "status": decision.status.to_wire()}
    assert observe(settled, RayJobView("digits-1", 1, "Running", "RUNNING")).events == []
