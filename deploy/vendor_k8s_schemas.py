"""Vendors the Kubernetes schemas of the pod fields `spec.podTemplate` accepts, in the structural form a CRD needs.

    python deploy/vendor_k8s_schemas.py            # `make k8s-schemas`: write operator/trainserve/api/k8s/<file>
    python deploy/vendor_k8s_schemas.py --check    # fail when the vendored file is not what this script writes

Source: the Kubernetes OpenAPI definitions of one pinned release (:data:`KUBERNETES_VERSION`) as shipped by the
`kubernetes-validate` dev dependency (`kubernetes-json-schema/v<version>-local/_definitions.json`, Apache-2.0,
generated from Kubernetes' own `swagger.json`). Only this script reads that package: the operator loads the
vendored JSON file and never imports `kubernetes_validate`.

Why 1.30: KubeRay v1.7.0 (whose CRDs hold the Ray pods we write) knows every 1.30 pod field, so nothing the CRD
accepts is pruned on the way to the pod, and 1.30 fields are served by every supported cluster's kubelets
(fields newer than the cluster are dropped by its API server).

The conversion (``structural``): ``$ref``s inlined, ``["string", "null"]`` types made single, Kubernetes'
IntOrString and Quantity (``oneOf`` a string or a number) written as ``x-kubernetes-int-or-string: true``,
``additionalProperties: false`` dropped (a structural schema prunes or, with strict field validation, refuses
unknown fields), embedded object metadata cut to the fields a template may set (as controller-gen does),
extensions a CRD schema does not carry (``x-kubernetes-patch-*``, ``-group-version-kind``,
``-unions``) dropped; ``x-kubernetes-list-type``, ``-list-map-keys`` and ``-map-type`` kept. A list-map key that
is neither required nor defaulted gets ``default: ""``, as Kubernetes' own ``+default=""`` markers give it (the
swagger definitions carry no defaults), so that every entry has its key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]

KUBERNETES_VERSION = "1.30.0"
REPO = Path(__file__).resolve().parents[1]
OUTPUT = REPO / "operator" / "trainserve" / "api" / "k8s" / "pod_template_v1_30.json"
SOURCE = (
    Path(kubernetes_validate.__file__).resolve().parent
    / "kubernetes-json-schema"
    / f"v{KUBERNETES_VERSION}-local"
    / "_definitions.json"
)
CORE = "io.k8s.api.core.v1"
#: The fields `spec.podTemplate` takes from Kubernetes: ``<Definition>.<property>`` of ``io.k8s.api.core.v1``.
FIELDS = (
    "PodSpec.affinity",
    "PodSpec.imagePullSecrets",
    "PodSpec.topologySpreadConstraints",
    "PodSpec.volumes",
    "Container.env",
    "Container.envFrom",
    "Container.volumeMounts",
)
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
#: The metadata fields of an embedded template (an ephemeral volume's claim template) a user may set; the rest
#: (uid, managedFields, ...) is the server's. controller-gen writes the same subset into KubeRay's CRDs.
EMBEDDED_METADATA = {"annotations", "finalizers", "labels", "name", "namespace"}
KEPT = {
    "description",
    "type",
    "properties",
    "items",
    "additionalProperties",
    "required",
    "enum",
    "format",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
}
DROPPED = {
    "$ref",
    "oneOf",
    "x-kubernetes-patch-strategy",
    "x-kubernetes-patch-merge-key",
    "x-kubernetes-group-version-kind",
    "x-kubernetes-unions",
}

Schema = dict[str, Any]


def structural(node: Schema, definitions: dict[str, Schema], seen: tuple[str, ...] = ()) -> Schema:
    """``node`` with every reference inlined, in the structural form (see the module docstring)."""
    ref = node.get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        if name in seen:
            raise ValueError(f"recursive definition {name}: a CRD schema cannot inline it")
        definition = definitions[name]
        if name == OBJECT_META:
            kept = {k: v for k, v in definition["properties"].items() if k in EMBEDDED_METADATA}
            definition = {**definition, "properties": kept}
        target = structural(definition, definitions, (*seen, name))
        # The property's own description is the more specific one (the definition's describes the type).
        return {**target, **{k: v for k, v in node.items() if k == "description"}}
    variants = node.get("oneOf")
    if variants is not None:
        types = {t for v in variants for t in _types(v)} - {"null"}
        if types not in ({"string", "integer"}, {"string", "number"}):
            raise ValueError(f"unsupported oneOf {variants}")
        out: Schema = {"x-kubernetes-int-or-string": True}
        if "description" in node:
            out["description"] = node["description"]
        return out
    unknown = set(node) - KEPT - DROPPED
    if unknown:
        raise ValueError(f"unsupported keywords {sorted(unknown)} in {node}")
    out = {}
    for key, value in node.items():
        if key in DROPPED:
            continue
        if key == "type":
            kinds = [t for t in _types(node) if t != "null"]
            if len(kinds) != 1:
                raise ValueError(f"unsupported type {value}")
            out["type"] = kinds[0]
        elif key == "properties":
            out[key] = {name: structural(prop, definitions, seen) for name, prop in value.items()}
        elif key == "items":
            out[key] = structural(value, definitions, seen)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = structural(value, definitions, seen)
            elif value is True:
                out["x-kubernetes-preserve-unknown-fields"] = True
        elif key == "enum":
            out[key] = [v for v in value if v is not None]
        else:
            out[key] = value
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        raise ValueError(f"an object without properties would be pruned: {node}")
    if out.get("x-kubernetes-list-type") == "map":
        _default_map_keys(out)
    return out


def _types(node: Schema) -> list[str]:
    kind = node.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _default_map_keys(array: Schema) -> None:
    item = array["items"]
    required = set(item.get("required", []))
    for key in array["x-kubernetes-list-map-keys"]:
        prop = item["properties"][key]
        if key not in required and "default" not in prop:
            if prop.get("type") != "string":
                raise ValueError(f"list-map key {key} is optional and not a string: {array}")
            prop["default"] = ""


def vendored() -> Schema:
    """The document written to :data:`OUTPUT`."""
    definitions: dict[str, Schema] = json.loads(SOURCE.read_text())["$defs"]
    fields: dict[str, Schema] = {}
    for field in FIELDS:
        kind, prop = field.split(".")
        fields[field] = structural(definitions[f"{CORE}.{kind}"]["properties"][prop], definitions)
    return {
        "kubernetesVersion": KUBERNETES_VERSION,
        "source": f"Kubernetes v{KUBERNETES_VERSION} OpenAPI definitions ({CORE}), as shipped by the "
        f"kubernetes-validate package (kubernetes-json-schema/v{KUBERNETES_VERSION}-local/_definitions.json)",
        "license": "Apache-2.0; Copyright The Kubernetes Authors",
        "generator": "deploy/vendor_k8s_schemas.py",
        "fields": fields,
    }


def render() -> str:
    return json.dumps(vendored(), indent=1, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the vendored file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT.relative_to(REPO)} is stale: run 'python deploy/vendor_k8s_schemas.py'")
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(REPO)} ({len(text):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
