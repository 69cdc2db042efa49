"""Generate the CustomResourceDefinitions from the pydantic models.

Pydantic emits JSON Schema (2020-12) with ``$ref``s and ``anyOf`` for optional fields; a CRD needs a
*structural* OpenAPI v3.0 schema: every node typed, no references, ``nullable`` instead of null types,
boolean ``exclusiveMinimum``. This module does that translation, and adds what only a CRD has:
CEL rules (from each model's ``CEL``), printer columns, subresources, names.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic import BaseModel

from .base import GROUP, VERSION, Resource
from .modelservice import ModelService
from .trainingjob import TrainingJob

Schema = dict[str, Any]

CATEGORY = "trainserve"

PRINTER_COLUMNS: dict[str, list[dict[str, Any]]] = {
    "TrainingJob": [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Phase of the job."},
        {
            "name": "Workers",
            "type": "integer",
            "jsonPath": ".spec.resources.workers",
            "description": "Training workers.",
        },
        {
            "name": "GPUs",
            "type": "integer",
            "jsonPath": ".spec.resources.gpusPerWorker",
            "description": "GPUs per worker.",
        },
        {
            "name": "Epoch",
            "type": "integer",
            "jsonPath": ".status.progress.epoch",
            "description": "Last completed epoch.",
        },
        {
            "name": "Loss",
            "type": "number",
            "jsonPath": ".status.progress.metrics.loss",
            "description": "Training loss of the last epoch.",
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {
            "name": "Progress",
            "type": "number",
            "jsonPath": ".status.progress.percent",
            "priority": 1,
            "description": "Percent of epochs done.",
        },
        {
            "name": "Model",
            "type": "string",
            "jsonPath": ".status.model.uri",
            "priority": 1,
            "description": "Trained model.",
        },
    ],
    "ModelService": [
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
            "description": "Whether the service answers requests.",
        },
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.readyReplicas", "description": "Ready replicas."},
        {
            "name": "Model",
            "type": "integer",
            "jsonPath": ".status.model.version",
            "description": "Served model version.",
        },
        {"name": "URL", "type": "string", "jsonPath": ".status.url", "description": "Inference base URL."},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {
            "name": "Canary",
            "type": "integer",
            "jsonPath": ".status.canary.trafficPercent",
            "priority": 1,
            "description": "Canary traffic percent.",
        },
    ],
}

SUBRESOURCES: dict[str, dict[str, Any]] = {
    "TrainingJob": {"status": {}},
    "ModelService": {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    },
}

RESOURCE_KINDS: tuple[type[Resource], ...] = (TrainingJob, ModelService)


def openapi_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3.0 schema of a pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions: dict[str, Schema] = raw.pop("$defs", {})
    return _structural(raw, definitions)


def _structural(node: Schema, definitions: dict[str, Schema]) -> Schema:
    node = dict(node)
    ref = node.pop("$ref", None)
    if ref is not None:
        target = definitions[ref.rsplit("/", 1)[-1]]
        return _structural({**target, **node}, definitions)
    variants = node.pop("anyOf", None)
    if variants is not None:
        concrete = [v for v in variants if v.get("type") != "null"]
        if sorted(v.get("type", "") for v in concrete) == ["number", "string"]:
            inner = _number_or_string(concrete, definitions)
        elif len(concrete) == 1:
            inner = _structural(concrete[0], definitions)
        else:
            raise ValueError(f"a CRD schema cannot express the union {variants}")
        # Field-level keys (description, default) win over the variant's own.
        return {**inner, **_structural_keywords(node, definitions)}
    return _structural_keywords(node, definitions)


#: Constraints that JSON Schema (and the API server) apply only to values of one type.
_NUMBER_CONSTRAINTS = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
_STRING_CONSTRAINTS = {"pattern", "minLength", "maxLength"}
#: Refuses what is neither a number nor a string: no object has at least 1 and at most 0 properties, no list at
#: least 1 and at most 0 items; booleans by value. (Each constraint applies only to values of its own type.)
_NEITHER_OBJECT_LIST_NOR_BOOLEAN: Schema = {
    "minProperties": 1,
    "maxProperties": 0,
    "minItems": 1,
    "maxItems": 0,
    "not": {"enum": [True, False]},
}


def _number_or_string(variants: list[Schema], definitions: dict[str, Schema]) -> Schema:
    """A value that is a number or a string, such as a CPU quantity (``1.5`` or ``"500m"``), in a structural schema.

    A structural schema allows no types inside ``anyOf`` (bar int-or-string), and ``x-kubernetes-int-or-string``
    refuses ``1.5``. What it does allow is a node without a type that keeps its value
    (``x-kubernetes-preserve-unknown-fields``) and carries value constraints. Constraints apply only to values of
    their own type, so the number's (``minimum``...) and the string's (``pattern``...) sit side by side, and
    constraints no object, list or boolean can meet refuse everything else. CEL rules cannot read such a field.
    """
    out: Schema = {"x-kubernetes-preserve-unknown-fields": True}
    for variant in variants:
        constraints = _structural(variant, definitions)
        kind = constraints.pop("type")
        allowed = _NUMBER_CONSTRAINTS if kind == "number" else _STRING_CONSTRAINTS
        if not set(constraints) <= allowed:
            raise ValueError(f"a number-or-string CRD field cannot express {sorted(set(constraints) - allowed)}")
        out.update(constraints)
    return {**out, **_NEITHER_OBJECT_LIST_NOR_BOOLEAN}


def _structural_keywords(node: Schema, definitions: dict[str, Schema]) -> Schema:
    out: Schema = {}
    key_rules: list[dict[str, str]] = []
    for key, value in node.items():
        if key == "title" or (key == "default" and value is None):
            continue
        if key == "propertyNames":
            key_rules += _key_rules(value)
            continue
        if key == "patternProperties":  # pydantic's form of a key pattern: values as additionalProperties
            if len(value) != 1:
                raise ValueError(f"a CRD schema cannot express patternProperties {value}")
            ((pattern, values),) = value.items()
            out["additionalProperties"] = _structural(values, definitions)
            key_rules += _key_rules({"pattern": pattern})
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _structural(prop, definitions) for name, prop in value.items()}
        elif key == "items":
            out[key] = _structural(value, definitions)
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = _structural(value, definitions)
            # `false` (unknown fields refused) has no structural form; the API server prunes or,
            # with kubectl's default strict field validation, rejects unknown fields.
        else:
            out[key] = value
    if key_rules:
        out["x-kubernetes-validations"] = [*out.get("x-kubernetes-validations", []), *key_rules]
    return out


def _key_rules(names: Schema) -> list[dict[str, str]]:
    """A CRD schema has no ``propertyNames``: a bound on a map's keys becomes a CEL rule (cheap, since the map
    has ``maxProperties``)."""
    unsupported = set(names) - {"maxLength", "pattern"}
    if unsupported:
        raise ValueError(f"a CRD schema cannot express propertyNames {names}")
    rules = []
    if "maxLength" in names:
        limit = names["maxLength"]
        rules.append(
            {"rule": f"self.all(key, size(key) <= {limit})", "message": f"keys must be at most {limit} characters"}
        )
    if "pattern" in names:
        pattern = names["pattern"]
        rules.append({"rule": f"self.all(key, key.matches('{pattern}'))", "message": f"keys must match {pattern}"})
    return rules


def _field_model(kind: type[Resource], field: str) -> type[BaseModel]:
    """The model class of ``spec`` or ``status`` (unwrapping ``X | None``)."""
    annotation = kind.model_fields[field].annotation
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    raise TypeError(f"{kind.KIND}.{field} is not a model")


@functools.cache
def spec_schema(kind: type[Resource]) -> Schema:
    """The structural schema of a kind's ``spec``."""
    return openapi_schema(_field_model(kind, "spec"))


def _resource_schema(kind: type[Resource]) -> Schema:
    root_rules: list[dict[str, str]] = list(getattr(kind, "ROOT_CEL", []))
    return {
        **({"x-kubernetes-validations": root_rules} if root_rules else {}),
        "type": "object",
        "description": kind.__doc__,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object: `trainserve.io/v1alpha1`."},
            "kind": {"type": "string", "description": f"Kind of this object: `{kind.KIND}`."},
            "metadata": {"type": "object"},
            "spec": copy.deepcopy(spec_schema(kind)),
            "status": openapi_schema(_field_model(kind, "status")),
        },
    }


def crd_for(kind: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition of one of our kinds."""
    name = kind.KIND
    plural: str = kind.PLURAL
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "trainserve", "app.kubernetes.io/part-of": "trainserve"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": name,
                "listKind": f"{name}List",
                "plural": plural,
                "singular": name.lower(),
                "shortNames": list(kind.SHORT_NAMES),
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": _resource_schema(kind)},
                    "subresources": SUBRESOURCES[name],
                    "additionalPrinterColumns": PRINTER_COLUMNS[name],
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    """Every CRD trainserve ships, in a stable order."""
    return [crd_for(kind) for kind in RESOURCE_KINDS]


def crd_filename(crd: dict[str, Any]) -> str:
    """File name of a CRD under ``crds/``, in the ``<group>_<plural>.yaml`` convention."""
    spec = crd["spec"]
    return f"{spec['group']}_{spec['names']['plural']}.yaml"
