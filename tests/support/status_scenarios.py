"""TrainingJobs and ModelServices as they stand in the cluster in every phase, with the status the real plans write.

Each scenario runs the operator's pure plans (``plans.trainingjob.plan``, ``plans.modelservice.plan_service``) over
what KubeRay reports, step by step as the operator would, and keeps the object with the status it wrote. The GitOps
health tests (Argo CD's Lua checks, kstatus) read these objects, so a change of the plans' conditions shows there.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.documents import changed, example
from trainserve.api.trainingjob import TrainingJob
from trainserve.builders.rayjob import section_hashes
from trainserve.plans.modelservice import RayServiceView, ServiceObserved, plan_service
from trainserve.plans.podhealth import PodHealth, pod_health
from trainserve.plans.trainingjob import Observed, RayJobView, plan

T0 = datetime(2026, 1, 1, tzinfo=UTC)
Object = dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    obj: Object
    #: Argo CD's health status and kstatus' reading this object should get.
    argo: str
    kstatus: str


# --- TrainingJob ---------------------------------------------------------------------------------------------------


def job(**run_policy: Any) -> Object:
    doc = changed(example("digits-trainingjob"), "spec.runPolicy", run_policy)
    doc["metadata"].update(namespace="ml", uid="u1", generation=1)
    return doc


def job_step(
    doc: Object,
    *rayjobs: RayJobView,
    at: float = 0,
    kuberay: bool = True,
    auth_unsupported: bool = False,
    pods: list[Object] | None = None,
) -> Object:
    """``doc`` with the status the plan writes for what is observed ``at`` seconds after T0 (``pods``: the Ray
    pods as the kubelet and the scheduler report them)."""
    now = T0 + timedelta(seconds=at)
    observed = Observed(
        body=doc,
        rayjobs=list(rayjobs),
        kuberay_installed=kuberay,
        now=now,
        ray_auth_unsupported=auth_unsupported,
        pod_health=_pod_health(pods, now),
    )
    decision = plan(observed)
    return {**copy.deepcopy(doc), "status": decision.status.to_wire()}


def _pod_health(pods: list[Object] | None, now: datetime) -> PodHealth | None:
    return pod_health(pods, [], [], now) if pods is not None else None


def unschedulable_pod(name: str = "digits-1-raycluster-x-gpu-workers-a1") -> Object:
    """A pod the scheduler cannot place (its words, as in `kubectl describe pod`)."""
    since = T0.isoformat().replace("+00:00", "Z")
    message = "0/5 nodes are available: 3 Insufficient nvidia.com/gpu, 2 node(s) had untolerated taint."
    scheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    return {
        "metadata": {"name": name, "creationTimestamp": since},
        "spec": {"containers": [{"name": "ray-worker", "image": "trainserve/ray:1"}]},
        "status": {"phase": "Pending", "conditions": [scheduled | {"lastTransitionTime": since}]},
    }


def image_pull_pod(name: str = "digits-1-raycluster-x-head") -> Object:
    """A pod whose image does not pull (a typo in the tag)."""
    waiting = {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "trainserve/ray:typo"'}
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "ray-head", "image": "trainserve/ray:typo"}]},
        "status": {"phase": "Pending", "containerStatuses": [{"name": "ray-head", "state": {"waiting": waiting}}]},
    }


def crash_looping_pod(name: str = "digits-raycluster-x-workers-b2") -> Object:
    """A replica's container that is OOM-killed and restarted again and again."""
    last = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    state = {"waiting": {"reason": "CrashLoopBackOff"}}
    container = {"name": "ray-worker", "state": state, "lastState": last, "restartCount": 4}
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "ray-worker", "image": "trainserve/ray:1"}]},
        "status": {"phase": "Running", "containerStatuses": [container]},
    }


def _attempt(state: str = "", job_status: str = "", attempt: int = 1, **kw: Any) -> RayJobView:
    return RayJobView(f"digits-{attempt}", attempt, state, job_status, **kw)


def trainingjob_scenarios() -> list[Scenario]:
    started = job_step(job())
    running = job_step(started, _attempt("Running", "RUNNING"))
    retrying = job_step(
        job_step(job(backoffLimit=1), _attempt()), _attempt("Failed", "FAILED", reason="AppFailed", message="boom")
    )
    no_retries = job_step(job_step(job(backoffLimit=0)), _attempt("Running", "RUNNING"))
    failed = job_step(no_retries, _attempt("Failed", "FAILED", reason="AppFailed", message="exit 1"))
    suspended = {**job(suspend=True), "status": running["status"]}
    suspended = job_step(job_step(suspended, _attempt("Running", "RUNNING")), _attempt("Suspended", suspend=True))
    queued = changed(started, "metadata.labels", {"kueue.x-k8s.io/queue-name": "gpu"})
    queued = job_step(queued, _attempt("Suspended", suspend=True))
    changed_spec = changed(running, "spec.training.epochs", 99)
    changed_spec["metadata"]["generation"] = 2
    immutable = job_step(changed_spec, _attempt("Running", "RUNNING", spec_hashes=_hashes(running)))
    invalid = changed(job(), "spec.training.epochs", 0)
    waiting = _attempt("Initializing")
    return [
        Scenario("not yet seen by the operator", job(), "Progressing", "Current"),
        Scenario("RayJob created", started, "Progressing", "InProgress"),
        Scenario("starting", job_step(started, _attempt("Initializing")), "Progressing", "InProgress"),
        Scenario("training", running, "Progressing", "InProgress"),
        Scenario("retrying after a failed attempt", retrying, "Progressing", "InProgress"),
        Scenario("succeeded", job_step(running, _attempt("Complete", "SUCCEEDED")), "Healthy", "Current"),
        Scenario("failed", failed, "Degraded", "Failed"),
        Scenario("deadline exceeded", job_step(job_step(job(activeDeadlineSeconds=60)), at=61), "Degraded", "Failed"),
        Scenario("suspended by runPolicy.suspend", suspended, "Suspended", "Current"),
        Scenario("suspending", job_step(suspended, _attempt("Suspending", suspend=True)), "Suspended", "InProgress"),
        Scenario("queued by Kueue", queued, "Suspended", "InProgress"),
        Scenario("invalid spec", job_step(invalid), "Degraded", "Failed"),
        Scenario("immutable field changed", immutable, "Degraded", "Failed"),
        Scenario("KubeRay missing", job_step(job(), kuberay=False), "Degraded", "Failed"),
        Scenario("KubeRay without authOptions", job_step(job(), auth_unsupported=True), "Degraded", "Failed"),
        Scenario("spec edited, not yet seen", _edited(running), "Progressing", "InProgress"),
        Scenario(
            "waiting for GPUs",
            job_step(started, waiting, pods=[unschedulable_pod()], at=90),
            "Progressing",
            "InProgress",
        ),
        Scenario(
            "image does not pull", job_step(started, waiting, pods=[image_pull_pod()]), "Progressing", "InProgress"
        ),
        Scenario(
            "pods recovered",
            job_step(job_step(started, waiting, pods=[image_pull_pod()]), _attempt("Running", "RUNNING"), pods=[]),
            "Progressing",
            "InProgress",
        ),
    ]


def _hashes(doc: Object) -> dict[str, str]:
    return section_hashes(TrainingJob.model_validate({k: v for k, v in doc.items() if k != "status"}))


def _edited(doc: Object) -> Object:
    out = copy.deepcopy(doc)
    out["metadata"]["generation"] = doc["metadata"]["generation"] + 1
    return out


# --- ModelService --------------------------------------------------------------------------------------------------


def service(**spec: Any) -> Object:
    doc = copy.deepcopy(example("digits-modelservice"))
    doc["spec"].update(spec)
    doc["metadata"].update(namespace="ml", uid="u1", generation=1)
    return doc


def succeeded_job(accuracy: float = 0.95) -> Object:
    model = {"uri": "s3://m/digits/1", "version": 1, "metrics": {"val_accuracy": accuracy}}
    return {"metadata": {"name": "digits"}, "spec": {}, "status": {"phase": "Succeeded", "model": model}}


def rayservice(ready: bool = True, app: str = "RUNNING", observed: int = 1, pending: Object | None = None) -> Object:
    """A RayService with the status KubeRay v1.7 writes (``RayServiceStatuses``); ``pending``: the new cluster of an
    upgrade (``pendingServiceStatus``), with ``UpgradeInProgress=True``."""
    cluster = {"readyWorkerReplicas": 1 if ready else 0, "desiredWorkerReplicas": 1}
    now = T0.isoformat().replace("+00:00", "Z")
    ready_reason = "NonZeroServeEndpoints" if ready else "Initializing"
    conditions = [_kuberay_condition("Ready", ready, ready_reason, now)]
    upgrade_reason = "BothActivePendingClustersExist" if pending else "NoPendingCluster"
    conditions.append(_kuberay_condition("UpgradeInProgress", pending is not None, upgrade_reason, now))
    application: Object = {"status": app, "serveDeploymentStatuses": {}}
    if app == "DEPLOY_FAILED":
        application["message"] = "ModelServer: replica failed to start: cannot load s3://m/digits/1"
    status: Object = {
        "observedGeneration": observed,
        "conditions": conditions,
        "activeServiceStatus": {
            "rayClusterName": "digits-abc12",
            "applicationStatuses": {"digits": application},
            "rayClusterStatus": cluster,
        },
    }
    if pending is not None:
        status["pendingServiceStatus"] = pending
    metadata = {"name": "digits", "namespace": "ml", "generation": 1}
    return {"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": metadata, "spec": {}, "status": status}


def _kuberay_condition(type_: str, true: bool, reason: str, now: str) -> Object:
    status = "True" if true else "False"
    return {"type": type_, "status": status, "reason": reason, "message": reason, "lastTransitionTime": now}


PENDING_CLUSTER = {
    "rayClusterName": "digits-def34",
    "rayClusterStatus": {"readyWorkerReplicas": 0, "desiredWorkerReplicas": 1},
}


def service_step(
    doc: Object,
    ray: Object | None = None,
    *,
    jobs: dict[str, Object] | None = None,
    at: float = 0,
    kuberay: bool = True,
    foreign: bool = False,
    auth_unsupported: bool = False,
    pods: list[Object] | None = None,
) -> Object:
    """``doc`` with the status the plan writes, seeing the RayService ``ray`` (as KubeRay wrote it) ``at`` s after T0."""
    view = RayServiceView.from_object(ray, "digits") if ray is not None else None
    now = T0 + timedelta(seconds=at)
    observed = ServiceObserved(
        body=doc,
        trainingjobs={"digits": succeeded_job()} if jobs is None else jobs,
        rayservice=view,
        kuberay_installed=kuberay,
        now=now,
        foreign_rayservice=foreign,
        ray_auth_unsupported=auth_unsupported,
        pod_health=_pod_health(pods, now),
    )
    return {**copy.deepcopy(doc), "status": plan_service(observed).status.to_wire()}


def modelservice_scenarios() -> list[Scenario]:
    serving = service_step(service(), rayservice())
    upgrading = service_step(serving, rayservice(pending=PENDING_CLUSTER), at=10)
    stuck = service_step(upgrading, rayservice(pending=PENDING_CLUSTER), at=10 + 601)
    upgraded = service_step(stuck, rayservice(), at=700)
    running_job = {"metadata": {"name": "digits"}, "spec": {}, "status": {"phase": "Running"}}
    local = service(model={"uri": "./models/digits/1"})
    return [
        Scenario("not yet seen by the operator", service(), "Progressing", "Current"),
        Scenario("creating the RayService", service_step(service()), "Progressing", "InProgress"),
        Scenario(
            "deploying", service_step(service(), rayservice(ready=False, app="DEPLOYING")), "Progressing", "InProgress"
        ),
        Scenario("serving", serving, "Healthy", "Current"),
        Scenario("loading a new model", service_step(serving, rayservice(observed=0)), "Progressing", "InProgress"),
        Scenario("upgrading to a new cluster", upgrading, "Progressing", "InProgress"),
        Scenario("upgrade past its deadline", stuck, "Degraded", "Failed"),
        Scenario("upgrade finished", upgraded, "Healthy", "Current"),
        Scenario(
            "application failed", service_step(service(), rayservice(False, "DEPLOY_FAILED")), "Degraded", "Failed"
        ),
        Scenario(
            "waiting for the TrainingJob",
            service_step(service(), jobs={"digits": running_job}),
            "Progressing",
            "InProgress",
        ),
        Scenario(
            "model misses minMetrics",
            service_step(service(), jobs={"digits": succeeded_job(0.5)}),
            "Degraded",
            "Failed",
        ),
        Scenario("TrainingJob not found (yet)", service_step(service(), jobs={}), "Progressing", "InProgress"),
        Scenario("invalid spec", service_step(service(replicas=-1)), "Degraded", "Failed"),
        Scenario("KubeRay missing", service_step(service(), kuberay=False), "Degraded", "Failed"),
        Scenario("KubeRay without authOptions", service_step(service(), auth_unsupported=True), "Degraded", "Failed"),
        Scenario("local path on a cluster", service_step(local), "Degraded", "Failed"),
        Scenario(
            "waiting for a deleted namesake's RayService",
            service_step(service(), foreign=True),
            "Progressing",
            "InProgress",
        ),
        Scenario("spec edited, not yet seen", _edited(serving), "Progressing", "InProgress"),
        Scenario(
            "replicas crash-looping, nothing serves",
            service_step(service(), rayservice(ready=False, app="DEPLOYING"), pods=[crash_looping_pod()]),
            "Progressing",
            "InProgress",
        ),
        Scenario(
            "serving while a replica crash-loops",
            service_step(serving, rayservice(), pods=[crash_looping_pod()]),
            "Healthy",
            "Current",
        ),
        Scenario(
            "waiting for a node",
            service_step(service(), rayservice(ready=False, app="DEPLOYING"), pods=[unschedulable_pod("digits-w")]),
            "Progressing",
            "InProgress",
        ),
    ]


def all_scenarios() -> list[Scenario]:
    return [*trainingjob_scenarios(), *modelservice_scenarios()]
