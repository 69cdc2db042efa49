"""What both plans share: Events for condition changes, a minimal status patch, the status draft, parsing a
stored resource, and the messages and model checks both kinds give."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from trainserve.api.base import Condition
from trainserve.api.conditions import ConditionStatus, find_condition, set_condition
from trainserve.api.storage import is_local_path
from trainserve.api.trainingjob import ModelStatus, TrainingJobStatus
from trainserve.api.validation import InvalidResource, Problem, parse
from trainserve.naming import name_fix

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
    warning_reasons: Collection[str] = (),
) -> list[Transition]:
    """One Event per change of a condition's status or reason; a condition that starts out False is no news
    unless its False is a warning. A condition whose reason is in ``warning_reasons`` is always a warning.
    Conditions that change to the same reason at once (``Valid`` and ``Created`` both ``InvalidSpec``) make
    one Event, not two."""
    out: list[Transition] = []
    for condition in after:
        old = find_condition(before, condition.type)
        if old is not None and (old.status, old.reason) == (condition.status, condition.reason):
            continue
        reason = condition.reason or condition.type
        flagged = reason in warning_reasons
        if old is None and condition.status == "False" and condition.type not in warning_when_false and not flagged:
            continue
        warning = (
            flagged
            or (condition.type in warning_when_true and condition.status == "True")
            or (condition.type in warning_when_false and condition.status == "False")
        )
        event = Transition("Warning" if warning else "Normal", reason, condition.message or "")
        same = next((i for i, seen in enumerate(out) if seen.reason == reason), None)
        if same is None:
            out.append(event)
        elif warning and out[same].type == "Normal":
            out[same] = event  # the one Event for a reason is a warning if any of its conditions says so
    return out


def top_level_patch(old: dict[str, Any], new: dict[str, Any], skip: Collection[str] = ()) -> dict[str, Any]:
    """A JSON merge patch of the top-level fields that differ (``None`` removes one); empty when equal."""
    keys = (set(old) | set(new)) - set(skip)
    return {key: new.get(key) for key in sorted(keys) if old.get(key) != new.get(key)}


class _HasConditions(Protocol):
    conditions: list[Condition]


S = TypeVar("S", bound=_HasConditions)
M = TypeVar("M", bound=BaseModel)


def read_status(model: type[M], raw: Any) -> tuple[M, list[str]]:
    """A stored status, and the top-level fields that could not be read (left out, to be rewritten once).

    A field written by another version, or by hand, must not make every reconcile rebuild and rewrite the
    status forever: the plan rewrites or removes just those fields, with one Warning Event.
    """
    if raw is None:
        return model(), []
    if not isinstance(raw, dict):
        return model(), ["status"]
    try:
        return model.model_validate(raw), []
    except ValidationError as err:
        bad = sorted({str(e["loc"][0]) for e in err.errors() if e["loc"]} & set(raw))
    try:
        return model.model_validate({k: v for k, v in raw.items() if k not in bad}), bad
    except ValidationError:
        return model(), sorted(raw)


def repaired_event(fields: list[str]) -> Transition:
    """The one Warning Event for a status whose ``fields`` could not be read."""
    where = ", ".join(f"status.{f}" if f != "status" else "status" for f in fields)
    return Transition(
        "Warning",
        "StatusRepaired",
        f"{where} could not be read (written by another version?); rewritten from what is observed",
    )


def status_patch(before: Any, after: BaseModel, model: type[BaseModel], skip: Collection[str] = ()) -> dict[str, Any]:
    """A JSON merge patch of the top-level status fields that differ; empty when nothing changed.

    Fields of ``before`` that could not be read are always rewritten (or removed), ``skip`` or not.
    """
    old, unreadable = read_status(model, before)
    new = after.model_dump(mode="json", by_alias=True, exclude_none=True)
    patch = top_level_patch(old.model_dump(mode="json", by_alias=True, exclude_none=True), new, skip)
    for name in unreadable:
        if name != "status":
            patch[name] = new.get(name)
    return patch


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


def parse_stored(
    body: dict[str, Any], name_problem: Callable[[str], str | None], name_limit: int
) -> tuple[Any, list[Problem]]:
    """The parsed resource as stored (its status left out), or the problems (field path, message, fix) that
    keep it from running; ``name_problem`` adds the limits our children's names put on its name, at most
    ``name_limit`` characters (the fix suggests a name that passes)."""
    name = str((body.get("metadata") or {}).get("name", ""))
    problem = name_problem(name)
    if problem:
        return None, [Problem("metadata.name", problem, name_fix(name, name_limit))]
    try:
        return parse({k: v for k, v in body.items() if k != "status"}), []
    except InvalidResource as invalid:
        return None, invalid.problems


def kuberay_missing(kind: str, then: str) -> str:
    """What to do when KubeRay's ``kind`` CRD is not served: install KubeRay; ``then`` says what follows."""
    return (
        f"the {kind} CRD ({kind.lower()}s.ray.io, ray.io/v1) is not installed: install KubeRay, e.g. "
        "`helm repo add kuberay https://ray-project.github.io/kuberay-helm/ && "
        f"helm install kuberay-operator kuberay/kuberay-operator`; {then}"
    )


KUBERAY_MISSING_MESSAGE = kuberay_missing("RayJob", "the job starts once it is there")


def ray_auth_unsupported(kind: str, then: str) -> str:
    """What to do when KubeRay's ``kind`` CRD predates ``authOptions`` (Ray token authentication)."""
    return (
        f"the installed KubeRay's {kind} CRD ({kind.lower()}s.ray.io) has no authOptions, so its Ray clusters would "
        "run without token authentication: upgrade KubeRay to v1.5.1 or newer, or accept clusters without "
        "authentication with the chart value `rayAuth: false` (operator setting TRAINSERVE_RAY_AUTH=false); "
        f"{then}"
    )


#: How often an object waiting for a deleted namesake's children to go looks again (reads only).
OLD_OBJECTS_RECHECK_SECONDS = 5.0


def invalid_spec_message(problems: list[Problem]) -> str:
    """Every problem of an invalid spec in one condition message: field path, what is wrong, the fix."""
    return "; ".join(f"{p.path}: {p.message} (fix: {p.fix})" for p in problems)


def metric_shortfalls(metrics: dict[str, float], minimum: dict[str, float]) -> list[str]:
    """Each threshold a model's metrics miss, as ``name value < threshold`` (a missing metric misses)."""
    misses = []
    for name, threshold in sorted(minimum.items()):
        value = metrics.get(name)
        if value is None:
            misses.append(f"{name} missing (needs >= {threshold})")
        elif value < threshold:
            misses.append(f"{name} {value:.4g} < {threshold}")
    return misses


@dataclass(frozen=True)
class ServableModel:
    """A TrainingJob's model checked for serving: the model, or why not (a reason and a message)."""

    model: ModelStatus | None
    reason: str = ""
    message: str = ""


def servable_model(job_name: str, status: TrainingJobStatus, min_metrics: dict[str, float]) -> ServableModel:
    """The job's model once the job succeeded, reported a model URI and meets ``min_metrics``; else why not.

    The one check behind ``fromTrainingJob`` for the operator and for ``trainserve local serve``.
    """
    model = status.model
    if status.phase != "Succeeded" or model is None or not model.uri:
        progress = ""
        if status.progress is not None and status.progress.epoch is not None:
            progress = f", epoch {status.progress.epoch} of {status.progress.total_epochs or '?'}"
        return ServableModel(
            None, "WaitingForTrainingJob", f"TrainingJob {job_name!r} is {status.phase or 'Pending'}{progress}"
        )
    short = metric_shortfalls(model.metrics, min_metrics)
    if short:
        return ServableModel(
            None,
            "MetricsBelowThreshold",
            f"model version {model.version} of TrainingJob {job_name!r} misses minMetrics: {'; '.join(short)}",
        )
    return ServableModel(model)


def local_paths_message(fields: list[tuple[str, str | None]]) -> str | None:
    """Why a spec that names local paths cannot run on a cluster (a Ray pod's disk goes with the pod, and other
    pods never see it), or None when every location is one all pods can reach."""
    local = [(field, value) for field, value in fields if is_local_path(value)]
    if not local:
        return None
    named = "; ".join(f"{field}: {value!r}" for field, value in local)
    return (
        f"{named} is a path on the machine that reads it, which on a cluster is a Ray pod's own disk: use "
        "pvc://CLAIM/PATH (a PersistentVolumeClaim the operator mounts into the Ray pods) or s3://BUCKET/PREFIX"
    )
