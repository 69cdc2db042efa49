"""Check documents against the API and explain each problem: where (field path), what, and how to fix it."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from trainserve.naming import name_fix, name_problem, service_name_problem, suggest_name

from .base import API_VERSION, Resource
from .crd import RESOURCE_KINDS, Schema, spec_schema

KINDS: dict[str, type[Resource]] = {kind.KIND: kind for kind in RESOURCE_KINDS}
#: Why a name cannot be used for a kind (the CRDs' root CEL rules check the same): our children's names set limits.
NAME_PROBLEMS: dict[str, Callable[[str], str | None]] = {
    "TrainingJob": name_problem,
    "ModelService": service_name_problem,
}
#: The API server names an object from ``generateName`` with 5 random letters or digits after at most 58
#: characters of it.
GENERATED_SUFFIX = 5
MAX_GENERATE_NAME = 58


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a document."""

    path: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}\n  fix: {self.fix}"


class InvalidResource(ValueError):
    """A document that does not satisfy the API; ``problems`` says why."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))


def format_path(loc: tuple[int | str, ...]) -> str:
    """``('spec', 'dataset', 'featureColumns', 0)`` -> ``spec.dataset.featureColumns[0]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def parse(document: Any) -> Resource:
    """The typed resource a document describes, judged as the API server judges it; raises InvalidResource with
    every problem found."""
    problems = _header_problems(document)
    if problems:
        raise InvalidResource(problems)
    kind = KINDS[document["kind"]]
    stored = as_stored(document)
    problems = _name_problems(kind, stored.get("metadata"))
    try:
        resource = kind.model_validate(stored)
    except ValidationError as err:
        raise InvalidResource(problems + [_explain(kind, e) for e in err.errors()]) from None
    if problems:
        raise InvalidResource(problems)
    return resource


def as_stored(document: dict[str, Any]) -> dict[str, Any]:
    """A TrainingJob or ModelService document as the API server stores it from `kubectl apply`: a ``null`` the
    schema does not allow is dropped (so the default applies), and a whole float in an integer field is an
    integer (kubectl sends YAML's ``2.0`` as ``2``)."""
    kind = KINDS.get(document.get("kind", ""))
    if kind is None:
        return document
    metadata: Schema = {"additionalProperties": {}}  # a null in object metadata reads as unset, too
    root: Schema = {"properties": {"metadata": metadata, "spec": spec_schema(kind)}}
    out: dict[str, Any] = _as_stored(document, root)
    return out


def _as_stored(value: Any, schema: Schema | None) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            sub = _field_schema(schema, key)
            if item is None and sub is not None and not sub.get("nullable"):
                continue
            out[key] = _as_stored(item, sub)
        return out
    if isinstance(value, list):
        items = schema.get("items") if schema else None
        return [_as_stored(item, items if isinstance(items, dict) else None) for item in value]
    if isinstance(value, float) and schema is not None and schema.get("type") == "integer" and value.is_integer():
        return int(value)
    return value


def _field_schema(schema: Schema | None, key: str) -> Schema | None:
    if schema is None:
        return None
    properties: dict[str, Schema] = schema.get("properties", {})
    if key in properties:
        return properties[key]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _name_problems(kind: type[Resource], metadata: Any) -> list[Problem]:
    """The kind's own rules on ``metadata.name`` (DNS-1035, a length our children's names allow), which the
    CRD's root CEL rules check; a name generated from ``generateName`` too."""
    if not isinstance(metadata, dict):
        return []  # the model reports it
    name = metadata.get("name")
    prefix = metadata.get("generateName")
    if name is None and isinstance(prefix, str) and prefix:
        generated = prefix[:MAX_GENERATE_NAME] + "x" * GENERATED_SUFFIX
        problem = NAME_PROBLEMS[kind.KIND](generated)
        if problem is None:
            return []
        limit = kind.MAX_NAME - GENERATED_SUFFIX
        fix = f"use a prefix of at most {limit} characters, e.g. {suggest_name(prefix, limit)!r}"
        return [Problem("metadata.generateName", f"a name generated from it is invalid: {problem}", fix)]
    if name is None:
        return [
            Problem(
                "metadata.name",
                "required field is missing",
                f"add `name` under `metadata`: {name_fix('', kind.MAX_NAME)}",
            )
        ]
    if not isinstance(name, str):
        return []  # the model reports it
    problem = NAME_PROBLEMS[kind.KIND](name)
    return [Problem("metadata.name", problem, name_fix(name, kind.MAX_NAME))] if problem else []


def validate_document(document: Any) -> list[Problem]:
    """Every problem in one document; empty when it is valid."""
    try:
        parse(document)
    except InvalidResource as invalid:
        return invalid.problems
    return []


class KubectlYamlLoader(yaml.SafeLoader):
    """YAML read as kubectl reads it (Go's YAML 1.1 resolver): ``1e-3`` is a number, where PyYAML's resolver wants
    a point and a signed exponent (``1.0e-3``) and makes ``1e-3`` a string; ``2024-01-01`` stays a string, where
    PyYAML makes it a date."""


KubectlYamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
KubectlYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def load_documents(text: str) -> list[Any]:
    """The YAML documents of a file (empty documents skipped), read as kubectl reads them; raises InvalidResource
    on a syntax error."""
    try:
        return [doc for doc in yaml.load_all(text, Loader=KubectlYamlLoader) if doc is not None]
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise InvalidResource(
            [Problem(where, f"not valid YAML: {getattr(err, 'problem', err)}", "correct the YAML syntax there")]
        ) from None


def _header_problems(document: Any) -> list[Problem]:
    if not isinstance(document, dict):
        return [
            Problem(
                "(document)",
                "expected a mapping with apiVersion, kind, metadata and spec",
                "write the resource as a YAML mapping",
            )
        ]
    kind = document.get("kind")
    if kind not in KINDS:
        return [Problem("kind", f"unknown kind {kind!r}", f"use one of: {', '.join(KINDS)}")]
    if document.get("apiVersion") != API_VERSION:
        return [
            Problem(
                "apiVersion",
                f"expected {API_VERSION!r}, found {document.get('apiVersion')!r}",
                f"set `apiVersion: {API_VERSION}`",
            )
        ]
    return []


def _explain(kind: type[Resource], error: ErrorDetails) -> Problem:
    loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    # A rule checked on a whole object or list names the entry it is about below the error's location.
    path = format_path(loc) + str(ctx.get("at", ""))
    kind_of_error = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    if "fix" in ctx:
        return Problem(path, message, str(ctx["fix"]))
    field = str(loc[-1]) if loc else ""
    if kind_of_error == "missing":
        return Problem(path, "required field is missing", f"add `{field}`{_described(kind, loc)}")
    if kind_of_error == "extra_forbidden":
        known = sorted(_schema_at(kind, loc[:-1]).get("properties", {}))
        close = difflib.get_close_matches(field, known, n=1)
        hint = f"did you mean `{close[0]}`? " if close else ""
        return Problem(path, f"unknown field `{field}`", f"{hint}known fields here: {', '.join(known)}")
    if kind_of_error in ("literal_error", "enum"):
        return Problem(path, f"unknown value {error['input']!r}", f"use one of: {ctx.get('expected', '')}")
    bounds = {
        "greater_than": ">",
        "greater_than_equal": ">=",
        "less_than": "<",
        "less_than_equal": "<=",
    }
    if kind_of_error in bounds:
        limit = next(iter(ctx.values()), "")
        return Problem(path, message, f"use a value {bounds[kind_of_error]} {limit}")
    if kind_of_error.endswith("_type") or kind_of_error.endswith("_parsing"):
        expected = _expected_type(kind, loc)
        return Problem(path, f"{error['input']!r} is not {expected}", f"give {expected}{_described(kind, loc)}")
    if kind_of_error == "string_pattern_mismatch":
        return Problem(path, message, f"write it in the documented form{_described(kind, loc)}")
    if kind_of_error in ("too_short", "too_long", "string_too_short", "string_too_long"):
        return Problem(path, message, "change the number of entries or characters to fit the limit")
    return Problem(
        path, message, f"see `kubectl explain {kind.PLURAL}.{'.'.join(str(p) for p in loc if isinstance(p, str))}`"
    )


def _schema_at(kind: type[Resource], loc: tuple[int | str, ...]) -> dict[str, Any]:
    node: dict[str, Any] = {"properties": {"spec": spec_schema(kind)}}
    for part in loc:
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            props = node.get("properties", {})
            if part not in props:
                return {}
            node = props[part]
    return node


def _described(kind: type[Resource], loc: tuple[int | str, ...]) -> str:
    description = _schema_at(kind, loc).get("description")
    return f" ({description})" if description else ""


def _expected_type(kind: type[Resource], loc: tuple[int | str, ...]) -> str:
    schema_type = _schema_at(kind, loc).get("type")
    return {
        "integer": "a whole number",
        "number": "a number",
        "string": "a string",
        "boolean": "true or false",
        "array": "a list",
        "object": "a mapping",
    }.get(str(schema_type), "a value of the right type")
