"""What the Ray pods, their RayClusters and KubeRay's Warning Events say is wrong; pure.

``pod_health(pods, clusters, events, now)`` reads what the watches delivered for one TrainingJob or ModelService
and returns at most one problem per condition: ``Scheduled`` (a pod the scheduler cannot place, or a pod KubeRay
could not create) and ``PodsHealthy`` (an image that does not pull, a container that crashes, is OOM-killed or
exits non-zero). ``apply_pod_health`` folds that into the status: ``False`` with the reason while the problem lasts,
``True`` once it clears; a condition never set stays absent, so a healthy object gets no new conditions at all.

Messages hold only what changes with the problem (no "for 37s"), so an unchanged problem writes nothing; how
long a pod has waited is told in coarse steps, and ``requeue_after`` says when the next step is due.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from trainserve.api.conditions import ConditionStatus, find_condition

Object = dict[str, Any]

SCHEDULED = "Scheduled"
PODS_HEALTHY = "PodsHealthy"
POD_CONDITIONS = (SCHEDULED, PODS_HEALTHY)
#: Every reason a pod problem is reported with (each is a Warning Event when it appears).
POD_PROBLEM_REASONS = frozenset(
    {"Unschedulable", "PodCreationRefused", "ImagePullFailed", "OOMKilled", "CrashLoopBackOff", "ContainerFailed"}
)

#: Reasons of KubeRay's Warning Events when its pod create is refused (quota, admission webhooks, policies):
#: ray-operator/controllers/ray/utils/constant.go (FailedToCreateHeadPod, FailedToCreateWorkerPod); ``FailedCreate``
#: is the reason Kubernetes' own workload controllers use for the same refusal.
REFUSED_CREATE_REASONS = frozenset({"FailedToCreateHeadPod", "FailedToCreateWorkerPod", "FailedCreate"})
#: The RayCluster condition KubeRay sets while creating or deleting pods fails, and removes once a reconcile
#: succeeds (``RayClusterReplicaFailure`` in ray-operator/apis/ray/v1/raycluster_types.go).
REPLICA_FAILURE = "ReplicaFailure"
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
#: Lines and characters of a termination message kept in a condition message.
MESSAGE_LINES, MESSAGE_CHARS = 5, 600
#: Steps in which a pod's wait for the scheduler is reported (seconds), so its message changes rarely.
WAIT_STEPS = (60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400)


@dataclass(frozen=True)
class PodProblem:
    """One thing wrong: the condition it belongs to, a CamelCase reason and a message for people."""

    condition: str
    reason: str
    message: str


@dataclass(frozen=True)
class PodHealth:
    """At most one problem per condition, and when to look again (a wait step falls due)."""

    problems: dict[str, PodProblem]
    requeue_after: float | None = None


class _Draft(Protocol):
    @property
    def value(self) -> Any: ...

    def set(self, type_: str, status: ConditionStatus, reason: str, message: str) -> None: ...


def pod_health(
    pods: Iterable[Object], clusters: Iterable[Object], events: Iterable[Object], now: datetime
) -> PodHealth:
    """The problems the pods, their RayClusters and KubeRay's Warning Events show now (see the module docstring)."""
    live = sorted((p for p in pods if not _meta(p).get("deletionTimestamp")), key=lambda p: str(_meta(p).get("name")))
    found: dict[str, list[PodProblem]] = {SCHEDULED: [], PODS_HEALTHY: []}
    requeue: list[float] = []
    found[SCHEDULED] += refused_creations(live, list(clusters), list(events))
    for pod in live:
        waiting = unschedulable(pod, now)
        if waiting is not None:
            problem, next_step = waiting
            found[SCHEDULED].append(problem)
            if next_step is not None:
                requeue.append(next_step)
        found[PODS_HEALTHY] += container_problems(pod)
    problems = {kind: _summary(items) for kind, items in found.items() if items}
    return PodHealth(problems, min(requeue) if requeue else None)


def apply_pod_health(draft: _Draft, health: PodHealth) -> None:
    """``False`` with the problem's reason while there is one; ``True`` once a problem seen before is gone."""
    for kind in POD_CONDITIONS:
        problem = health.problems.get(kind)
        if problem is not None:
            draft.set(kind, "False", problem.reason, problem.message)
            continue
        previous = find_condition(draft.value.conditions, kind)
        if previous is not None and previous.status != "True":
            ok = "every Ray pod is scheduled" if kind == SCHEDULED else "no Ray pod reports a failing container"
            draft.set(kind, "True", "Scheduled" if kind == SCHEDULED else "PodsRecovered", ok)


def _summary(problems: list[PodProblem]) -> PodProblem:
    """The first problem (by severity order of discovery), naming how many more pods have one."""
    first = problems[0]
    if len(problems) == 1:
        return first
    return PodProblem(first.condition, first.reason, f"{first.message} (and {len(problems) - 1} more)")


def unschedulable(pod: Object, now: datetime) -> tuple[PodProblem, float | None] | None:
    """A pod the scheduler cannot place: its message and how long it has waited (in steps), with the seconds
    until the next step."""
    status = pod.get("status") or {}
    scheduled = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
    if scheduled is None or scheduled.get("status") != "False" or scheduled.get("reason") != "Unschedulable":
        return None
    since = _time(scheduled.get("lastTransitionTime")) or _time(_meta(pod).get("creationTimestamp"))
    waited = max(0.0, (now - since).total_seconds()) if since is not None else 0.0
    reached = [step for step in WAIT_STEPS if step <= waited]
    upcoming = [step for step in WAIT_STEPS if step > waited]
    how_long = f"for more than {_duration(reached[-1])}" if reached else "for less than a minute"
    message = (
        f"pod {_meta(pod).get('name')} has waited {how_long} for a node: "
        f"{scheduled.get('message') or 'no node fits it'}"
    )
    return PodProblem(SCHEDULED, "Unschedulable", message), (upcoming[0] - waited if upcoming else None)


def container_problems(pod: Object) -> list[PodProblem]:
    """An image that does not pull, or a container that crash-loops, was OOM-killed or exited non-zero."""
    status = pod.get("status") or {}
    images = {c.get("name"): c.get("image") for c in _containers(pod.get("spec") or {})}
    out = []
    name = _meta(pod).get("name")
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        where = f"pod {name} container {container.get('name')}"
        state, last = container.get("state") or {}, container.get("lastState") or {}
        waiting, exited = state.get("waiting") or {}, state.get("terminated") or {}
        # The last run matters only while the container waits to start again (a running one has recovered).
        terminated = exited or (last.get("terminated") or {} if waiting else {})
        if waiting.get("reason") in IMAGE_PULL_REASONS:
            image = images.get(container.get("name")) or container.get("image")
            detail = f": {waiting['message']}" if waiting.get("message") else ""
            out.append(PodProblem(PODS_HEALTHY, "ImagePullFailed", f"{where} cannot pull image {image}{detail}"))
        elif terminated.get("reason") == "OOMKilled":
            out.append(PodProblem(PODS_HEALTHY, "OOMKilled", f"{where} was OOMKilled{_termination(terminated)}"))
        elif waiting.get("reason") == "CrashLoopBackOff":
            out.append(
                PodProblem(
                    PODS_HEALTHY, "CrashLoopBackOff", f"{where} is in CrashLoopBackOff{_termination(terminated)}"
                )
            )
        elif exited.get("exitCode") not in (None, 0):
            reason = terminated.get("reason") or "Error"
            out.append(
                PodProblem(PODS_HEALTHY, "ContainerFailed", f"{where} failed ({reason}){_termination(terminated)}")
            )
    return out


def refused_creations(pods: list[Object], clusters: list[Object], events: list[Object]) -> list[PodProblem]:
    """Pod creates the API server refused KubeRay: its RayCluster's ``ReplicaFailure`` condition, or its Warning
    Events, each until a pod of that cluster is created after the last refusal."""
    ours = {str(_meta(c).get("name")) for c in clusters}
    out = []
    for cluster in sorted(clusters, key=lambda c: str(_meta(c).get("name"))):
        conditions = (cluster.get("status") or {}).get("conditions") or []
        failure = next((c for c in conditions if c.get("type") == REPLICA_FAILURE and c.get("status") == "True"), None)
        if failure is not None and "Create" in str(failure.get("reason") or ""):
            out.append(_refused(str(_meta(cluster).get("name")), str(failure.get("message") or failure.get("reason"))))
    newest_pod: dict[str, datetime] = {}
    for pod in pods:
        cluster_name = str((_meta(pod).get("labels") or {}).get("ray.io/cluster") or "")
        created = _time(_meta(pod).get("creationTimestamp"))
        if created is not None and (cluster_name not in newest_pod or created > newest_pod[cluster_name]):
            newest_pod[cluster_name] = created
    for event in sorted(events, key=lambda e: str(_meta(e).get("name"))):
        involved = event.get("involvedObject") or {}
        cluster_name = str(involved.get("name") or "")
        if event.get("reason") not in REFUSED_CREATE_REASONS or cluster_name not in ours:
            continue
        when = _time(event.get("lastTimestamp") or event.get("eventTime") or _meta(event).get("creationTimestamp"))
        created = newest_pod.get(cluster_name)
        if when is not None and created is not None and created > when:
            continue  # a pod was created since: the refusal is over
        out.append(_refused(cluster_name, str(event.get("message") or event.get("reason"))))
    return list(dict.fromkeys(out))  # a refusal told by both the condition and an Event counts once


def _refused(cluster: str, message: str) -> PodProblem:
    return PodProblem(
        SCHEDULED, "PodCreationRefused", f"KubeRay could not create a pod of RayCluster {cluster}: {message}"
    )


def _termination(terminated: Object) -> str:
    """``(exit code 137): last lines...`` from a terminated state."""
    code = terminated.get("exitCode")
    text = f" (exit code {code})" if code is not None else ""
    message = str(terminated.get("message") or "").strip()
    if message:
        tail = "\n".join(message.splitlines()[-MESSAGE_LINES:])[-MESSAGE_CHARS:]
        text += f"; last lines: {tail}"
    return text


def _containers(spec: Object) -> list[Object]:
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _meta(obj: Object) -> Object:
    return obj.get("metadata") or {}


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _duration(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}m"
