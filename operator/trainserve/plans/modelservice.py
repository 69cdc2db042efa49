"""What a ModelService should look like, from what is observed; pure.

``plan_service(observed)`` takes the ModelService (as stored), the TrainingJobs of its namespace, its
RayService, whether KubeRay is installed, the time and, when a canary step is due, the canary's figures
since the step began. It returns the status to write, the Serve application to run (or None while there
is nothing to serve yet), the Events to post and when to look again. Level-triggered like
:mod:`trainserve.plans.trainingjob`: the canary's share and state live in ``status.canary``, so a restart resumes.

Model resolution keeps serving what runs: when ``fromTrainingJob`` points at a job that is running again
or whose newer model misses ``minMetrics``, the version in ``status.model`` stays; a newer version that
passes is rolled out in place (a ``serveConfigV2`` change).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from trainserve.api.conditions import find_condition
from trainserve.api.figures import Figures
from trainserve.api.modelservice import (
    DEFAULT_UPGRADE_DEADLINE_SECONDS,
    ModelLineage,
    ModelRef,
    ModelService,
    ModelServiceStatus,
    ServedModel,
    ServiceEndpoints,
)
from trainserve.api.serving import ModelTarget, ServeAppArgs, model_registries, serve_args
from trainserve.api.trainingjob import ModelStatus, TrainingJobStatus
from trainserve.api.validation import Problem
from trainserve.builders.raypod import SERVE_PORT
from trainserve.builders.rayservice import worker_shape
from trainserve.naming import MAX_MODELSERVICE_NAME, MODELSERVICE_LABEL, serve_service_name, service_name_problem
from trainserve.plans.canary import CanaryPlan, plan_canary
from trainserve.plans.common import (
    OLD_OBJECTS_RECHECK_SECONDS,
    StatusDraft,
    Transition,
    condition_events,
    invalid_spec_message,
    kuberay_missing,
    local_paths_message,
    parse_stored,
    ray_auth_unsupported,
    read_status,
    repaired_event,
    servable_model,
    status_patch,
)
from trainserve.plans.podhealth import POD_PROBLEM_REASONS, PodHealth, apply_pod_health
from trainserve.plans.readiness import summarise_modelservice
from trainserve.plans.rollout import job_primary, plan_job_canary
from trainserve.registry import RegisteredVersion, RegistryError, is_registry_uri

#: Reasons that are a warning even on a new ModelService (a first ``Ready=False`` is otherwise just starting).
WARNING_REASONS = frozenset(
    {
        "InvalidSpec",
        "LocalPathOnCluster",
        "KubeRayMissing",
        "RayAuthUnsupported",
        "ApplicationFailed",
        "WaitingForOldObjects",
        "UpgradeStuck",
    }
    | POD_PROBLEM_REASONS
)
RAYSERVICE_AUTH_UNSUPPORTED = ray_auth_unsupported("RayService", "the service starts once one of them is done")
RAYSERVICE_KUBERAY_MISSING = kuberay_missing("RayService", "the service starts once it is there")
_VERSION_FOLDER = re.compile(r"/(\d+)/?$")


@dataclass(frozen=True)
class RayServiceView:
    """The parts of an observed RayService the operator acts on."""

    name: str
    ready: bool
    app_status: str
    message: str
    current: bool  # KubeRay has acted on the latest spec (observedGeneration caught up)
    ready_workers: int
    desired_workers: int
    #: KubeRay is moving to a new Ray cluster (its ``UpgradeInProgress`` condition), and how far it got.
    upgrading: bool = False
    upgrade_progress: str = ""

    @classmethod
    def from_object(cls, obj: dict[str, Any], app_name: str) -> RayServiceView:
        metadata = obj.get("metadata") or {}
        status = obj.get("status") or {}
        conditions = status.get("conditions") or []
        ready_condition = next((c for c in conditions if c.get("type") == "Ready"), None)
        ready = (
            ready_condition.get("status") == "True"
            if ready_condition is not None
            else status.get("serviceStatus") == "Running"
        )
        active = status.get("activeServiceStatus") or {}
        app = (active.get("applicationStatuses") or {}).get(app_name) or {}
        messages = [str(app.get("message") or "")]
        for deployment, entry in sorted((app.get("serveDeploymentStatuses") or {}).items()):
            if entry.get("message"):
                messages.append(f"{deployment}: {entry['message']}")
        if not ready and ready_condition is not None and ready_condition.get("message"):
            messages.append(str(ready_condition["message"]))
        cluster = active.get("rayClusterStatus") or {}
        generation = metadata.get("generation")
        observed = status.get("observedGeneration")
        upgrading, progress = _upgrade_of(status, conditions, app_name)
        return cls(
            name=str(metadata.get("name", "")),
            ready=ready,
            app_status=str(app.get("status") or ""),
            message="; ".join(m for m in messages if m),
            current=generation is None or (observed is not None and observed >= generation),
            ready_workers=int(cluster.get("readyWorkerReplicas") or 0),
            desired_workers=int(cluster.get("desiredWorkerReplicas") or 0),
            upgrading=upgrading,
            upgrade_progress=progress,
        )


def _upgrade_of(status: dict[str, Any], conditions: list[dict[str, Any]], app_name: str) -> tuple[bool, str]:
    """Whether KubeRay is upgrading to a new cluster, and how far the new (pending) cluster got.

    KubeRay v1.3+ sets ``UpgradeInProgress=True`` while an active and a pending cluster both exist; older ones only
    fill ``pendingServiceStatus.rayClusterName`` (ray-operator/apis/ray/v1/rayservice_types.go)."""
    pending = status.get("pendingServiceStatus") or {}
    name = str(pending.get("rayClusterName") or "")
    condition = next((c for c in conditions if c.get("type") == "UpgradeInProgress"), None)
    active = (status.get("activeServiceStatus") or {}).get("rayClusterName")
    upgrading = condition.get("status") == "True" if condition is not None else bool(name and active)
    if not upgrading:
        return False, ""
    cluster = pending.get("rayClusterStatus") or {}
    parts = [
        f"{int(cluster.get('readyWorkerReplicas') or 0)} of {int(cluster.get('desiredWorkerReplicas') or 0)} "
        "workers ready"
    ]
    app = ((pending.get("applicationStatuses") or {}).get(app_name) or {}).get("status")
    if app:
        parts.append(f"application {app}")
    if pending.get("trafficRoutedPercent") is not None:
        parts.append(f"{pending['trafficRoutedPercent']}% of traffic")
    return True, f"new RayCluster {name or '(not created yet)'}: {', '.join(parts)}"


@dataclass(frozen=True)
class ServiceObserved:
    """Everything a reconcile looks at."""

    body: dict[str, Any]
    trainingjobs: dict[str, dict[str, Any]]  # by name, same namespace
    rayservice: RayServiceView | None
    kuberay_installed: bool
    now: datetime
    #: The canary's figures since its current step began, when the controller measured a due step.
    canary_window: Figures | None = None
    #: A RayService of this name that belongs to a deleted namesake (never taken over).
    foreign_rayservice: bool = False
    #: False for `trainserve local serve`, where local paths are what a user means.
    on_cluster: bool = True
    #: What the service's Ray pods, RayClusters and KubeRay's Warning Events say is wrong (None: not looked at).
    pod_health: PodHealth | None = None
    #: Ray token authentication is on, but KubeRay's RayService CRD has no ``authOptions``.
    ray_auth_unsupported: bool = False
    #: What the model registry said of each ``models:/`` URI in the spec (asked by the controller).
    registry: dict[str, RegisteredVersion | RegistryError] = field(default_factory=dict)


@dataclass
class ServicePlan:
    status: ModelServiceStatus
    service: ModelService | None = None
    #: The Serve application to run; None while there is no model to serve.
    args: ServeAppArgs | None = None
    storage_secret: str | None = None
    events: list[Transition] = field(default_factory=list)
    requeue_after: float | None = None
    #: Results of automatic canary decisions made now: "promoted" or "rolled_back".
    canary_results: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Resolution:
    """A model reference resolved: a target to serve, or why not (yet)."""

    target: ModelTarget | None
    reason: str = ""
    message: str = ""
    secret: str | None = None
    #: The ``models:/`` URI the target was resolved from.
    registered: str | None = None
    lineage: ModelLineage | None = None


def version_of_uri(uri: str) -> int | None:
    """``s3://b/models/digits/3`` -> 3: the layout TrainingJobs write (``<output.uri>/<version>``)."""
    match = _VERSION_FOLDER.search(uri)
    return int(match.group(1)) if match else None


def resolve(
    ref: ModelRef,
    trainingjobs: dict[str, dict[str, Any]],
    registry: dict[str, RegisteredVersion | RegistryError] | None = None,
) -> Resolution:
    """A ``uri`` as it is; a ``models:/`` URI as the registry answered; a ``fromTrainingJob`` once that job
    succeeded and its model passes ``minMetrics``."""
    if ref.uri is not None and is_registry_uri(ref.uri):
        answer = (registry or {}).get(ref.uri)
        if answer is None:
            return Resolution(None, "ResolvingModel", f"asking the registry which version {ref.uri} names")
        if isinstance(answer, RegistryError):
            return Resolution(None, answer.reason, answer.message)
        return Resolution(ModelTarget(uri=answer.source, version=answer.version), registered=ref.uri)
    if ref.uri is not None:
        return Resolution(ModelTarget(uri=ref.uri, version=version_of_uri(ref.uri)))
    assert ref.from_training_job is not None
    source = ref.from_training_job
    body = trainingjobs.get(source.name)
    if body is None:
        return Resolution(None, "TrainingJobNotFound", f"TrainingJob {source.name!r} does not exist in this namespace")
    try:
        status = TrainingJobStatus.model_validate(body.get("status") or {})
    except ValueError:
        status = TrainingJobStatus()
    secret = ((body.get("spec") or {}).get("storageSecretRef") or {}).get("name")
    found = servable_model(source.name, status, source.min_metrics)
    if found.model is None or found.model.uri is None:
        return Resolution(None, found.reason, found.message)
    target = ModelTarget(uri=found.model.uri, version=found.model.version)
    return Resolution(target, secret=secret, lineage=lineage_of(source.name, body, status, found.model))


def lineage_of(name: str, body: dict[str, Any], status: TrainingJobStatus, model: ModelStatus) -> ModelLineage:
    """Where a TrainingJob's model came from: the job itself, and what its workload reported with the model."""
    dataset = (body.get("spec") or {}).get("dataset") or {}
    builtin = dataset.get("builtin")
    return ModelLineage(
        training_job=name,
        training_job_uid=(body.get("metadata") or {}).get("uid"),
        attempt=status.attempts,
        dataset_uri=model.dataset_uri or dataset.get("uri") or (f"builtin:{builtin}" if builtin else None),
        dataset_fingerprint=model.dataset_fingerprint,
        resumed_from=model.resumed_from,
        spec_hash=model.spec_hash,
        metrics=dict(model.metrics),
    )


def service_url(name: str, namespace: str) -> str:
    return f"http://{serve_service_name(name)}.{namespace}.svc.cluster.local:{SERVE_PORT}"


def observed_status(body: dict[str, Any]) -> ModelServiceStatus:
    """The stored status; fields that cannot be read are left out (rebuilt from what is observed)."""
    return read_status(ModelServiceStatus, body.get("status"))[0]


def spec_problems(body: dict[str, Any]) -> tuple[ModelService | None, list[Problem]]:
    """The parsed ModelService, or the problems (field path, message, fix) that keep it from serving."""
    service, problems = parse_stored(body, service_name_problem, MAX_MODELSERVICE_NAME)
    assert service is None or isinstance(service, ModelService)
    return service, problems


_Status = StatusDraft[ModelServiceStatus]


def _served(target: ModelTarget, status: ModelServiceStatus, wanted: Resolution) -> ServedModel:
    """``target`` as ``status.model``: its lineage where known, the rejected versions kept."""
    before = status.model
    lineage = None
    if status.promoted is not None and status.promoted.uri == target.uri:
        lineage = status.promoted.lineage
    if lineage is None and wanted.target is not None and wanted.target.uri == target.uri:
        lineage = wanted.lineage
    if lineage is None and before is not None and before.uri == target.uri:
        lineage = before.lineage
    rejected = before.rejected_versions if before is not None else None
    registered = wanted.registered if wanted.target == target else None
    return ServedModel(
        uri=target.uri, version=target.version, registered=registered, lineage=lineage, rejected_versions=rejected
    )


def _target(served: ServedModel | None) -> ModelTarget | None:
    return ModelTarget(uri=served.uri, version=served.version) if served is not None and served.uri else None


def plan_service(observed: ServiceObserved) -> ServicePlan:
    """Decide; see the module docstring."""
    before, unreadable = read_status(ModelServiceStatus, observed.body.get("status"))
    metadata = observed.body.get("metadata") or {}
    st = _Status(before.model_copy(deep=True), observed.now.replace(microsecond=0), metadata.get("generation"))
    result = ServicePlan(status=st.value)
    service, problems = spec_problems(observed.body)
    if service is None:
        st.set("Ready", "False", "InvalidSpec", invalid_spec_message(problems))
    else:
        result.service = service
        _plan_valid(service, observed, st, result)
        if observed.pod_health is not None:
            apply_pod_health(st, observed.pod_health)
            waits = [w for w in (result.requeue_after, observed.pod_health.requeue_after) if w is not None]
            result.requeue_after = min(waits) if waits else None
    summarise_modelservice(st)
    st.value.observed_generation = metadata.get("generation")
    result.status = st.value
    result.events = (
        condition_events(  # the canary's own Events say more than its condition's; Ready speaks for the summary
            before.conditions,
            [c for c in st.value.conditions if c.type not in ("Canary", "Reconciling", "Stalled")],
            warning_when_false={"Ready"} if before.conditions else set(),
            warning_when_true=set(),
            warning_reasons=WARNING_REASONS,
        )
        + result.events
    )
    if unreadable:
        result.events.append(repaired_event(unreadable))
    return result


def _plan_valid(service: ModelService, observed: ServiceObserved, st: _Status, result: ServicePlan) -> None:
    status = st.value
    spec = service.spec
    name = service.metadata.name or ""
    namespace = service.metadata.namespace or str((observed.body.get("metadata") or {}).get("namespace") or "")
    model_name = spec.model_name or name
    status.url = service_url(name, namespace)
    status.endpoints = ServiceEndpoints(
        v1=f"{status.url}/v1/models/{model_name}:predict", v2=f"{status.url}/v2/models/{model_name}/infer"
    )
    status.selector = f"{MODELSERVICE_LABEL}={name},ray.io/node-type=worker"
    status.ray_service_name = name

    if not observed.kuberay_installed:
        st.set("Ready", "False", "KubeRayMissing", RAYSERVICE_KUBERAY_MISSING)
        return
    if observed.ray_auth_unsupported and observed.rayservice is None:
        st.set("Ready", "False", "RayAuthUnsupported", RAYSERVICE_AUTH_UNSUPPORTED)
        return
    local = local_paths_message(
        [
            ("spec.model.uri", spec.model.uri),
            ("spec.canary.model.uri", spec.canary.model.uri if spec.canary and spec.canary.model else None),
            ("spec.runtimeEnv.workingDir", spec.runtime_env.working_dir if spec.runtime_env else None),
        ]
    )
    if local is not None and observed.on_cluster:
        st.set("Ready", "False", "LocalPathOnCluster", local)
        return
    if observed.foreign_rayservice:
        st.set(
            "Ready",
            "False",
            "WaitingForOldObjects",
            f"RayService {name} still belongs to a deleted ModelService of the same name; this one starts once "
            "Kubernetes has removed it",
        )
        result.requeue_after = OLD_OBJECTS_RECHECK_SECONDS
        return

    wanted = resolve(spec.model, observed.trainingjobs, observed.registry)
    primary = _primary(service, status, wanted)
    if primary is None or wanted.target is None:
        primary = primary or _target(status.model)
        if primary is None:
            st.set("Ready", "False", "WaitingForModel", wanted.message)
            st.set("ModelLoaded", "False", wanted.reason, wanted.message)
            status.replicas, status.ready_replicas = 0, 0
            return
        st.set(
            "ModelLoaded",
            "True",
            wanted.reason,
            f"still serving version {primary.version}: {wanted.message}",
        )
    result.storage_secret = (spec.storage_secret_ref.name if spec.storage_secret_ref else None) or wanted.secret

    canary = _canary(service, observed, st, primary, wanted)
    result.events += canary.events
    result.canary_results += canary.results
    result.requeue_after = canary.requeue_after
    intervals = [registry.resolve_interval_seconds for registry in model_registries(service)]
    if intervals:  # resolve the registry URIs again then: an alias may have moved
        result.requeue_after = min([float(min(intervals)), *([canary.requeue_after] if canary.requeue_after else [])])
    if status.promoted is not None:
        primary = _target(status.promoted)
        assert primary is not None
    args = serve_args(service, primary, canary.target, canary.share, canary.mode)
    result.args = args
    _mirror_rayservice(args, observed, st, primary, wanted)
    _upgrade(service, observed.rayservice, st, result)


def _primary(service: ModelService, status: ModelServiceStatus, wanted: Resolution) -> ModelTarget | None:
    """The spec's model, or a promoted canary standing in for it; under ``rollout: canary`` what was promoted or
    served last (the job's newer versions must earn their place as canaries)."""
    if _job_canary(service):
        return job_primary(status, wanted.target)
    if status.promoted is not None and wanted.target is not None and status.promoted.replaces != wanted.target.uri:
        status.promoted = None  # spec.model moved on: the user's choice wins over an earlier promotion
    return _target(status.promoted) if status.promoted is not None else wanted.target


def _upgrade(service: ModelService, view: RayServiceView | None, st: _Status, result: ServicePlan) -> None:
    """``Upgrading`` while KubeRay moves to a new Ray cluster; past ``progressDeadlineSeconds`` (counted from the
    condition's transition) reason ``UpgradeStuck``, a Warning: KubeRay waits for the new cluster as long as it takes,
    e.g. for GPUs that never free up (ray-project/kuberay#1476), while the old cluster keeps serving."""
    previous = find_condition(st.value.conditions, "Upgrading")
    if view is None or not view.upgrading:
        if previous is not None and previous.status == "True":
            st.set("Upgrading", "False", "UpgradeComplete", "KubeRay finished moving to the new Ray cluster")
        return
    strategy = service.spec.upgrade_strategy
    deadline = strategy.progress_deadline_seconds if strategy else DEFAULT_UPGRADE_DEADLINE_SECONDS
    started = previous.last_transition_time if previous is not None and previous.status == "True" else None
    waited = (st.now - started).total_seconds() if started is not None else 0.0
    if waited >= deadline:
        st.set(
            "Upgrading",
            "True",
            "UpgradeStuck",
            f"the upgrade has waited longer than progressDeadlineSeconds ({deadline}s): {view.upgrade_progress}; "
            "the old cluster keeps serving. Free capacity (e.g. GPUs) for the new cluster, use "
            "upgradeStrategy.type NewClusterWithIncrementalUpgrade, or revert the change",
        )
        return
    st.set("Upgrading", "True", "UpgradeInProgress", f"KubeRay is moving to a new Ray cluster: {view.upgrade_progress}")
    remaining = deadline - waited
    result.requeue_after = remaining if result.requeue_after is None else min(result.requeue_after, remaining)


def _job_canary(service: ModelService) -> bool:
    source = service.spec.model.from_training_job
    return source is not None and source.rollout == "canary"


def _canary(
    service: ModelService, observed: ServiceObserved, st: _Status, primary: ModelTarget, wanted: Resolution
) -> CanaryPlan:
    spec = service.spec.canary
    if spec is not None and spec.model is None:
        return plan_job_canary(spec, wanted.target, wanted.lineage, st, primary, observed.canary_window)
    found = (
        resolve(spec.model, observed.trainingjobs, observed.registry)
        if spec is not None and spec.model
        else Resolution(None)
    )
    return plan_canary(spec, found.target, found.message, st, primary, observed.canary_window, found.reason)


def _mirror_rayservice(
    args: ServeAppArgs, observed: ServiceObserved, st: _Status, primary: ModelTarget, wanted: Resolution
) -> None:
    """Ready, ModelLoaded, replicas and the served model, from what KubeRay reports."""
    status = st.value
    view = observed.rayservice
    shape = worker_shape(args)
    desired = args.autoscaling.min_replicas if args.autoscaling is not None else args.replicas
    status.replicas = desired
    if view is None:
        st.set("Ready", "False", "Creating", f"creating RayService {status.ray_service_name}")
        status.ready_replicas = 0
        return
    if args.autoscaling is not None and view.desired_workers:
        status.replicas = min(
            args.autoscaling.max_replicas, max(desired, view.desired_workers * shape.replicas_per_pod)
        )
    failed = view.app_status in ("DEPLOY_FAILED", "UNHEALTHY")
    capacity = view.ready_workers * shape.replicas_per_pod
    status.ready_replicas = min(status.replicas, capacity) if view.ready else 0
    if view.ready:
        st.set("Ready", "True", "Serving", f"answering at {status.url}")
    elif failed:
        st.set("Ready", "False", "ApplicationFailed", view.message or f"the Serve application is {view.app_status}")
    else:
        detail = f": {view.message}" if view.message else ""
        st.set("Ready", "False", "Deploying", f"RayService {view.name} is starting{detail}")
    if failed:
        st.set("ModelLoaded", "False", "ApplicationFailed", view.message or view.app_status)
    elif view.current and view.app_status == "RUNNING":
        status.model = _served(primary, status, wanted)
        if wanted.target is not None or status.promoted is not None:
            where = f"version {primary.version} from {primary.uri}" if primary.version is not None else primary.uri
            st.set("ModelLoaded", "True", "Loaded", f"serving {where}")
    else:
        st.set("ModelLoaded", "False", "Loading", "the Serve application is deploying the model")


def service_status_patch(before: dict[str, Any] | None, after: ModelServiceStatus) -> dict[str, Any]:
    """A JSON merge patch of the status fields that differ; empty when nothing changed."""
    return status_patch(before, after, ModelServiceStatus)
