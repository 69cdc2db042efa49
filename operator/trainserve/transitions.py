"""What both controllers do with a planned status: Events for condition changes, and a minimal status patch."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from trainserve.api.base import Condition
from trainserve.api.conditions import find_condition

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True)
class Transition:
    """An Event to post on the resource."""

    type: EventType
    reason: str
    message: str


def condition_events(
    before: list[Condition],
    after: Iterable[Condition],
    *,
    warning_when_true: Collection[str] = (),
    warning_when_false: Collection[str] = (),
) -> list[Transition]:
    """One Event per condition that changed status or reason; a condition that starts out False is no news
    unless it is one whose False is a warning."""
    out: list[Transition] = []
    for condition in after:
        old = find_condition(before, condition.type)
        if old is not None and (old.status, old.reason) == (condition.status, condition.reason):
            continue
        if old is None and condition.status == "False" and condition.type not in warning_when_false:
            continue
        warning = (condition.type in warning_when_true and condition.status == "True") or (
            condition.type in warning_when_false and condition.status == "False"
        )
        reason = condition.reason or condition.type
        out.append(Transition("Warning" if warning else "Normal", reason, condition.message or ""))
    return out


def top_level_patch(old: dict[str, Any], new: dict[str, Any], skip: Collection[str] = ()) -> dict[str, Any]:
    """A JSON merge patch of the top-level fields that differ (``None`` removes one); empty when equal."""
    keys = (set(old) | set(new)) - set(skip)
    return {key: new.get(key) for key in sorted(keys) if old.get(key) != new.get(key)}
