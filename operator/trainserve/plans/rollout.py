"""``fromTrainingJob.rollout: canary``: each newer passing version of the job's model earns its traffic; pure.

The version last promoted (``status.promoted``), else the one served (``status.model``), stays primary; the
job's newest passing version, when newer and not rejected before, runs as the canary under ``spec.canary``'s
policy (:func:`trainserve.plans.canary.plan_canary`). A rolled-back version goes into
``status.model.rejectedVersions`` with the figures that failed it, so only a newer version is tried next.
Shared by the operator and `trainserve local serve`.
"""

from __future__ import annotations

from trainserve.api.figures import Figures
from trainserve.api.modelservice import (
    MAX_REJECTED_VERSIONS,
    CanarySpec,
    ModelLineage,
    ModelServiceStatus,
    RejectedVersion,
    ServedModel,
)
from trainserve.api.serving import ModelTarget
from trainserve.plans.canary import CanaryPlan, plan_canary
from trainserve.plans.common import StatusDraft


def job_primary(status: ModelServiceStatus, newest: ModelTarget | None) -> ModelTarget | None:
    """What serves as primary: the version promoted last, else the one served, else the first passing version."""
    for held in (status.promoted, status.model):
        if held is not None and held.uri:
            return ModelTarget(uri=held.uri, version=held.version)
    return newest


def rejected(status: ModelServiceStatus) -> dict[int, RejectedVersion]:
    """The versions rolled back before, by number."""
    listed = status.model.rejected_versions if status.model is not None else None
    return {r.version: r for r in listed or [] if r.version is not None}


def plan_job_canary(
    policy: CanarySpec,
    newest: ModelTarget | None,
    lineage: ModelLineage | None,
    st: StatusDraft[ModelServiceStatus],
    primary: ModelTarget,
    window: Figures | None,
) -> CanaryPlan:
    """The canary for the job's ``newest`` passing version (with its ``lineage``) beside ``primary``."""
    status = st.value
    if newest is None or newest.version is None or primary.version is None or newest.version <= primary.version:
        status.canary = None
        st.set("Canary", "False", "NoNewerVersion", f"version {primary.version} is the newest that passes minMetrics")
        return CanaryPlan()
    failed = rejected(status).get(newest.version)
    if failed is not None:
        status.canary = None
        st.set(
            "Canary",
            "False",
            "RolledBack",
            f"version {newest.version} was rolled back ({failed.figures}); version {primary.version} keeps serving "
            "until a newer version of the TrainingJob arrives",
        )
        return CanaryPlan()
    plan = plan_canary(policy, newest, "", st, primary, window)
    if "rolled_back" in plan.results:
        _reject(status, newest, status.canary.message if status.canary is not None else None)
    if "promoted" in plan.results and status.promoted is not None:
        status.promoted.lineage = lineage
    return plan


def _reject(status: ModelServiceStatus, target: ModelTarget, figures: str | None) -> None:
    if status.model is None:
        status.model = ServedModel()
    listed = [r for r in status.model.rejected_versions or [] if r.version != target.version]
    listed.append(RejectedVersion(version=target.version, uri=target.uri, figures=figures))
    status.model.rejected_versions = listed[-MAX_REJECTED_VERSIONS:]
