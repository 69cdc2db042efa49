"""Shared building blocks of the trainserve API: the camelCase base model, conditions, metadata."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

GROUP = "trainserve.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: The suffixes of a Kubernetes quantity: milli, decimal and binary multiples.
_QUANTITY_SUFFIX = r"(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)"
#: A Kubernetes resource quantity such as ``2Gi``, ``512Mi`` or ``1.5``.
QUANTITY_PATTERN = rf"^[0-9]+(\.[0-9]+)?{_QUANTITY_SUFFIX}?$"
#: A quantity above zero (a digit other than 0 before or after the point): the form a CRD pattern can check.
POSITIVE_QUANTITY_PATTERN = rf"^([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*){_QUANTITY_SUFFIX}?$"
_QUANTITY = re.compile(QUANTITY_PATTERN)
_POSITIVE_QUANTITY = re.compile(POSITIVE_QUANTITY_PATTERN)
_SUFFIX_FACTORS: dict[str, float] = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def quantity_value(quantity: str) -> float:
    """The amount a quantity stands for: ``"500m"`` -> 0.5, ``"2Gi"`` -> 2147483648.0."""
    match = _QUANTITY.fullmatch(quantity)  # not `match`: Python's `$` would let a final newline through
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    suffix = match.group(2) or ""
    return float(quantity[: len(quantity) - len(suffix)]) * _SUFFIX_FACTORS[suffix]


def quantity_bytes(quantity: str) -> int:
    """``"2Gi"`` -> 2147483648."""
    return int(quantity_value(quantity))


def cpu_quantity(cpus: float) -> str:
    """A number of CPUs as a canonical Kubernetes quantity: ``2.0`` -> ``"2"``, ``1.5`` -> ``"1500m"``; rounded up
    to whole millicores, as Kubernetes does."""
    if float(cpus).is_integer():
        return str(int(cpus))
    return f"{math.ceil(round(cpus * 1000, 6))}m"


#: A Kubernetes extended resource name such as ``nvidia.com/gpu``.
RESOURCE_NAME_PATTERN = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"
)
#: A DNS-1123 subdomain, as used by object names.
OBJECT_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

# Bounds of the spec's free strings, lists and maps. Each appears in the CRD (maxLength, maxItems,
# maxProperties) and in the model, so `trainserve validate` and the API server agree; they also keep the
# API server's cost estimate of the CEL rules small (an unbounded string counts as the whole 3 MiB request).

#: Data locations (paths, `file://`, `s3://`): 2048, the URL length browsers and HTTP servers commonly accept.
MAX_URI = 2048
#: A Kubernetes object name (DNS-1123 subdomain), e.g. a Secret's.
MAX_OBJECT_NAME = 253
#: A Secret data key (Kubernetes allows 253 characters).
MAX_SECRET_KEY = 253
#: A qualified name such as a label key or `nvidia.com/gpu`: a 253-character DNS prefix, `/`, a 63-character name.
MAX_QUALIFIED_NAME = 317
#: A label value (also a taint's value).
MAX_LABEL_VALUE = 63
#: Node selector entries, and tolerations: far more than any pod needs.
MAX_PLACEMENT_ENTRIES = 64
#: An image reference: the distribution spec's 255-character repository, a 128-character tag and a digest fit.
MAX_IMAGE = 1024
#: A Kubernetes quantity such as `2Gi` (the pattern does not bound its digits).
MAX_QUANTITY = 64

LabelKey = Annotated[str, Field(max_length=MAX_QUALIFIED_NAME)]
LabelValue = Annotated[str, Field(max_length=MAX_LABEL_VALUE)]

_CPU_FIX = 'write a number of CPUs such as `2` or `1.5`, or a Kubernetes quantity such as `"500m"` or `"0.25"`'


@dataclass(frozen=True)
class CpuQuantity:
    """An amount of CPU as the user wrote it, as Kubernetes takes it: a number (``2``, ``1.5``) or a quantity string
    (``"2"``, ``"500m"``, ``"0.25"``), above zero.

    Parsed once: :attr:`cpus` is the amount for Ray; :attr:`quantity` goes into pod requests and limits, a string
    unchanged (``"500m"`` stays ``"500m"``). A number is kept as a float, so a spec reads back as it did before
    strings were allowed (the immutable sections' digests do not change).
    """

    written: float | str
    cpus: float

    @classmethod
    def parse(cls, value: object) -> CpuQuantity:
        """The quantity ``value`` stands for; raises the validation error `trainserve validate` prints."""
        if isinstance(value, CpuQuantity):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if not math.isfinite(number) or number <= 0:
                raise PydanticCustomError(
                    "cpu_quantity", "CPUs must be above 0, not {value}", {"value": repr(value), "fix": _CPU_FIX}
                )
            return cls(number, number)
        if isinstance(value, str):
            if len(value) > MAX_QUANTITY:
                raise PydanticCustomError(
                    "cpu_quantity",
                    "a CPU quantity has at most {limit} characters",
                    {"limit": MAX_QUANTITY, "fix": _CPU_FIX},
                )
            if not _POSITIVE_QUANTITY.fullmatch(value):
                raise PydanticCustomError(
                    "cpu_quantity",
                    "{value} is not a Kubernetes quantity above 0",
                    {"value": repr(value), "fix": _CPU_FIX},
                )
            return cls(value, quantity_value(value))
        raise PydanticCustomError(
            "cpu_quantity", "{value} is not a number or a quantity string", {"value": repr(value), "fix": _CPU_FIX}
        )

    @property
    def quantity(self) -> str:
        """For a pod's ``resources``: a string as written, a number in canonical form (``1.5`` -> ``"1500m"``)."""
        return self.written if isinstance(self.written, str) else cpu_quantity(self.written)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.parse, serialization=core_schema.plain_serializer_function_ser_schema(lambda q: q.written)
        )

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        # The CRD generator turns this union into a structural schema (see `crd._number_or_string`).
        return {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": POSITIVE_QUANTITY_PATTERN, "maxLength": MAX_QUANTITY},
            ]
        }


class ApiModel(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields refused, JSON types as the CRD has them
    (strict: ``"2"`` is not a number, ``1`` is not ``true``, as for the API server; a number field takes an
    integer)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        use_attribute_docstrings=False,
        validate_default=False,
    )

    #: Cross-field rules as CEL, emitted into the CRD as ``x-kubernetes-validations``. The same rules are
    #: checked in Python by the model validators, so `trainserve validate` and the API server agree.
    CEL: ClassVar[list[dict[str, str]]] = []

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.CEL:
            handler.resolve_ref_schema(schema)["x-kubernetes-validations"] = [dict(r) for r in cls.CEL]
        return schema

    def to_wire(self) -> dict[str, Any]:
        """The JSON document as it appears in the cluster (camelCase, unset fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Resource(ApiModel):
    """Base of our top-level kinds: their names in the API."""

    KIND: ClassVar[str]
    PLURAL: ClassVar[str]
    SHORT_NAMES: ClassVar[list[str]]
    #: Longest ``metadata.name``: the names of our children (KubeRay's) set the limit.
    MAX_NAME: ClassVar[int]


class StatusModel(ApiModel):
    """Base of status models: written by the operator, so unknown fields are tolerated (and timestamps are read
    from their JSON strings)."""

    model_config = ConfigDict(extra="ignore", strict=False)


def one_of_error(where: str, options: tuple[str, ...], found: list[str]) -> PydanticCustomError:
    """The error for an object that must hold exactly one of ``options``."""
    names = " or ".join(f"`{o}`" for o in options)
    if found:
        return PydanticCustomError(
            "exactly_one_of",
            "{where} sets {found}, but exactly one of {names} is allowed",
            {
                "where": where,
                "found": " and ".join(f"`{f}`" for f in found),
                "names": names,
                "fix": f"keep one of {names} and delete the other",
            },
        )
    return PydanticCustomError(
        "exactly_one_of",
        "{where} needs exactly one of {names}",
        {"where": where, "names": names, "fix": f"add one of {names}"},
    )


def require_exactly_one(where: str, **fields: object) -> None:
    """Raise the "exactly one of" error unless exactly one of ``fields`` (wire names) is set."""
    found = [name for name, value in fields.items() if value is not None]
    if len(found) != 1:
        raise one_of_error(where, tuple(fields), found)


def exactly_one_rule(first: str, second: str) -> dict[str, str]:
    """The CEL twin of :func:`require_exactly_one` for two optional fields."""
    return {"rule": f"has(self.{first}) != has(self.{second})", "message": f"set exactly one of {first} or {second}"}


def rule_error(message: str, fix: str, at: str = "") -> PydanticCustomError:
    """A cross-field rule error that carries a one-line fix for `trainserve validate`; ``at`` names the entry it is
    about below the validated object (``.volumes[0].name``), so the reported path is the offending field's."""
    return PydanticCustomError("rule", message, {"fix": fix, **({"at": at} if at else {})})


class Toleration(ApiModel):
    """A Kubernetes toleration, copied to the Ray pods."""

    key: str | None = Field(
        None, max_length=MAX_QUALIFIED_NAME, description="Taint key the toleration applies to; empty matches all keys."
    )
    operator: Literal["Exists", "Equal"] | None = Field(None, description="`Exists` or `Equal` (default `Equal`).")
    value: str | None = Field(
        None, max_length=MAX_LABEL_VALUE, description="Taint value the toleration matches (with `Equal`)."
    )
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        None, description="How long a `NoExecute` taint is tolerated before eviction."
    )


class SecretRef(ApiModel):
    """A reference to a Secret in the resource's namespace."""

    name: str = Field(
        description="Name of the Secret, in the same namespace.",
        pattern=OBJECT_NAME_PATTERN,
        max_length=MAX_OBJECT_NAME,
    )


class SecretKeyRef(ApiModel):
    """A reference to one key of a Secret in the resource's namespace."""

    name: str = Field(
        description="Name of the Secret, in the same namespace.",
        pattern=OBJECT_NAME_PATTERN,
        max_length=MAX_OBJECT_NAME,
    )
    key: str = Field(
        "token", description="Key inside the Secret that holds the value.", min_length=1, max_length=MAX_SECRET_KEY
    )


class Condition(StatusModel):
    """A status condition, following the Kubernetes API conventions."""

    type: str = Field(description="Type of the condition, e.g. `Ready` or `Succeeded`.")
    status: Literal["True", "False", "Unknown"] = Field(description="`True`, `False` or `Unknown`.")
    reason: str | None = Field(None, description="Machine-readable CamelCase reason for the last transition.")
    message: str | None = Field(None, description="Human-readable details about the last transition.")
    last_transition_time: datetime | None = Field(None, description="When the condition last changed status.")
    observed_generation: int | None = Field(
        None, description="The `metadata.generation` this condition was computed from."
    )


#: Conditions are a list keyed by `type` (server-side apply merges them entry by entry).
CONDITIONS_LIST: dict[str, Any] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


class ObjectMeta(BaseModel):
    """The part of Kubernetes object metadata that trainserve reads; everything else passes through.

    ``name`` follows the rules of its kind (``validation.NAME_PROBLEMS``, the CRDs' root CEL rules)."""

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    uid: str | None = None


def cpus_field(description: str) -> Any:
    """A :class:`CpuQuantity` field, 1 CPU by default (written as the number the CRD shows)."""
    return Field(CpuQuantity(1.0, 1.0), description=description, json_schema_extra={"default": 1.0})


def section(factory: Callable[[], ApiModel], description: str) -> Any:
    """A nested object that may be left out: defaults apply inside it (``default: {}`` in the CRD)."""
    return Field(default_factory=factory, description=description, json_schema_extra={"default": {}})
