"""What a TrainingJob should look like, from what is observed; pure.

``plan(observed)`` takes the TrainingJob (as stored), its RayJobs, whether KubeRay is installed and the time,
and returns the status to write, what to do to the children, the Events to post and when to look again.
It is level-triggered: it never relies on remembering an earlier call, so a missed watch event, an
operator restart or a retry after an API error all end in the same place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from trainserve.api.conditions import find_condition
from trainserve.api.progress import tracking_condition
from trainserve.api.trainingjob import TrainingJob, TrainingJobStatus
from trainserve.api.validation import Problem
from trainserve.builders.rayjob import section_hashes
from trainserve.naming import (
    ATTEMPT_LABEL,
    KUEUE_QUEUE_LABEL,
    MAX_TRAININGJOB_NAME,
    SPEC_HASH_ANNOTATION,
    name_problem,
    rayjob_name,
)
from trainserve.plans.common import (
    KUBERAY_MISSING_MESSAGE,
    OLD_OBJECTS_RECHECK_SECONDS,
    StatusDraft,
    Transition,
    condition_events,
    invalid_spec_message,
    local_paths_message,
    parse_stored,
    ray_auth_unsupported,
    read_status,
    repaired_event,
)
from trainserve.plans.common import status_patch as common_status_patch
from trainserve.plans.podhealth import POD_CONDITIONS, PodHealth, apply_pod_health
from trainserve.plans.readiness import SUMMARY_CONDITIONS, summarise_trainingjob

FINISHED = ("Succeeded", "Failed")


#: Conditions that tell a user something is wrong when True (or, for these two, when False).
_WARNING_WHEN_TRUE = {"Failed"}
_WARNING_WHEN_FALSE = {"Valid", "Created", "Tracking", *POD_CONDITIONS}


@dataclass(frozen=True)
class RayJobView:
    """The parts of an observed RayJob the operator acts on."""

    name: str
    attempt: int
    deployment_status: str = ""
    job_status: str = ""
    reason: str | None = None
    message: str | None = None
    suspend: bool = False
    spec_hashes: dict[str, str] = field(default_factory=dict)
    deleting: bool = False

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> RayJobView:
        metadata = obj.get("metadata") or {}
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        status = obj.get("status") or {}
        try:
            attempt = int(labels.get(ATTEMPT_LABEL, "0"))
        except ValueError:
            attempt = 0
        try:
            hashes = json.loads(annotations.get(SPEC_HASH_ANNOTATION, "{}"))
        except ValueError:
            hashes = {}
        return cls(
            name=str(metadata.get("name", "")),
            attempt=attempt,
            deployment_status=str(status.get("jobDeploymentStatus") or ""),
            job_status=str(status.get("jobStatus") or ""),
            reason=status.get("reason"),
            message=status.get("message"),
            suspend=bool((obj.get("spec") or {}).get("suspend", False)),
            spec_hashes=hashes if isinstance(hashes, dict) else {},
            deleting=bool(metadata.get("deletionTimestamp")),
        )

    @property
    def succeeded(self) -> bool:
        return self.deployment_status == "Complete" and self.job_status == "SUCCEEDED"

    @property
    def failed(self) -> bool:
        return self.deployment_status in ("Failed", "ValidationFailed") or (
            self.deployment_status == "Complete" and self.job_status in ("FAILED", "STOPPED")
        )

    @property
    def finished(self) -> bool:
        return self.succeeded or self.failed


RAYJOB_AUTH_UNSUPPORTED = ray_auth_unsupported("RayJob", "the job starts once one of them is done")


@dataclass(frozen=True)
class Observed:
    """Everything a reconcile looks at."""

    body: dict[str, Any]
    rayjobs: list[RayJobView]
    kuberay_installed: bool
    now: datetime
    #: RayJobs with our label that belong to a deleted namesake (still removed by Kubernetes or KubeRay).
    foreign_rayjobs: frozenset[str] = frozenset()
    #: The job's access objects (e.g. ``ServiceAccount x``) that still belong to a deleted namesake.
    foreign_access: tuple[str, ...] = ()
    #: What the job's Ray pods, RayClusters and KubeRay's Warning Events say is wrong (None: not looked at).
    pod_health: PodHealth | None = None
    #: Ray token authentication is on, but KubeRay's RayJob CRD has no ``authOptions``.
    ray_auth_unsupported: bool = False


@dataclass
class Plan:
    """The outcome of a reconcile: the status to write and what to do to the children."""

    status: TrainingJobStatus
    job: TrainingJob | None = None
    create_attempt: int | None = None
    #: ``spec.suspend`` to set on the current RayJob, when it differs.
    set_suspend: bool | None = None
    delete_rayjobs: list[str] = field(default_factory=list)
    delete_access: bool = False
    deadline_remaining: int | None = None
    events: list[Transition] = field(default_factory=list)
    requeue_after: float | None = None
    finished_now: bool = False


def observed_status(body: dict[str, Any]) -> TrainingJobStatus:
    """The stored status; fields that cannot be read are left out (rebuilt from the children)."""
    return read_status(TrainingJobStatus, body.get("status"))[0]


def spec_problems(body: dict[str, Any]) -> tuple[TrainingJob | None, list[Problem]]:
    """The parsed TrainingJob, or the problems (field path, message, fix) that keep it from running."""
    job, problems = parse_stored(body, name_problem, MAX_TRAININGJOB_NAME)
    assert job is None or isinstance(job, TrainingJob)
    return job, problems


class _Status(StatusDraft[TrainingJobStatus]):
    """A TrainingJob status being rewritten."""

    def phase(self, phase: Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]) -> None:
        self.value.phase = phase


def plan(observed: Observed) -> Plan:
    """Decide; see the module docstring."""
    before, unreadable = read_status(TrainingJobStatus, observed.body.get("status"))
    generation = (observed.body.get("metadata") or {}).get("generation")
    st = _Status(before.model_copy(deep=True), observed.now.replace(microsecond=0), generation)
    result = Plan(status=st.value)
    job, problems = spec_problems(observed.body)
    if job is None:
        _invalid(st, problems)
    else:
        result.job = job
        _plan_valid(job, observed, st, result)
        if observed.pod_health is not None and st.value.phase not in FINISHED:
            _fold_pod_health(observed.pod_health, st, result)
    # The chief reports its MLflow run in status.mlflow (it writes no conditions): the condition is ours.
    st.value.conditions = tracking_condition(st.value, st.now, generation)
    summarise_trainingjob(st, user_suspended=job is not None and job.spec.run_policy.suspend)
    st.value.observed_generation = generation
    result.status = st.value
    result.events = (
        condition_events(
            before.conditions,
            [c for c in st.value.conditions if c.type not in SUMMARY_CONDITIONS],
            warning_when_true=_WARNING_WHEN_TRUE,
            warning_when_false=_WARNING_WHEN_FALSE,
        )
        + result.events
    )
    if unreadable:
        result.events.append(repaired_event(unreadable))
    result.finished_now = before.phase not in FINISHED and st.value.phase in FINISHED
    return result


def _fold_pod_health(health: PodHealth, st: _Status, result: Plan) -> None:
    """``Scheduled`` / ``PodsHealthy`` from the Ray pods while the job runs (a finished job keeps the last word)."""
    apply_pod_health(st, health)
    waits = [w for w in (result.requeue_after, health.requeue_after) if w is not None]
    result.requeue_after = min(waits) if waits else None


def _invalid(st: _Status, problems: list[Problem]) -> None:
    """Reported once (the status then equals what is stored), not retried until the spec changes."""
    st.set("Valid", "False", "InvalidSpec", invalid_spec_message(problems))
    if st.value.phase is None:
        st.phase("Pending")
    if st.value.phase not in FINISHED and find_condition(st.value.conditions, "Created") is None:
        st.set("Created", "False", "InvalidSpec", "not started: the spec is invalid, see the Valid condition")


def _current(observed: Observed, status: TrainingJobStatus) -> tuple[int, RayJobView | None]:
    """The current attempt number (from status and children, whichever is further) and its RayJob."""
    attempt = max([status.attempts or 0, *(rj.attempt for rj in observed.rayjobs)])
    current = next((rj for rj in observed.rayjobs if rj.attempt == attempt and not rj.deleting), None)
    return attempt, current


def _changed_sections(job: TrainingJob, current: RayJobView | None) -> list[str]:
    if current is None or not current.spec_hashes:
        return []
    now = section_hashes(job)
    return [f"spec.{key}" for key, digest in now.items() if current.spec_hashes.get(key, digest) != digest]


def _plan_valid(job: TrainingJob, observed: Observed, st: _Status, result: Plan) -> None:
    status = st.value
    attempt, current = _current(observed, status)
    status.attempts = attempt or status.attempts
    if status.phase in FINISHED:
        _after_finish(job, observed, st, result)
        return
    changed = _check_immutable(job, current, st) or _check_cluster_paths(job, st)
    if not observed.kuberay_installed:
        st.set("Created", "False", "KubeRayMissing", KUBERAY_MISSING_MESSAGE)
        st.phase(status.phase if status.phase == "Running" else "Pending")
        return
    if observed.ray_auth_unsupported and current is None:
        st.set("Created", "False", "RayAuthUnsupported", RAYJOB_AUTH_UNSUPPORTED)
        st.phase("Pending")
        return
    if _deadline_passed(job, observed, current, st, result):
        return
    if current is None:
        if not changed:  # no RayJob for the current attempt yet (first start, or deleted under us)
            _first_start(job, attempt or 1, st, result, observed)
        return
    status.ray_job_name = current.name
    if current.succeeded:
        _on_succeeded(job, observed, st, result)
    elif current.failed:
        _on_failed(job, observed, attempt, current, changed, st, result)
    else:
        _mirror_attempt(job, attempt, current, st, result)


def _check_immutable(job: TrainingJob, current: RayJobView | None, st: _Status) -> list[str]:
    """``Valid``: the immutable sections that changed since the current attempt started (none: valid)."""
    changed = _changed_sections(job, current)
    if changed:
        st.set(
            "Valid",
            "False",
            "ImmutableFieldChanged",
            f"{', '.join(changed)} changed while the job exists, which is not allowed: the running attempt "
            "keeps the old values. Revert the change, or delete the TrainingJob and create a new one.",
        )
    else:
        st.set("Valid", "True", "SpecAccepted", "the spec is valid")
    return changed


def _check_cluster_paths(job: TrainingJob, st: _Status) -> list[str]:
    """``Valid=False`` (``LocalPathOnCluster``) for a location only one pod could see; no attempt starts."""
    spec = job.spec
    message = local_paths_message(
        [
            ("spec.dataset.uri", spec.dataset.uri),
            ("spec.output.uri", spec.output.uri),
            ("spec.checkpoint.uri", spec.checkpoint.uri),
            ("spec.runtimeEnv.workingDir", spec.runtime_env.working_dir if spec.runtime_env else None),
        ]
    )
    if message is None:
        return []
    st.set("Valid", "False", "LocalPathOnCluster", message)
    if st.value.phase is None:
        st.phase("Pending")
    return ["local paths"]


def _deadline_passed(
    job: TrainingJob, observed: Observed, current: RayJobView | None, st: _Status, result: Plan
) -> bool:
    """``activeDeadlineSeconds`` over all attempts: fails the job once it passed, else says when to look again."""
    deadline = job.spec.run_policy.active_deadline_seconds
    start = st.value.start_time
    if deadline is None or start is None:
        return False
    remaining = deadline - int((st.now - start).total_seconds())
    if remaining <= 0 or (current is not None and current.failed and current.reason == "DeadlineExceeded"):
        _fail(st, "DeadlineExceeded", f"the job ran longer than activeDeadlineSeconds ({deadline}s)")
        if current is not None and not current.finished:
            result.delete_rayjobs.append(current.name)  # stops the Ray cluster now
        _after_finish(job, observed, st, result)
        return True
    result.requeue_after = float(remaining)
    result.deadline_remaining = remaining
    return False


def _start_attempt(job: TrainingJob, attempt: int, st: _Status, result: Plan, observed: Observed) -> None:
    """Create the RayJob of ``attempt``: the first one, or a retry that resumes from the last checkpoint; but
    not while a deleted namesake's objects still stand in its way (they are never taken over)."""
    status = st.value
    name = rayjob_name(job.metadata.name or "", attempt)
    blockers = [f"RayJob {name}"] if name in observed.foreign_rayjobs else []
    blockers += observed.foreign_access
    if blockers:
        st.set(
            "Created",
            "False",
            "WaitingForOldObjects",
            f"{', '.join(blockers)} still belong to a deleted TrainingJob of the same name; attempt {attempt} "
            "starts once Kubernetes has removed them",
        )
        result.requeue_after = min(result.requeue_after or OLD_OBJECTS_RECHECK_SECONDS, OLD_OBJECTS_RECHECK_SECONDS)
        return
    result.create_attempt = attempt
    status.attempts = attempt
    status.ray_job_name = name
    st.set("Created", "True", "RayJobCreated", f"created RayJob {status.ray_job_name} (attempt {attempt})")


def _first_start(job: TrainingJob, attempt: int, st: _Status, result: Plan, observed: Observed) -> None:
    st.value.start_time = st.value.start_time or st.now
    _start_attempt(job, attempt, st, result, observed)
    if job.spec.run_policy.suspend:
        _suspended(st, "Suspended", "suspended before start: set runPolicy.suspend to false to start")
    elif st.value.phase != "Running":
        st.phase("Pending")


def _on_succeeded(job: TrainingJob, observed: Observed, st: _Status, result: Plan) -> None:
    status = st.value
    version = status.model.version if status.model else None
    message = f"model version {version} at {status.model.uri}" if status.model and status.model.uri else ""
    st.phase("Succeeded")
    status.completion_time = st.now
    st.set("Running", "False", "Completed", "training finished")
    if _is_true(st, "Suspended"):
        st.set("Suspended", "False", "Completed", "training finished")
    st.set("Succeeded", "True", "Succeeded", message or "training finished; the model was not reported")
    _after_finish(job, observed, st, result)


def _on_failed(
    job: TrainingJob,
    observed: Observed,
    attempt: int,
    current: RayJobView,
    changed: list[str],
    st: _Status,
    result: Plan,
) -> None:
    """Retry as the next attempt while ``backoffLimit`` allows (and the spec did not change), else fail."""
    policy = job.spec.run_policy
    reason = current.reason or "TrainingFailed"
    detail = current.message or f"RayJob {current.name} failed"
    if attempt <= policy.backoff_limit and not changed:
        nxt = attempt + 1
        st.set(
            "Failed",
            "False",
            reason,
            f"attempt {attempt} failed ({detail}); retrying as attempt {nxt} of {policy.backoff_limit + 1}, "
            "resuming from the last checkpoint",
        )
        _start_attempt(job, nxt, st, result, observed)
        st.set("Running", "False", "Retrying", f"attempt {attempt} failed; starting attempt {nxt}")
        st.phase("Pending")
        return
    limit = f"all {attempt} attempts failed" if attempt > 1 else "the attempt failed"
    _fail(st, reason, f"{limit} (backoffLimit {policy.backoff_limit}); last: {detail}")
    _after_finish(job, observed, st, result)


def _mirror_attempt(job: TrainingJob, attempt: int, current: RayJobView, st: _Status, result: Plan) -> None:
    """An attempt in progress: pass suspend through (ours or Kueue's), mirror KubeRay's view."""
    policy = job.spec.run_policy
    kueue = KUEUE_QUEUE_LABEL in job.metadata.labels
    desired_suspend = policy.suspend or (current.suspend if kueue else False)
    if desired_suspend != current.suspend and not (kueue and not policy.suspend):
        result.set_suspend = desired_suspend
    if policy.suspend or current.deployment_status in ("Suspending", "Suspended"):
        done = current.deployment_status == "Suspended"
        who = "runPolicy.suspend is true" if policy.suspend else "suspended by the queue (Kueue)"
        _suspended(
            st,
            "Suspended" if done else "Suspending",
            f"{who}: the Ray cluster {'is torn down' if done else 'is being torn down'}; "
            "it resumes from the last checkpoint when unsuspended",
        )
        return
    if _is_true(st, "Suspended"):
        st.set("Suspended", "False", "Resumed", "resumed; training continues from the last checkpoint")
    st.set("Created", "True", "RayJobCreated", f"created RayJob {current.name} (attempt {attempt})")
    if current.deployment_status == "Running" and current.job_status == "RUNNING":
        st.phase("Running")
        st.set("Running", "True", "Training", f"RayJob {current.name} is running (attempt {attempt})")
    else:
        st.phase("Pending")
        state = current.deployment_status or "New"
        st.set(
            "Running",
            "False",
            "Starting",
            f"RayJob {current.name}: {state}, job {current.job_status or 'not submitted'}",
        )


def _has(st: _Status, type_: str) -> bool:
    return find_condition(st.value.conditions, type_) is not None


def _is_true(st: _Status, type_: str) -> bool:
    condition = find_condition(st.value.conditions, type_)
    return condition is not None and condition.status == "True"


def _suspended(st: _Status, reason: str, message: str) -> None:
    st.phase("Suspended")
    st.set("Suspended", "True", reason, message)
    if _has(st, "Running"):
        st.set("Running", "False", "Suspended", "suspended")


def _fail(st: _Status, reason: str, message: str) -> None:
    st.phase("Failed")
    st.value.completion_time = st.now
    st.set("Failed", "True", reason, message)
    if _has(st, "Running"):
        st.set("Running", "False", reason, message)
    if _is_true(st, "Suspended"):
        st.set("Suspended", "False", reason, "finished")


def _after_finish(job: TrainingJob, observed: Observed, st: _Status, result: Plan) -> None:
    """A finished job never starts again; after ``ttlSecondsAfterFinished`` its children go."""
    ttl = job.spec.run_policy.ttl_seconds_after_finished
    completed = st.value.completion_time
    children = [rj.name for rj in observed.rayjobs if not rj.deleting]
    if ttl is None or completed is None or not children:
        return
    due = completed + timedelta(seconds=ttl)
    if st.now >= due:
        result.delete_rayjobs = sorted(set(result.delete_rayjobs) | set(children))
        result.delete_access = True
        result.events.append(
            Transition("Normal", "CleanedUp", f"deleted {', '.join(children)} after ttlSecondsAfterFinished ({ttl}s)")
        )
    else:
        result.requeue_after = (due - st.now).total_seconds()


def status_patch(before: dict[str, Any] | None, after: TrainingJobStatus) -> dict[str, Any]:
    """A JSON merge patch of the top-level status fields that differ; empty when nothing changed.

    ``progress``, ``lastCheckpoint`` and ``model`` belong to the training run (it patches them itself); the
    operator never rewrites them, so a concurrent progress report is never lost.
    """
    return common_status_patch(before, after, TrainingJobStatus, skip={"progress", "lastCheckpoint", "model"})
