"""Kubernetes' own schemas for the pod fields `spec.podTemplate` takes, and the API server's check of them.

The schemas are vendored from one Kubernetes release (see ``README.md`` here and
``deploy/vendor_k8s_schemas.py``), already in the structural form a CRD embeds. :class:`KubernetesSchema` puts
one of them on a pydantic field: the CRD gets that schema (so ``kubectl explain`` and the API server know every
sub-field), and the model checks values with :func:`schema_problems`, a small validator of exactly the keywords
those schemas use, applied as the API server applies a CRD's structural schema. So `trainserve validate` gives
the API server's verdict without a JSON Schema library at run time.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any, NamedTuple

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

Schema = dict[str, Any]

#: The vendored file: the Kubernetes release it was taken from is in its name and its `kubernetesVersion`.
SCHEMA_FILE = "pod_template_v1_30.json"


@functools.cache
def _vendored() -> Schema:
    text = resources.files(__name__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    document: Schema = json.loads(text)
    return document


def kubernetes_version() -> str:
    """The Kubernetes release the vendored schemas come from, e.g. ``1.30.0``."""
    return str(_vendored()["kubernetesVersion"])


def field_schema(name: str) -> Schema:
    """The structural schema of one vendored field, e.g. ``PodSpec.volumes`` (a copy the caller may change)."""
    return copy.deepcopy(_vendored()["fields"][name])


class SchemaProblem(NamedTuple):
    """Where (relative to the checked value: ``[0].name``, ``.nodeAffinity``), what, and how to fix it."""

    at: str
    message: str
    fix: str


_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    return type(value).__name__


def _has_type(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "boolean"
    return {
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
        "string": isinstance(value, str),
        "integer": isinstance(value, int),
        "number": isinstance(value, int | float),
        "boolean": False,
    }.get(kind, False)


def schema_problems(value: Any, schema: Schema, at: str = "") -> list[SchemaProblem]:
    """Why the API server would refuse ``value`` under the structural ``schema`` (empty: it would accept it).

    Checks the keywords the vendored schemas and our bounds use: types (and int-or-string), required and
    unknown fields (kubectl's default strict field validation), enums, maxItems/maxLength/maxProperties, and
    the uniqueness of ``x-kubernetes-list-type`` ``map`` keys and ``set`` items. A null field counts as absent,
    as the API server prunes nulls of non-nullable fields.
    """
    if schema.get("x-kubernetes-int-or-string"):
        if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
            return []
        return [SchemaProblem(at, f"{value!r} is {_type_name(value)}", "give a whole number or a string")]
    kind = schema.get("type")
    if kind is not None and not _has_type(value, kind):
        expected = _TYPE_NAMES.get(kind, kind)
        return [SchemaProblem(at, f"{value!r} is {_type_name(value)}, not {expected}", f"give {expected}")]
    problems: list[SchemaProblem] = []
    if "enum" in schema and value not in schema["enum"]:
        allowed = ", ".join(repr(v) for v in schema["enum"])
        problems.append(SchemaProblem(at, f"unknown value {value!r}", f"use one of: {allowed}"))
    if isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
        limit = schema["maxLength"]
        problems.append(SchemaProblem(at, f"is {len(value)} characters long, over {limit}", f"shorten it to {limit}"))
    if isinstance(value, dict):
        problems += _object_problems(value, schema, at)
    elif isinstance(value, list):
        problems += _array_problems(value, schema, at)
    return problems


def _object_problems(value: dict[str, Any], schema: Schema, at: str) -> list[SchemaProblem]:
    problems: list[SchemaProblem] = []
    properties: dict[str, Schema] | None = schema.get("properties")
    present = {key for key, item in value.items() if item is not None}
    for name in schema.get("required", []):
        if name not in present:
            problems.append(SchemaProblem(f"{at}.{name}", "required field is missing", f"add `{name}`"))
    limit = schema.get("maxProperties")
    if limit is not None and len(present) > limit:
        problems.append(SchemaProblem(at, f"has {len(present)} entries, over {limit}", f"keep at most {limit}"))
    extra = schema.get("additionalProperties")
    for key in sorted(present):
        item = value[key]
        if properties is not None and key in properties:
            problems += schema_problems(item, properties[key], f"{at}.{key}")
        elif isinstance(extra, dict):
            problems += schema_problems(item, extra, f"{at}[{key}]")
        elif properties is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            known = sorted(properties)
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            problems.append(
                SchemaProblem(f"{at}.{key}", f"unknown field `{key}`", f"{hint}known fields here: {', '.join(known)}")
            )
    return problems


def _array_problems(value: list[Any], schema: Schema, at: str) -> list[SchemaProblem]:
    problems: list[SchemaProblem] = []
    limit = schema.get("maxItems")
    if limit is not None and len(value) > limit:
        problems.append(SchemaProblem(at, f"has {len(value)} entries, over {limit}", f"keep at most {limit}"))
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            problems += schema_problems(item, items, f"{at}[{index}]")
    if problems:
        return problems  # keys of malformed entries are not compared
    list_type = schema.get("x-kubernetes-list-type")
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        if list_type == "map":
            keys = schema["x-kubernetes-list-map-keys"]
            defaults = items.get("properties", {}) if isinstance(items, dict) else {}
            identity = json.dumps([item.get(k, defaults.get(k, {}).get("default")) for k in keys])
            what = ", ".join(f"{k} {item.get(k, defaults.get(k, {}).get('default'))!r}" for k in keys)
            fix = f"give each entry its own {' and '.join(keys)}, or merge the two entries"
        elif list_type == "set":
            identity = json.dumps(item, sort_keys=True)
            what, fix = repr(item), "list each value once"
        else:
            break
        if identity in seen:
            problems.append(SchemaProblem(f"{at}[{index}]", f"duplicates entry [{seen[identity]}] ({what})", fix))
        seen.setdefault(identity, index)
    return problems


def without_nulls(value: Any) -> Any:
    """``value`` with null fields removed from every mapping, as the API server prunes them."""
    if isinstance(value, dict):
        return {key: without_nulls(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [without_nulls(item) for item in value]
    return value


@dataclass(frozen=True)
class KubernetesSchema:
    """Marks a field as one of Kubernetes' own (``Annotated[list[dict[str, Any]], KubernetesSchema(...)]``).

    ``name`` is a vendored field (``PodSpec.volumes``). ``max_items`` and ``item_bounds`` (``(("name", 63),)``:
    the longest value of a string field of each entry) add bounds Kubernetes enforces elsewhere (or that keep our
    CEL rules cheap); everything else is Kubernetes' schema as it is. The field's own description (how
    trainserve merges it) replaces Kubernetes' at the top; every sub-field keeps Kubernetes' description.
    """

    name: str
    max_items: int | None = None
    item_bounds: tuple[tuple[str, int], ...] = ()

    def schema(self) -> Schema:
        schema = field_schema(self.name)
        if self.max_items is not None:
            schema["maxItems"] = self.max_items
        for prop, limit in self.item_bounds:
            schema["items"]["properties"][prop]["maxLength"] = limit
        return schema

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_before_validator_function(self._validate, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return self.schema()

    def _validate(self, value: Any) -> Any:
        problems = schema_problems(value, self.schema())
        if problems:
            first = problems[0]
            more = (
                f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)} here)" if len(problems) > 1 else ""
            )
            raise PydanticCustomError(
                "kubernetes_schema", "{detail}", {"detail": first.message + more, "at": first.at, "fix": first.fix}
            )
        return without_nulls(value)
