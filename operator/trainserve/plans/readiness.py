"""The summary conditions both kinds carry for tools that know no trainserve: ``Ready``, ``Reconciling`` and
``Stalled``; pure.

They follow kstatus (sigs.k8s.io/cli-utils pkg/kstatus: ``checkGenericProperties`` in status/generic.go reads
``Reconciling=True`` as InProgress and ``Stalled=True`` as Failed, ``checkReadyCondition`` in status/status.go reads
``Ready``), so Flux health checks, kpt and ``kubectl wait --for=condition=Ready`` need no custom check. ``Reconciling``
and ``Stalled`` are "abnormal-true": present only while True, as kstatus reads an absent one as False.
"""

from __future__ import annotations

from dataclasses import dataclass

from trainserve.api.base import Condition
from trainserve.api.conditions import find_condition
from trainserve.api.modelservice import ModelServiceStatus
from trainserve.api.trainingjob import TrainingJobStatus
from trainserve.plans.common import StatusDraft

#: The summary conditions; they repeat what the kinds' own conditions say, so they post no Events of their own.
SUMMARY_CONDITIONS = frozenset({"Ready", "Reconciling", "Stalled"})
#: A ModelService's ``Ready=False`` reasons that need a person (or another system) to act: kstatus ``Failed``.
SERVICE_STALLED_REASONS = frozenset(
    {"InvalidSpec", "LocalPathOnCluster", "KubeRayMissing", "RayAuthUnsupported", "ApplicationFailed"}
)
#: Why a ModelService has no model to serve that no waiting will change (a TrainingJob not found yet may be applied
#: in the same sync: that one is waited for).
MODEL_STALLED_REASONS = frozenset({"MetricsBelowThreshold"})
#: Why a TrainingJob cannot start or go on until something changes (besides ``Valid=False`` and ``Failed``).
JOB_STALLED_REASONS = frozenset({"KubeRayMissing", "RayAuthUnsupported"})


@dataclass(frozen=True)
class Reading:
    """Why, in a condition's terms."""

    reason: str
    message: str

    @classmethod
    def of(cls, condition: Condition) -> Reading:
        return cls(condition.reason or condition.type, condition.message or "")


def _flags(
    st: StatusDraft[TrainingJobStatus] | StatusDraft[ModelServiceStatus],
    reconciling: Reading | None,
    stalled: Reading | None,
) -> None:
    for type_, reading in (("Reconciling", reconciling), ("Stalled", stalled)):
        if reading is None:
            st.drop(type_)
        else:
            st.set(type_, "True", reading.reason, reading.message)


def _true(conditions: list[Condition], type_: str) -> Condition | None:
    condition = find_condition(conditions, type_)
    return condition if condition is not None and condition.status == "True" else None


def _false(conditions: list[Condition], type_: str) -> Condition | None:
    condition = find_condition(conditions, type_)
    return condition if condition is not None and condition.status == "False" else None


def summarise_trainingjob(st: StatusDraft[TrainingJobStatus], user_suspended: bool) -> None:
    """Succeeded: Ready. Failed, an invalid spec, no KubeRay: Stalled. Suspended by ``runPolicy.suspend``: neither,
    and no Ready (kstatus reads a Job suspended by its spec as Current: status/core.go ``jobConditions``; Ready=False
    would read as InProgress). Anything else (pending, running, queued by Kueue, retrying): Reconciling."""
    status = st.value
    conditions = status.conditions
    stalled = _job_stalled(status)
    if status.phase == "Succeeded":
        succeeded = _true(conditions, "Succeeded")
        st.set("Ready", "True", "Succeeded", Reading.of(succeeded).message if succeeded else "training finished")
        _flags(st, None, stalled)
        return
    suspended = _true(conditions, "Suspended")
    by_spec = (
        status.phase == "Suspended" and user_suspended and suspended is not None and suspended.reason == "Suspended"
    )
    if stalled is None and by_spec:
        st.drop("Ready")
        _flags(st, None, None)
        return
    progress = suspended or find_condition(conditions, "Running") or find_condition(conditions, "Created")
    reading = stalled or (Reading.of(progress) if progress is not None else Reading("Pending", "starting"))
    st.set("Ready", "False", reading.reason, reading.message)
    _flags(st, None if stalled else reading, stalled)


def _job_stalled(status: TrainingJobStatus) -> Reading | None:
    invalid, created = _false(status.conditions, "Valid"), _false(status.conditions, "Created")
    failed = _true(status.conditions, "Failed")
    if invalid is not None:
        return Reading.of(invalid)
    if status.phase == "Failed" and failed is not None:
        return Reading.of(failed)
    if created is not None and created.reason in JOB_STALLED_REASONS:
        return Reading.of(created)
    return None


def summarise_modelservice(st: StatusDraft[ModelServiceStatus]) -> None:
    """Ready stays as the plan set it. Stalled: a reason only a change ends (see the reason sets) or an upgrade past
    its deadline. Reconciling: not ready yet, rolling to a new cluster, or loading a new model."""
    conditions = st.value.conditions
    ready, upgrading = find_condition(conditions, "Ready"), _true(conditions, "Upgrading")
    loaded = find_condition(conditions, "ModelLoaded")
    not_ready = ready if ready is not None and ready.status != "True" else None
    stalled: Reading | None = None
    if upgrading is not None and upgrading.reason == "UpgradeStuck":
        stalled = Reading.of(upgrading)
    elif not_ready is not None and (
        not_ready.reason in SERVICE_STALLED_REASONS
        or (loaded is not None and loaded.status == "False" and loaded.reason in MODEL_STALLED_REASONS)
    ):
        stalled = Reading.of(not_ready)
    reconciling: Reading | None = None
    if stalled is None:
        if not_ready is not None:
            reconciling = Reading.of(not_ready)
        elif upgrading is not None:
            reconciling = Reading.of(upgrading)
        elif loaded is not None and loaded.status == "False":
            reconciling = Reading.of(loaded)
    _flags(st, reconciling, stalled)
