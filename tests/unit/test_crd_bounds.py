"""Every free string, list and map of a spec is bounded, in the model and in the CRD alike: `trainserve validate`
and the API server accept the same lengths, and the CEL rules' inputs are bounded (the API server refuses a CRD
whose rules it estimates too costly, and counts an unbounded string as a whole 3 MiB request)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.documents import changed, example, our_crd
from tests.support.schemas import schema_errors, version_schema, walk_schema
from trainserve.api.validation import validate_document

PLURALS = {"TrainingJob": "trainingjobs", "ModelService": "modelservices"}


def crd_errors(document: dict[str, Any]) -> list[str]:
    return schema_errors(document, version_schema(our_crd(PLURALS[document["kind"]]), "v1alpha1"))


LONG_URI = changed(example("digits-trainingjob"), "spec.output.uri", "s3://bucket/" + "a" * 9988)


def test_a_10000_character_output_uri_is_refused_by_the_model_and_the_crd() -> None:
    document = LONG_URI
    assert len(document["spec"]["output"]["uri"]) == 10_000
    problems = validate_document(document)
    assert [p.path for p in problems] == ["spec.output.uri"] and "2048" in problems[0].message
    assert any("spec.output.uri" in e and "too long" in e for e in crd_errors(document))


#: Not user input, or bounded by the API server itself:
#: - ``status``: written only by trainserve (the operator, and a TrainingJob's head pod for its own status),
#:   and no CEL rule reads it;
#: - ``metadata``: the API server validates object metadata itself (names are at most 253 characters);
#: - ``apiVersion`` and ``kind``: the API server accepts only the CRD's own group, version and kind.
EXEMPT = ("status", "metadata", "apiVersion", "kind")


#: A CRD has no propertyNames: a map's keys are bounded by a CEL rule. (A preserve-unknown-fields map, such as
#: `training.hyperparameters`, is opaque to CEL and to the schema: only its entries are counted.)
KEY_RULE = "self.all(key, size(key) <= "


def _unbounded(node: dict[str, Any]) -> str | None:
    kind = node.get("type")
    # The API server bounds an enum by its longest value and a date-time by its format (a pattern bounds nothing).
    bounded_string = "maxLength" in node or "enum" in node or node.get("format") == "date-time"
    if kind == "string" and not bounded_string:
        return "a string without maxLength"
    if kind == "array" and "maxItems" not in node:
        return "an array without maxItems"
    is_map = "additionalProperties" in node or (
        node.get("x-kubernetes-preserve-unknown-fields") and not node.get("properties")
    )
    if kind == "object" and is_map and "maxProperties" not in node:
        return "a map without maxProperties"
    key_rules = [r for r in node.get("x-kubernetes-validations", []) if r["rule"].startswith(KEY_RULE)]
    if isinstance(node.get("additionalProperties"), dict) and not key_rules:
        return "a map whose keys are not bounded"
    return None


#: Inside the pod fields whose schema is Kubernetes' own (``spec.podTemplate``, vendored by
#: ``trainserve.api.k8s``), strings and lists are as unbounded as in a Pod: the lists themselves are bounded,
#: and the CEL rules read only the entries' names (volume and mount names: at most 63 characters) or compare
#: them with constants (env names, mount paths), which costs the constant's length.
KUBERNETES_SUBTREES = tuple(
    f".podTemplate.spec.{field}"
    for field in (
        "affinity.",
        "imagePullSecrets[]",
        "topologySpreadConstraints[]",
        "volumes[]",
        "containers[].env[]",
        "containers[].envFrom[]",
        "containers[].volumeMounts[]",
    )
)


@pytest.mark.parametrize("plural", PLURALS.values())
def test_every_string_list_and_map_of_the_spec_is_bounded(plural: str) -> None:
    root = version_schema(our_crd(plural), "v1alpha1")
    checked = {name: sub for name, sub in root["properties"].items() if name not in EXEMPT}
    assert list(checked) == ["spec"]
    unbounded = [
        f"{path}: {problem}"
        for path, node in walk_schema(checked["spec"], f"{plural}.spec")
        if (problem := _unbounded(node)) is not None and not any(sub in path for sub in KUBERNETES_SUBTREES)
    ]
    assert unbounded == []


@pytest.mark.parametrize("plural", PLURALS.values())
def test_the_names_cel_rules_compare_are_bounded(plural: str) -> None:
    pod = version_schema(our_crd(plural), "v1alpha1")["properties"]["spec"]["properties"]["podTemplate"]
    spec = pod["properties"]["spec"]["properties"]
    mounts = spec["containers"]["items"]["properties"]["volumeMounts"]
    assert spec["volumes"]["items"]["properties"]["name"]["maxLength"] == 63
    assert mounts["items"]["properties"]["name"]["maxLength"] == 63


@pytest.mark.parametrize("plural", PLURALS.values())
def test_rules_on_the_whole_object_read_only_the_name(plural: str) -> None:
    """Rules at the root may read metadata.name (bounded by the API server) and nothing unchecked above."""
    root = version_schema(our_crd(plural), "v1alpha1")
    for rule in root.get("x-kubernetes-validations", []):
        assert rule["rule"].replace("self.metadata.name", "").count("self.") == 0, rule


def _entries(count: int, value: Any) -> dict[str, Any]:
    return {f"k{i}": value for i in range(count)}


TOLERATION = {"key": "example.com/dedicated", "operator": "Exists"}

#: (example, dotted path, the longest or largest value accepted, the same one step over).
BOUNDS: list[tuple[str, str, Any, Any]] = [
    ("digits-trainingjob", "spec.output.uri", "/" + "a" * 2047, "/" + "a" * 2048),
    ("digits-trainingjob", "spec.checkpoint.uri", "/" + "a" * 2047, "/" + "a" * 2048),
    ("digits-trainingjob", "spec.image", "a" * 1024, "a" * 1025),
    ("digits-trainingjob", "spec.model", {"entrypoint": "m:" + "f" * 254}, {"entrypoint": "m:" + "f" * 255}),
    (
        "digits-trainingjob",
        "spec.dataset",
        {"uri": "/d.csv", "format": "csv", "featureColumns": ["c"] * 1024, "labelColumn": "y" * 256},
        {"uri": "/d.csv", "format": "csv", "featureColumns": ["c"] * 1025, "labelColumn": "y"},
    ),
    (
        "digits-trainingjob",
        "spec.dataset",
        {"uri": "/" + "d" * 2047, "format": "csv", "featureColumns": ["c" * 256]},
        {"uri": "/d.csv", "format": "csv", "featureColumns": ["c" * 257]},
    ),
    ("digits-trainingjob", "spec.training.hyperparameters", _entries(64, 1), _entries(65, 1)),
    ("digits-trainingjob", "spec.resources.memoryPerWorker", "1" * 62 + "Gi", "1" * 63 + "Gi"),
    (
        "digits-trainingjob",
        "spec.resources.gpuResourceName",
        "a" * 253 + "/" + "g" * 63,
        "a" * 254 + "/" + "g" * 63,
    ),
    ("digits-trainingjob", "spec.resources.nodeSelector", _entries(64, "v" * 63), _entries(65, "v")),
    ("digits-trainingjob", "spec.resources.nodeSelector", {"k" * 317: "v"}, {"k" * 318: "v"}),
    ("digits-trainingjob", "spec.resources.nodeSelector", {"k": "v" * 63}, {"k": "v" * 64}),
    ("digits-trainingjob", "spec.resources.tolerations", [TOLERATION] * 64, [TOLERATION] * 65),
    (
        "digits-trainingjob",
        "spec.resources.tolerations",
        [{"key": "k" * 317, "operator": "Equal", "value": "v" * 63}],
        [{"key": "k" * 318, "operator": "Equal", "value": "v"}],
    ),
    ("digits-trainingjob", "spec.resources.tolerations", [{"key": "k", "value": "v" * 63}], [{"value": "v" * 64}]),
    ("digits-trainingjob", "spec.storageSecretRef", {"name": "s" * 253}, {"name": "s" * 254}),
    ("digits-modelservice", "spec.model", {"uri": "/" + "m" * 2047}, {"uri": "/" + "m" * 2048}),
    ("digits-modelservice", "spec.model.fromTrainingJob.name", "j" * 253, "j" * 254),
    ("digits-modelservice", "spec.model.fromTrainingJob.minMetrics", {"m" * 64: 0.5}, {"m" * 65: 0.5}),
    ("digits-modelservice", "spec.model.fromTrainingJob.minMetrics", _entries(32, 0.5), _entries(33, 0.5)),
    ("digits-modelservice", "spec.image", "a" * 1024, "a" * 1025),
    ("digits-modelservice", "spec.resources.memoryPerReplica", "1" * 64, "1" * 65),
    ("digits-modelservice", "spec.resources.nodeSelector", {"k" * 317: "v" * 63}, {"k" * 318: "v"}),
    ("digits-modelservice", "spec.resources.tolerations", [TOLERATION] * 64, [TOLERATION] * 65),
    (
        "digits-modelservice",
        "spec.auth",
        {"tokenSecretRef": {"name": "s" * 253, "key": "k" * 253}},
        {"tokenSecretRef": {"name": "s", "key": "k" * 254}},
    ),
    ("digits-modelservice", "spec.storageSecretRef", {"name": "s" * 253}, {"name": "s" * 254}),
]


@pytest.mark.parametrize(
    ("name", "path", "at_limit", "over"), BOUNDS, ids=[f"{b[1]}-{i}" for i, b in enumerate(BOUNDS)]
)
def test_the_model_and_the_crd_draw_the_same_line(name: str, path: str, at_limit: Any, over: Any) -> None:
    accepted = changed(example(name), path, at_limit)
    assert validate_document(accepted) == [] and crd_errors(accepted) == []
    refused = changed(example(name), path, over)
    problems = validate_document(refused)
    assert problems and all(p.path.startswith(path) for p in problems), problems
    assert crd_errors(refused) != []
