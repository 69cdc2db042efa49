"""Check documents against the API and explain each problem: where (field path), what, and how to fix it."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from trainserve.naming import name_fix

from .base import API_VERSION, Resource
from .crd import RESOURCE_KINDS, spec_schema

KINDS: dict[str, type[Resource]] = {kind.KIND: kind for kind in RESOURCE_KINDS}


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
    """The typed resource a document describes; raises InvalidResource with every problem found."""
    problems = _header_problems(document)
    if problems:
        raise InvalidResource(problems)
    kind = KINDS[document["kind"]]
    try:
        return kind.model_validate(document)
    except ValidationError as err:
        raise InvalidResource([_explain(kind, e) for e in err.errors()]) from None


def validate_document(document: Any) -> list[Problem]:
    """Every problem in one document; empty when it is valid."""
    try:
        parse(document)
    except InvalidResource as invalid:
        return invalid.problems
    return []


def load_documents(text: str) -> list[Any]:
    """The YAML documents of a file (empty documents skipped); raises InvalidResource on a syntax error."""
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
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
    if loc == ("metadata", "name") and kind_of_error in ("string_pattern_mismatch", "string_too_long"):
        return Problem(path, message, name_fix(str(error["input"]), kind.MAX_NAME))
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
