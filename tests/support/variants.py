"""Variants of valid documents, generated from the CRD schema: for every field, values at and over its bounds,
values of the wrong type, unknown and missing fields, wrong enum values, broken cross-field rules; plus names and
CPU quantities. Deterministic (seeded), so a failure names the same document every run."""

from __future__ import annotations

import copy
import itertools
import random
from collections.abc import Iterator
from typing import Any

from tests.support.schemas import walk_schema

Schema = dict[str, Any]
#: (what was changed, the changed document)
Variant = tuple[str, dict[str, Any]]

#: One sample of every JSON type, by type: what it is called, the sample. A field gets each of another type.
JSON_SAMPLES: dict[str, tuple[str, Any]] = {
    "string": ("a string", "text"),
    "integer": ("an integer", 7),
    "number": ("a fraction", 2.5),
    "boolean": ("a boolean", True),
    "array": ("a list", ["text"]),
    "object": ("an object", {"key": "text"}),
    "null": ("null", None),
}

NAMES = [
    "digits",
    "a",
    "a.b",
    "digits.v2",
    "Digits",
    "DIGITS",
    "1digits",
    "-digits",
    "digits-",
    "digits_v2",
    "dígits",
    "Digits_Ü-Job",
    "",
    "d" * 43,
    "d" * 44,
    "d" * 47,
    "d" * 48,
    "d" * 50,
    "d" * 63,
    "d" * 64,
]

CPUS: list[Any] = [
    "500m",
    "1",
    "2",
    1.5,
    "0.25",
    2,
    0.5,
    1,
    "1.5",
    "1500m",
    "0.001",
    "1m",
    "0.5m",
    "2k",
    "1Ki",
    "1e3",
    "0",
    "0m",
    "0.0",
    0,
    0.0,
    -1,
    "-1",
    "+1",
    "1.",
    ".5",
    "1 ",
    " 1",
    "1\n",
    "1u",
    "1n",
    "1mi",
    "one",
    "",
    "m",
    "1" * 64,
    "1" * 65,
    "1" * 62 + "Gi",
    True,
    False,
    None,
    [],
    ["1"],
    {},
    {"cpus": 1},
    1e-4,
    2000,
    "2000",
]


def set_at(document: dict[str, Any], path: str, value: Any, *, delete: bool = False) -> dict[str, Any]:
    """A copy of ``document`` with the value at a schema path (``.field``, ``[]`` for the first item, ``{}`` for the
    first map value) replaced, or a field deleted; missing objects, lists and maps on the way are created."""
    out = copy.deepcopy(document)
    steps = _steps(path)
    node: Any = out
    for step, following in itertools.pairwise(steps):
        empty: Any = [] if following == "[]" else {}
        node = _child(node, step, empty)
    last = steps[-1]
    if last == "[]":
        node[:1] = [value]
    elif last == "{}":
        node[next(iter(node), "key")] = value
    elif delete:
        node.pop(last, None)
    else:
        node[last] = value
    return out


def _steps(path: str) -> list[str]:
    """``spec.tolerations[].key`` -> ``["spec", "tolerations", "[]", "key"]``."""
    steps: list[str] = []
    for part in path.split("."):
        markers: list[str] = []
        while part.endswith(("[]", "{}")):
            markers.insert(0, part[-2:])
            part = part[:-2]
        steps += [part, *markers]
    return steps


def _child(node: Any, step: str, empty: Any) -> Any:
    if step == "[]":
        if not node:
            node.append(empty)
        if not isinstance(node[0], type(empty)):
            node[0] = empty
        return node[0]
    if step == "{}":
        key = next(iter(node), "key")
        if not isinstance(node.get(key), type(empty)):
            node[key] = empty
        return node[key]
    if not isinstance(node.get(step), type(empty)):
        node[step] = empty
    return node[step]


def field_values(node: Schema) -> Iterator[tuple[str, Any]]:
    """Values for one field of the schema: at and over its bounds, of other types, outside its enum."""
    kind = node.get("type")
    if kind is None:
        return  # a field of several types (CPU quantities): see CPUS
    for other, (called, sample) in JSON_SAMPLES.items():
        if other != kind and not (kind == "number" and other == "integer"):
            yield called, sample
    if kind in ("integer", "number"):
        step = 1 if kind == "integer" else 0.5
        for bound, exclusive, direction in (
            (node.get("minimum"), node.get("exclusiveMinimum"), -1),
            (node.get("maximum"), node.get("exclusiveMaximum"), 1),
        ):
            if bound is None:
                continue
            yield "at the bound", bound
            yield "past the bound", bound + direction * step
            if not exclusive:
                yield "inside the bound", bound - direction * step
        if kind == "integer":
            yield "a whole float", float(node.get("minimum", 0) + 1)
            yield "a fraction", float(node.get("minimum", 0)) + 1.5
        yield "a numeric string", str(node.get("minimum", 1))
    if kind == "string":
        if "enum" in node:
            yield "outside the enum", "bogus"
            yield "an enum value in the wrong case", str(node["enum"][0]).upper()
        if "pattern" in node:
            yield "against the pattern", "Not Valid!"
        if "maxLength" in node:
            yield "at maxLength", "a" * node["maxLength"]
            yield "over maxLength", "a" * (node["maxLength"] + 1)
        if node.get("minLength"):
            yield "under minLength", ""
        yield "a string with a newline", "value\n"
    if kind == "boolean":
        yield "a boolean string", "true"
        yield "a bit", 1
    if kind == "array":
        yield "an empty list", []
        if "maxItems" in node and isinstance(node.get("items"), dict):
            item = _sample(node["items"])
            if item is not None:
                yield "at maxItems", [item] * node["maxItems"]
                yield "over maxItems", [item] * (node["maxItems"] + 1)
    if kind == "object":
        yield "an empty object", {}
        if "maxProperties" in node:
            value = _sample(node["additionalProperties"]) if isinstance(node.get("additionalProperties"), dict) else 1
            yield "at maxProperties", {f"k{i}": value for i in range(node["maxProperties"])}
            yield "over maxProperties", {f"k{i}": value for i in range(node["maxProperties"] + 1)}
        for rule in node.get("x-kubernetes-validations", []):
            if rule["rule"].startswith("self.all(key, size(key) <= "):
                limit = int(rule["rule"].split("<=")[1].rstrip(")"))
                value = _sample(node["additionalProperties"])
                yield "a key at its bound", {"k" * limit: value}
                yield "a key over its bound", {"k" * (limit + 1): value}


def _sample(node: Schema) -> Any:
    """A value that the schema node accepts, when one is easy to give."""
    if "default" in node:
        return node["default"]
    if "enum" in node:
        return node["enum"][0]
    return {"integer": 1, "number": 1.0, "string": "v", "boolean": True}.get(node.get("type", ""))


def object_changes(path: str, node: Schema, document: dict[str, Any]) -> Iterator[Variant]:
    """Unknown and misspelt fields, and each required field left out, of one object node."""
    properties = node.get("properties") or {}
    if not properties:
        return
    yield f"{path}: an unknown field", set_at(document, f"{path}.bogusField", 1)
    first = sorted(properties)[0]
    yield f"{path}: `{first}` misspelt", set_at(document, f"{path}.{first}s", _sample(properties[first]) or "v")
    for name in node.get("required", []):
        yield f"{path}.{name}: left out", set_at(document, f"{path}.{name}", None, delete=True)


#: Kubernetes' own pod schemas under ``spec.podTemplate`` hold thousands of nodes (affinity alone hundreds):
#: their fields get a fixed, seeded sample of this many, ours all of theirs.
VENDORED_SAMPLE = 25


def _nodes(spec: Schema) -> list[tuple[str, Schema]]:
    """The spec's schema nodes to vary: every one of ours, a seeded sample inside the vendored pod schemas."""
    nodes = walk_schema(spec, "spec")
    vendored = [n for n in nodes if n[0].startswith("spec.podTemplate.spec.") and n[0].count(".") > 3]
    chosen = {path for path, _ in random.Random(15).sample(vendored, min(VENDORED_SAMPLE, len(vendored)))}
    return [(path, node) for path, node in nodes if (path, node) not in vendored or path in chosen]


def spec_variants(document: dict[str, Any], spec: Schema) -> Iterator[Variant]:
    """Every schema-derived change of one document's spec."""
    for path, node in _nodes(spec):
        for what, value in field_values(node):
            yield f"{path}: {what} ({_short(value)})", set_at(document, path, value)
        if node.get("type") == "object":
            yield from object_changes(path, node, document)
        if path != "spec" and not path.endswith(("[]", "{}")):
            yield f"{path}: left out", set_at(document, path, None, delete=True)


def name_variants(document: dict[str, Any]) -> Iterator[Variant]:
    for name in NAMES:
        yield f"metadata.name: {name!r}", set_at(document, "metadata.name", name)
    yield "metadata.name: a number", set_at(document, "metadata.name", 7)
    yield "metadata.name: left out", set_at(document, "metadata.name", None, delete=True)
    for prefix in ("digits-", "d" * 38, "d" * 39, "d" * 42, "d" * 43, "Digits-", "1-"):
        yield f"metadata.generateName: {prefix!r}", {**document, "metadata": {"generateName": prefix}}


def cpu_variants(document: dict[str, Any], path: str) -> Iterator[Variant]:
    for value in CPUS:
        yield f"{path}: {_short(value)}", set_at(document, path, value)


def combined_variants(base: dict[str, Any], variants: list[Variant], count: int, seed: int) -> Iterator[Variant]:
    """``count`` documents with the changes of two variants of ``base`` each (spec sections), chosen with a fixed
    seed: changes that interact."""
    rng = random.Random(seed)
    with_spec = [v for v in variants if isinstance(v[1].get("spec"), dict)]
    for _ in range(count):
        (first_what, first), (second_what, second) = rng.sample(with_spec, 2)
        both = copy.deepcopy(first)
        for key in set(base["spec"]) | set(second["spec"]):
            if key not in second["spec"]:
                both["spec"].pop(key, None)  # the second change left the section out
            elif second["spec"][key] != base["spec"].get(key):
                both["spec"][key] = copy.deepcopy(second["spec"][key])
        yield f"{first_what} + {second_what}", both


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...({len(text)} chars)"
