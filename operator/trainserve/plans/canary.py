"""Automatic canary promotion; pure.

:func:`judge` turns the figures of one step (the canary's window since the step began) and the policy into a
verdict; :func:`plan_canary` keeps ``status.canary`` and the ``Canary`` condition in step with the spec and
applies the verdict. The controllers measure the window (:mod:`trainserve.controllers.canary_windows`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from trainserve.api.figures import Figures
from trainserve.api.modelservice import AutoPromote, CanarySpec, CanaryStatus, ModelServiceStatus, PromotedModel
from trainserve.api.serving import ModelTarget
from trainserve.plans.common import StatusDraft, Transition


@dataclass(frozen=True)
class Verdict:
    """``wait`` (too few requests yet), ``rollback`` (a limit breached), ``step`` (raise the share), ``promote``."""

    action: Literal["wait", "rollback", "step", "promote"]
    share: int
    breaches: tuple[str, ...] = ()


def judge(window: Figures | None, policy: AutoPromote, share: int) -> Verdict:
    """The verdict on one step: healthy figures over at least ``minRequests`` raise the share by a step."""
    if window is None or window.requests < policy.min_requests:
        return Verdict("wait", share)
    breaches = []
    if window.error_rate > policy.max_error_rate:
        breaches.append(f"error rate {window.error_rate:.2%} > {policy.max_error_rate:.2%}")
    p95 = window.p95_ms
    if policy.max_latency_p95_ms is not None and p95 is not None and p95 > policy.max_latency_p95_ms:
        breaches.append(f"p95 {p95:.1f} ms > {policy.max_latency_p95_ms} ms")
    if breaches:
        return Verdict("rollback", 0, tuple(breaches))
    raised = min(100, share + policy.step_percent)
    return Verdict("promote" if raised >= 100 else "step", raised)


@dataclass
class CanaryPlan:
    """The canary to run beside the primary and its share; the Events and promotion results of this step."""

    target: ModelTarget | None = None
    share: int | None = None
    events: list[Transition] = field(default_factory=list)
    #: "promoted" or "rolled_back", for the operator's metrics.
    results: list[str] = field(default_factory=list)
    requeue_after: float | None = None


def plan_canary(
    spec: CanarySpec | None,
    found: ModelTarget | None,
    not_found: str,
    st: StatusDraft[ModelServiceStatus],
    primary: ModelTarget,
    window: Figures | None,
    reason: str = "",
) -> CanaryPlan:
    """The canary for ``spec`` (resolved to ``found``, or not, with ``reason``/``not_found`` saying why)."""
    status = st.value
    if spec is None:
        status.canary = None
        st.drop("Canary")
        return CanaryPlan()
    if found is None:
        status.canary = None
        st.set("Canary", "False", reason, f"the canary is not deployed: {not_found}")
        return CanaryPlan()
    if status.promoted is not None and status.promoted.uri == found.uri:
        status.canary = None
        st.set("Canary", "False", "Promoted", f"version {found.version} was promoted and serves all requests")
        return CanaryPlan()
    if found.uri == primary.uri:
        status.canary = None
        st.set("Canary", "False", "SameAsPrimary", "the canary is the model already served as primary")
        return CanaryPlan()
    return _run_canary(spec, found, st, primary, window)


def _run_canary(
    spec: CanarySpec,
    target: ModelTarget,
    st: StatusDraft[ModelServiceStatus],
    primary: ModelTarget,
    window: Figures | None,
) -> CanaryPlan:
    status = st.value
    out = CanaryPlan(target=target)
    current = status.canary if status.canary is not None and status.canary.uri == target.uri else None
    if current is None or current.state is None:
        current = CanaryStatus(
            uri=target.uri,
            version=target.version,
            traffic_percent=spec.traffic_percent,
            state="Progressing" if spec.auto_promote else "Paused",
            message=None,
        )
        out.events.append(
            Transition(
                "Normal",
                "CanaryStarted",
                f"canary version {target.version} takes {spec.traffic_percent}% beside version {primary.version}",
            )
        )
    status.canary = current
    if current.state == "RolledBack":
        current.traffic_percent, out.share = 0, 0
        st.set("Canary", "False", "RolledBack", current.message or "rolled back")
        return out
    auto = spec.auto_promote
    if auto is None:
        current.state, current.traffic_percent, out.share = "Paused", spec.traffic_percent, spec.traffic_percent
        st.set("Canary", "True", "Paused", f"version {target.version} takes {spec.traffic_percent}% (no autoPromote)")
        return out
    current.state = "Progressing"
    share = current.traffic_percent if current.traffic_percent is not None else spec.traffic_percent
    out.requeue_after = float(auto.interval_seconds)
    _apply(judge(window, auto, share), share, window, st, primary, out)
    return out


def _apply(
    verdict: Verdict,
    share: int,
    window: Figures | None,
    st: StatusDraft[ModelServiceStatus],
    primary: ModelTarget,
    out: CanaryPlan,
) -> None:
    """Carry out ``verdict`` on ``status.canary`` (rolled back, a step up, or promoted to primary)."""
    status = st.value
    current, target = status.canary, out.target
    assert current is not None and target is not None
    described = window.describe() if window is not None else ""
    if verdict.action == "rollback":
        message = (
            f"rolled back version {target.version} at {share}%, version {primary.version} keeps serving: "
            f"{'; '.join(verdict.breaches)} ({described})"
        )
        current.state, current.traffic_percent, current.message = "RolledBack", 0, message
        st.set("Canary", "False", "RolledBack", message)
        out.events.append(Transition("Warning", "CanaryRolledBack", message))
        out.results.append("rolled_back")
        out.share, out.requeue_after = 0, None
        return
    if verdict.action == "promote":
        message = f"promoted version {target.version} over version {primary.version} ({described})"
        status.promoted = PromotedModel(uri=target.uri, version=target.version, replaces=primary.uri)
        status.canary = None
        st.set("Canary", "False", "Promoted", message)
        out.events.append(Transition("Normal", "CanaryPromoted", message))
        out.results.append("promoted")
        out.target, out.share, out.requeue_after = None, None, None
        return
    if verdict.action == "step":
        current.message = f"raised to {verdict.share}% after {described}"
        out.events.append(Transition("Normal", "CanaryStep", f"canary version {target.version}: {current.message}"))
    current.traffic_percent = out.share = verdict.share
    st.set("Canary", "True", "Progressing", f"version {target.version} takes {verdict.share}%, promoted step by step")


def canary_step_due(body: dict[str, Any]) -> tuple[str, int, int] | None:
    """(canary uri, share, interval) when an automatic promotion runs, so the controller measures figures."""
    try:
        canary = ModelServiceStatus.model_validate(body.get("status") or {}).canary
    except ValueError:
        return None
    auto = (((body.get("spec") or {}).get("canary") or {}).get("autoPromote")) or None
    if canary is None or canary.state != "Progressing" or not canary.uri or auto is None:
        return None
    return canary.uri, int(canary.traffic_percent or 0), int(auto.get("intervalSeconds", 60))
