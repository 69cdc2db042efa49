"""What both controllers do with a planned status: Events for condition changes, and a minimal status patch."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar

from trainserve.api.base import Condition
from trainserve.api.conditions import ConditionStatus, find_condition, set_condition
from trainserve.api.validation import InvalidResource, Problem, parse

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


class _HasConditions(Protocol):
    conditions: list[Condition]


S = TypeVar("S", bound=_HasConditions)


class StatusDraft(Generic[S]):
    """A status being rewritten: conditions stamped with one time and the generation acted on."""

    def __init__(self, status: S, now: datetime, generation: int | None):
        self.value = status
        self.now = now
        self.generation = generation

    def set(self, type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        self.value.conditions = set_condition(
            self.value.conditions, type_, status, reason, message, self.now, self.generation
        )

    def drop(self, type_: str) -> None:
        self.value.conditions = [c for c in self.value.conditions if c.type != type_]


def parse_stored(body: dict[str, Any], name_problem: Callable[[str], str | None]) -> tuple[Any, list[Problem]]:
    """The parsed resource as stored (its status left out), or the problems (field path, message, fix) that
    keep it from running; ``name_problem`` adds the limits our children's names put on its name."""
    name = str((body.get("metadata") or {}).get("name", ""))
    problem = name_problem(name)
    if problem:
        return None, [Problem("metadata.name", problem, f"use a shorter DNS-1035 name, e.g. {name[:20].strip('-.')!r}")]
    try:
        return parse({k: v for k, v in body.items() if k != "status"}), []
    except InvalidResource as invalid:
        return None, invalid.problems
