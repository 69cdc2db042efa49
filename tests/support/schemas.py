"""Validate objects the way the Kubernetes API server validates custom resources.

For a CRD's ``openAPIV3Schema``: apply ``default``s (as the server does before validating), refuse
unknown fields (kubectl's default strict field validation), check the OpenAPI constraints, and evaluate
the ``x-kubernetes-validations`` CEL rules with a real CEL interpreter.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

# KubeRay v1.7.0's CRDs, vendored byte for byte (see kuberay-crds/README.md).
KUBERAY_CRDS = Path(__file__).resolve().parent / "kuberay-crds"

Schema = dict[str, Any]


def version_schema(crd: dict[str, Any], version: str) -> Schema:
    for entry in crd["spec"]["versions"]:
        if entry["name"] == version:
            return entry["schema"]["openAPIV3Schema"]
    raise KeyError(f"{crd['metadata']['name']} has no version {version}")


@functools.cache
def _load_crd(path: str) -> dict[str, Any]:
    return yaml.load(Path(path).read_text(), Loader=yaml.CSafeLoader)  # libyaml: KubeRay's CRDs are megabytes


def crd_from_file(path: Path) -> dict[str, Any]:
    return _load_crd(str(path))


def apply_defaults(value: Any, schema: Schema) -> Any:
    """A copy of ``value`` with the schema's defaults filled in, top-down like the API server: a ``null`` where
    the schema allows none is dropped, or replaced by the default when there is one."""
    value = copy.deepcopy(value)
    _prune_nulls(value, schema)
    _default_in_place(value, schema)
    return value


def _prune_nulls(value: Any, schema: Schema | None) -> None:
    """The API server's ``PruneNonNullableNullsWithoutDefaults``: nulls of fields (and map values) that are not
    nullable and have no default are dropped; list items are left alone."""
    if isinstance(value, dict):
        for key in list(value):
            sub = _field_schema(schema, key)
            if value[key] is None and sub is not None and not sub.get("nullable") and "default" not in sub:
                del value[key]
            else:
                _prune_nulls(value[key], sub)
    elif isinstance(value, list):
        items = schema.get("items") if schema else None
        for item in value:
            _prune_nulls(item, items if isinstance(items, dict) else None)


def _field_schema(schema: Schema | None, key: str) -> Schema | None:
    if schema is None:
        return None
    if key in schema.get("properties", {}):
        return schema["properties"][key]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def _default_in_place(value: Any, schema: Schema) -> None:
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for name, sub in properties.items():
            missing = name not in value or (value[name] is None and not sub.get("nullable"))
            if missing and "default" in sub:
                value[name] = copy.deepcopy(sub["default"])
            if name in value:
                _default_in_place(value[name], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                _default_in_place(value[key], extra)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _default_in_place(item, schema["items"])


def _unknown_fields(value: Any, schema: Schema, path: str) -> list[str]:
    problems: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        if properties is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            problems += [f"{path}.{k}: unknown field" for k in value if k not in properties]
        for key, item in value.items():
            sub = (properties or {}).get(key)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None:
                problems += _unknown_fields(item, sub, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            problems += _unknown_fields(item, schema["items"], f"{path}[{index}]")
    return problems


def _children(value: Any, schema: Schema, path: str) -> Iterator[tuple[Any, Schema, str]]:
    """Each field or item of ``value`` with its schema node and path (fields the schema does not know are left out)."""
    if isinstance(value, dict):
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None:
                yield item, sub, f"{path}.{key}"
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield item, schema["items"], f"{path}[{index}]"


def _duplicate_keys(value: Any, schema: Schema, path: str) -> list[str]:
    """Entries of an ``x-kubernetes-list-type: map`` list with the same key (the API server refuses them)."""
    problems: list[str] = []
    if isinstance(value, list) and schema.get("x-kubernetes-list-type") == "map":
        keys = schema["x-kubernetes-list-map-keys"]
        # compared by repr: a key of the wrong type (a list) is the type check's to report, not a crash here
        entries = [{k: item.get(k) for k in keys} for item in value if isinstance(item, dict)]
        seen = [repr(entry) for entry in entries]
        problems += [
            f"{path}: duplicate entries with {entry}"
            for index, entry in enumerate(entries)
            if seen.count(seen[index]) > 1 and seen.index(seen[index]) == index
        ]
    for item, sub, where in _children(value, schema, path):
        problems += _duplicate_keys(item, sub, where)
    return problems


@functools.cache
def _cel_program(rule: str) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _cel_failures(value: Any, schema: Schema, path: str) -> list[str]:
    problems: list[str] = []
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            continue  # transition rules need the previous object; checked by the tests that update
        try:
            result = _cel_program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        except celpy.CELEvalError as err:  # the API server refuses an object a rule cannot be evaluated on
            problems.append(f"{path}: {rule.get('message', rule['rule'])} (evaluation error: {err.args[0]})")
            continue
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            problems.append(f"{path}: {rule.get('message', rule['rule'])}")
    for item, sub, where in _children(value, schema, path):
        problems += _cel_failures(item, sub, where)
    return problems


def _openapi_to_jsonschema(schema: Any) -> Any:
    """OpenAPI v3.0 -> JSON Schema draft 4: ``nullable`` becomes a null type; extensions are dropped."""
    if isinstance(schema, list):
        return [_openapi_to_jsonschema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key in ("properties", "patternProperties"):
            out[key] = {k: _openapi_to_jsonschema(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _openapi_to_jsonschema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_openapi_to_jsonschema(v) for v in value]
        elif key == "pattern":
            out[key] = _go_pattern(value)
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def as_kubectl_sends(value: Any) -> Any:
    """``value`` as JSON from kubectl: a YAML document is decoded in Go, so a whole float (``2.0``) is written as
    an integer (``2``)."""
    if isinstance(value, dict):
        return {key: as_kubectl_sends(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_kubectl_sends(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    return value


def as_created(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with the name the API server gives an object created with ``generateName`` (at most 58 characters of
    it, then 5 random consonants and digits) before it validates."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict) or metadata.get("name") or not metadata.get("generateName"):
        return obj
    return {**obj, "metadata": {**metadata, "name": str(metadata["generateName"])[:58] + "bcdfg"}}


def _go_pattern(pattern: str) -> str:
    """A Go (RE2) ``pattern`` for Python's ``re``: ``$`` ends the text in Go; in Python it also matches before a
    final newline, which ``\\Z`` does not."""
    return re.sub(r"(?<!\\)\$", r"\\Z", pattern)


def schema_errors(obj: dict[str, Any], schema: Schema) -> list[str]:
    """Every reason the API server would refuse ``obj``, as kubectl sends it, (after defaulting) under
    ``schema``."""
    defaulted = apply_defaults(as_created(as_kubectl_sends(obj)), schema)
    validator = jsonschema.Draft4Validator(_openapi_to_jsonschema(schema))
    problems = [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(root)'}: {error.message}"
        for error in validator.iter_errors(defaulted)
    ]
    problems += _unknown_fields(defaulted, schema, "")
    problems += _duplicate_keys(defaulted, schema, "")
    if not problems:  # CEL runs only on schema-valid objects, like the API server
        problems += _cel_failures(defaulted, schema, "")
    return problems


def kuberay_schema(kind: str) -> Schema:
    """The v1 schema of a KubeRay kind (``RayJob``, ``RayService``, ``RayCluster``) from the vendored CRDs."""
    path = KUBERAY_CRDS / f"ray.io_{kind.lower()}s.yaml"
    return version_schema(crd_from_file(path), "v1")


def walk_schema(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """Every node of an OpenAPI schema with its path (``.field``, ``[]`` for items, ``{}`` for map values)."""
    nodes = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        nodes += walk_schema(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        nodes += walk_schema(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        nodes += walk_schema(schema["additionalProperties"], f"{path}{{}}")
    return nodes
