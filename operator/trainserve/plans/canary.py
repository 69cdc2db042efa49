"""Automatic canary promotion; pure.

:func:`judge` turns the figures of one step (the canary's window since the step began) and the policy into a
verdict, :func:`judge_shadow` does the same for a candidate in shadow mode (its agreement with the primary and its
own figures on the requests it scored); :func:`plan_canary` keeps ``status.canary`` and the ``Canary`` condition in
step with the spec and applies the verdict. The controllers measure the window
(:mod:`trainserve.controllers.canary_windows`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from trainserve.api.figures import Figures, ShadowCounts
from trainserve.api.modelservice import (
    DEFAULT_SHADOW_PERCENT,
    AutoPromote,
    CanaryMode,
    CanarySpec,
    CanaryStatus,
    ModelServiceStatus,
    PromotedModel,
    ShadowFigures,
)
from trainserve.api.serving import ModelTarget
from trainserve.plans.common import StatusDraft, Transition


@dataclass(frozen=True)
class Verdict:
    """``wait`` (too few requests yet), ``rollback`` (a limit breached), ``step`` (raise the share), ``promote``;
    ``split``: a shadow candidate passed and now takes ``share`` of the requests."""

    action: Literal["wait", "rollback", "step", "promote", "split"]
    share: int
    breaches: tuple[str, ...] = ()


def judge(window: Figures | None, policy: AutoPromote, share: int) -> Verdict:
    """The verdict on one step: healthy figures over at least ``minRequests`` raise the share by a step."""
    if window is None or window.requests < policy.min_requests:
        return Verdict("wait", share)
    breaches = _limits_breached(window, policy, "")
    if breaches:
        return Verdict("rollback", 0, tuple(breaches))
    raised = min(100, share + policy.step_percent)
    return Verdict("promote" if raised >= 100 else "step", raised)


def _limits_breached(window: Figures | ShadowCounts, policy: AutoPromote, prefix: str) -> list[str]:
    """The error-rate and p95 limits of ``policy`` that ``window`` exceeds, each said with its figures."""
    breaches = []
    if window.error_rate > policy.max_error_rate:
        breaches.append(f"{prefix}error rate {window.error_rate:.2%} > {policy.max_error_rate:.2%}")
    p95 = window.p95_ms
    if policy.max_latency_p95_ms is not None and p95 is not None and p95 > policy.max_latency_p95_ms:
        breaches.append(f"{prefix}p95 {p95:.1f} ms > {policy.max_latency_p95_ms} ms")
    return breaches


def judge_shadow(window: ShadowCounts | None, policy: AutoPromote, split_share: int) -> Verdict:
    """The verdict on a shadow candidate: over at least ``minRequests`` scored requests, agreement of at least
    ``minAgreement`` and the error and latency limits on its shadow calls promote it, to the primary or to
    ``split_share`` of the requests (``afterShadow``)."""
    if window is None or window.requests < policy.min_requests or window.agreement is None:
        return Verdict("wait", 0)
    breaches = []
    minimum = policy.min_agreement if policy.min_agreement is not None else 1.0
    if window.agreement < minimum:
        breaches.append(f"agreement {window.agreement:.2%} < {minimum:.2%}")
    breaches += _limits_breached(window, policy, "shadow ")
    if breaches:
        return Verdict("rollback", 0, tuple(breaches))
    if policy.after_shadow == "split" and split_share < 100:
        return Verdict("split", split_share)
    return Verdict("promote", 100)


@dataclass
class CanaryPlan:
    """The canary to run beside the primary and its share; the Events and promotion results of this step."""

    target: ModelTarget | None = None
    share: int | None = None
    events: list[Transition] = field(default_factory=list)
    #: "promoted" or "rolled_back", for the operator's metrics.
    results: list[str] = field(default_factory=list)
    requeue_after: float | None = None
    #: ``shadow`` while the candidate scores requests in the background (``share`` is then 0).
    mode: CanaryMode = "split"


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
        current = _started(spec, target, primary, out)
    # A candidate that passed its shadow evaluation into split mode stays there; `mode: split` ends a shadow.
    mode: CanaryMode = "split" if spec.mode == "split" else (current.mode or "shadow")
    current.mode = mode
    status.canary = current
    if current.state == "RolledBack":
        current.traffic_percent, out.share = 0, 0
        st.set("Canary", "False", "RolledBack", current.message or "rolled back")
        return out
    auto = spec.auto_promote
    if mode == "shadow":
        current.traffic_percent, out.share, out.mode = 0, 0, "shadow"
    if auto is None:
        current.state = "Paused"
        if mode == "shadow":
            st.set("Canary", "True", "Paused", f"version {target.version} scores requests in shadow (no autoPromote)")
            return out
        current.traffic_percent, out.share = spec.traffic_percent, spec.traffic_percent
        st.set("Canary", "True", "Paused", f"version {target.version} takes {spec.traffic_percent}% (no autoPromote)")
        return out
    current.state = "Progressing"
    out.requeue_after = float(auto.interval_seconds)
    if mode == "shadow":
        shadow = window.shadow if window is not None else None
        if shadow is not None:
            current.shadow = _shadow_status(shadow)
        _apply(judge_shadow(shadow, auto, spec.traffic_percent), 0, window, st, primary, out)
        return out
    share = current.traffic_percent if current.traffic_percent is not None else spec.traffic_percent
    _apply(judge(window, auto, share), share, window, st, primary, out)
    return out


def _started(spec: CanarySpec, target: ModelTarget, primary: ModelTarget, out: CanaryPlan) -> CanaryStatus:
    """A new canary's status, and the Event that says it started."""
    shadow = spec.mode == "shadow"
    if shadow:
        share = spec.shadow_percent or DEFAULT_SHADOW_PERCENT
        message = f"candidate version {target.version} scores {share}% of the requests in the shadow of version "
        message += f"{primary.version}"
    else:
        message = f"canary version {target.version} takes {spec.traffic_percent}% beside version {primary.version}"
    out.events.append(Transition("Normal", "CanaryStarted", message))
    return CanaryStatus(
        uri=target.uri,
        version=target.version,
        traffic_percent=0 if shadow else spec.traffic_percent,
        state="Progressing" if spec.auto_promote else "Paused",
        message=None,
        mode=spec.mode,
    )


def _shadow_status(counts: ShadowCounts) -> ShadowFigures:
    agreement = counts.agreement
    return ShadowFigures(
        scored=counts.requests,
        rows=counts.rows,
        agreed=counts.agreed,
        agreement=round(agreement, 4) if agreement is not None else None,
        errors=counts.errors,
        dropped=counts.dropped,
        p95_ms=counts.p95_ms,
    )


def _apply(
    verdict: Verdict,
    share: int,
    window: Figures | None,
    st: StatusDraft[ModelServiceStatus],
    primary: ModelTarget,
    out: CanaryPlan,
) -> None:
    """Carry out ``verdict`` on ``status.canary`` (rolled back, a step up, into split mode, or promoted)."""
    status = st.value
    current, target = status.canary, out.target
    assert current is not None and target is not None
    shadow = out.mode == "shadow"
    described = (window.shadow.describe() if shadow else window.describe()) if window is not None else ""
    if verdict.action == "rollback":
        where = "in shadow mode" if shadow else f"at {share}%"
        message = (
            f"rolled back version {target.version} {where}, version {primary.version} keeps serving: "
            f"{'; '.join(verdict.breaches)} ({described})"
        )
        current.state, current.traffic_percent, current.message = "RolledBack", 0, message
        st.set("Canary", "False", "RolledBack", message)
        out.events.append(Transition("Warning", "CanaryRolledBack", message))
        out.results.append("rolled_back")
        out.share, out.requeue_after, out.mode = 0, None, "split"
        return
    if verdict.action == "promote":
        how = " after its shadow evaluation" if shadow else ""
        message = f"promoted version {target.version} over version {primary.version}{how} ({described})"
        status.promoted = PromotedModel(uri=target.uri, version=target.version, replaces=primary.uri)
        status.canary = None
        st.set("Canary", "False", "Promoted", message)
        out.events.append(Transition("Normal", "CanaryPromoted", message))
        out.results.append("promoted")
        out.target, out.share, out.requeue_after, out.mode = None, None, None, "split"
        return
    if verdict.action == "split":
        current.mode, out.mode = "split", "split"
        current.message = (
            f"version {target.version} passed its shadow evaluation against version {primary.version} ({described}); "
            f"it takes {verdict.share}%"
        )
        out.events.append(Transition("Normal", "CanaryShadowPassed", current.message))
    if shadow and verdict.action == "wait":
        st.set(
            "Canary",
            "True",
            "Progressing",
            f"version {target.version} scores requests in the shadow of version {primary.version}, judged on agreement",
        )
        return
    if verdict.action == "step":
        current.message = f"raised to {verdict.share}% after {described}"
        out.events.append(Transition("Normal", "CanaryStep", f"canary version {target.version}: {current.message}"))
    current.traffic_percent = out.share = verdict.share
    st.set("Canary", "True", "Progressing", f"version {target.version} takes {verdict.share}%, promoted step by step")


def canary_step_due(body: dict[str, Any]) -> tuple[str, int, int] | None:
    """(canary uri, share, interval) when an automatic promotion runs, so the controller measures figures; the
    share is -1 in shadow mode, so moving from shadow into split mode starts a new window."""
    try:
        canary = ModelServiceStatus.model_validate(body.get("status") or {}).canary
    except ValueError:
        return None
    auto = (((body.get("spec") or {}).get("canary") or {}).get("autoPromote")) or None
    if canary is None or canary.state != "Progressing" or not canary.uri or auto is None:
        return None
    share = -1 if canary.mode == "shadow" else int(canary.traffic_percent or 0)  # a shadow's window is its own
    return canary.uri, share, int(auto.get("intervalSeconds", 60))
