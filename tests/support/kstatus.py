"""kstatus' reading of a custom resource (what Flux's health checks, kpt and cli-utils compute), for tests.

The rules of sigs.k8s.io/cli-utils pkg/kstatus/status for a kind without built-in rules, in its order:
``checkGenericProperties`` (status/generic.go: deletionTimestamp -> Terminating; ``status.observedGeneration``
present and not ``metadata.generation`` -> InProgress; the first of ``Reconciling=True`` -> InProgress or
``Stalled=True`` -> Failed), then ``checkReadyCondition`` (status/status.go: ``Ready`` True -> Current, False or
Unknown -> InProgress), else Current. No Python port is published, hence this small one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

KStatus = Literal["InProgress", "Failed", "Current", "Terminating"]


@dataclass(frozen=True)
class Reading:
    status: KStatus
    message: str


def compute(obj: dict[str, Any]) -> Reading:
    """kstatus ``Compute`` for a custom resource."""
    metadata = obj.get("metadata") or {}
    status = obj.get("status") or {}
    if metadata.get("deletionTimestamp"):
        return Reading("Terminating", "Resource scheduled for deletion")
    generation = metadata.get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed != generation:
        return Reading("InProgress", f"generation is {generation}, but latest observed generation is {observed}")
    conditions = status.get("conditions") or []
    for condition in conditions:
        if condition.get("type") == "Reconciling" and condition.get("status") == "True":
            return Reading("InProgress", str(condition.get("message") or ""))
        if condition.get("type") == "Stalled" and condition.get("status") == "True":
            return Reading("Failed", str(condition.get("message") or ""))
    for condition in conditions:
        if condition.get("type") != "Ready":
            continue
        if condition.get("status") == "True":
            return Reading("Current", "Resource is Ready")
        if condition.get("status") in ("False", "Unknown"):
            return Reading("InProgress", str(condition.get("message") or ""))
    return Reading("Current", "Resource is current")
