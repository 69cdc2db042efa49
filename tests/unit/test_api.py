"""The API models, the `trainserve validate` explanations, and the generated CRDs agree on what is valid."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.documents import all_examples, changed, example, our_crd
from tests.support.schemas import schema_errors, version_schema
from trainserve.api import ModelService, TrainingJob
from trainserve.api.validation import format_path, parse, validate_document

PLURAL = {"TrainingJob": "trainingjobs", "ModelService": "modelservices"}


def crd_errors(document: dict[str, Any]) -> list[str]:
    crd = our_crd(PLURAL[document["kind"]])
    return schema_errors(document, version_schema(crd, "v1alpha1"))


@pytest.mark.parametrize(("filename", "document"), all_examples(), ids=[n for n, _ in all_examples()])
def test_every_example_is_valid_for_the_models_and_the_crd(filename: str, document: dict[str, Any]) -> None:
    assert validate_document(document) == []
    assert crd_errors(document) == []


MINIMAL: dict[str, Any] = {
    "apiVersion": "trainserve.io/v1alpha1",
    "kind": "TrainingJob",
    "metadata": {"name": "tiny"},
    "spec": {"model": {"builtin": {"name": "mlp"}}, "dataset": {"builtin": "digits"}, "output": {"uri": "/m"}},
}


def test_defaults_fill_in_what_the_user_left_out() -> None:
    minimal = MINIMAL
    job = parse(minimal)
    assert isinstance(job, TrainingJob)
    assert job.spec.training.epochs == 10
    assert job.spec.training.optimizer.name == "adam"
    assert job.spec.dataset.validation_split == 0.2
    assert job.spec.resources.gpu_resource_name == "nvidia.com/gpu"
    assert job.spec.checkpoint_uri == "/m/checkpoints"
    assert crd_errors(minimal) == []


def test_wire_form_round_trips_in_camel_case() -> None:
    service = parse(example("digits-gpu-modelservice"))
    assert isinstance(service, ModelService)
    wire = service.to_wire()
    assert wire["spec"]["autoscaling"]["minReplicas"] == 2
    assert wire["spec"]["canary"]["autoPromote"]["maxLatencyP95Ms"] == 50
    assert ModelService.model_validate(wire) == service


TJ = example("digits-trainingjob")
MS = example("digits-modelservice")
MS_GPU = example("digits-gpu-modelservice")
SHADOW = example("digits-shadow-modelservice")
NPZ = changed(
    changed(changed(TJ, "spec.dataset.builtin", None, delete=True), "spec.dataset.uri", "/d.npz"),
    "spec.dataset.format",
    "npz",
)

# (description, invalid document, expected field path, words the message or fix must contain)
INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("dataset with builtin and uri", changed(TJ, "spec.dataset.uri", "s3://b/d.npz"), "spec.dataset", "exactly one"),
    ("dataset with neither", changed(TJ, "spec.dataset.builtin", None, delete=True), "spec.dataset", "exactly one"),
    (
        "uri without format",
        changed(changed(TJ, "spec.dataset.builtin", None, delete=True), "spec.dataset.uri", "/d.csv"),
        "spec.dataset",
        "format",
    ),
    ("columns on npz", changed(NPZ, "spec.dataset.labelColumn", "y"), "spec.dataset", "csv and parquet"),
    (
        "model with builtin and entrypoint",
        changed(TJ, "spec.model.entrypoint", "pkg.mod:build"),
        "spec.model",
        "exactly one",
    ),
    (
        "entrypoint without function",
        changed(changed(TJ, "spec.model.builtin", None, delete=True), "spec.model.entrypoint", "pkg.mod"),
        "spec.model.entrypoint",
        "pattern",
    ),
    ("negative gpusPerWorker", changed(TJ, "spec.resources.gpusPerWorker", -1), "spec.resources.gpusPerWorker", ">= 0"),
    ("zero workers", changed(TJ, "spec.resources.workers", 0), "spec.resources.workers", ">= 1"),
    (
        "memory not a quantity",
        changed(TJ, "spec.resources.memoryPerWorker", "lots"),
        "spec.resources.memoryPerWorker",
        "pattern",
    ),
    ("unknown optimizer", changed(TJ, "spec.training.optimizer.name", "adamx"), "spec.training.optimizer.name", "adam"),
    ("misspelt field", changed(TJ, "spec.training.epoch", 3), "spec.training.epoch", "epochs"),
    ("missing output.uri", changed(TJ, "spec.output.uri", None, delete=True), "spec.output.uri", "add `uri`"),
    ("validationSplit of 1", changed(TJ, "spec.dataset.validationSplit", 1.0), "spec.dataset.validationSplit", "< 1"),
    ("epochs as text", changed(TJ, "spec.training.epochs", "ten"), "spec.training.epochs", "whole number"),
    (
        "minReplicas above maxReplicas",
        changed(MS_GPU, "spec.autoscaling.minReplicas", 9),
        "spec.autoscaling",
        "maxReplicas",
    ),
    (
        "model with uri and fromTrainingJob",
        changed(MS, "spec.model.uri", "/models/digits/1"),
        "spec.model",
        "exactly one",
    ),
    (
        "canary without a model",
        changed(MS_GPU, "spec.canary.model", None, delete=True),
        "spec.canary.model",
        "add `model`",
    ),
    (
        "rollout canary without a canary policy",
        changed(MS, "spec.model.fromTrainingJob.rollout", "canary"),
        "spec.model.fromTrainingJob.rollout",
        "autoPromote",
    ),
    (
        "rollout canary with a canary model",
        changed(
            changed(MS, "spec.model.fromTrainingJob.rollout", "canary"),
            "spec.canary",
            {"model": {"uri": "s3://m/digits/2"}, "autoPromote": {}},
        ),
        "spec.model.fromTrainingJob.rollout",
        "without `canary.model`",
    ),
    (
        "rollout canary without autoPromote",
        changed(changed(MS, "spec.model.fromTrainingJob.rollout", "canary"), "spec.canary", {"trafficPercent": 10}),
        "spec.model.fromTrainingJob.rollout",
        "autoPromote",
    ),
    (
        "canary share over 100",
        changed(MS_GPU, "spec.canary.trafficPercent", 150),
        "spec.canary.trafficPercent",
        "<= 100",
    ),
    (
        "shadow share with mode split",
        changed(MS_GPU, "spec.canary.shadowPercent", 50),
        "spec.canary.shadowPercent",
        "set `mode: shadow`",
    ),
    (
        "agreement tolerance with mode split",
        changed(MS_GPU, "spec.canary.agreementTolerance", 0.1),
        "spec.canary.agreementTolerance",
        "applies only to mode shadow",
    ),
    (
        "minAgreement with mode split",
        changed(MS_GPU, "spec.canary.autoPromote.minAgreement", 0.9),
        "spec.canary.autoPromote.minAgreement",
        "remove `autoPromote.minAgreement`",
    ),
    (
        "afterShadow with mode split",
        changed(MS_GPU, "spec.canary.autoPromote.afterShadow", "split"),
        "spec.canary.autoPromote.afterShadow",
        "set `mode: shadow`",
    ),
    (
        "shadow mode promoted without minAgreement",
        changed(SHADOW, "spec.canary.autoPromote.minAgreement", None, delete=True),
        "spec.canary.autoPromote.minAgreement",
        "add `minAgreement`",
    ),
    ("shadow share of 0", changed(SHADOW, "spec.canary.shadowPercent", 0), "spec.canary.shadowPercent", ">= 1"),
    ("shadow share over 100", changed(SHADOW, "spec.canary.shadowPercent", 101), "spec.canary.shadowPercent", "<= 100"),
    (
        "minAgreement over 1",
        changed(SHADOW, "spec.canary.autoPromote.minAgreement", 1.5),
        "spec.canary.autoPromote.minAgreement",
        "<= 1",
    ),
    ("unknown canary mode", changed(SHADOW, "spec.canary.mode", "mirror"), "spec.canary.mode", "shadow"),
    (
        "unknown afterShadow",
        changed(SHADOW, "spec.canary.autoPromote.afterShadow", "canary"),
        "spec.canary.autoPromote.afterShadow",
        "split",
    ),
    ("negative replicas", changed(MS, "spec.replicas", -1), "spec.replicas", ">= 0"),
    (
        "incremental upgrade without its options",
        changed(MS_GPU, "spec.upgradeStrategy.clusterUpgradeOptions", None, delete=True),
        "spec.upgradeStrategy",
        "needs clusterUpgradeOptions",
    ),
    (
        "upgrade options with NewCluster",
        changed(MS_GPU, "spec.upgradeStrategy.type", "NewCluster"),
        "spec.upgradeStrategy",
        "set `type: NewClusterWithIncrementalUpgrade`",
    ),
    (
        "upgrade step above its surge",
        changed(MS_GPU, "spec.upgradeStrategy.clusterUpgradeOptions.stepSizePercent", 50),
        "spec.upgradeStrategy.clusterUpgradeOptions",
        "raise `maxSurgePercent`",
    ),
    (
        "unknown upgrade type",
        changed(MS, "spec.upgradeStrategy", {"type": "Recreate"}),
        "spec.upgradeStrategy.type",
        "NewClusterWithIncrementalUpgrade",
    ),
    (
        "registry URI without a registry",
        changed(MS, "spec.model", {"uri": "models:/digits@champion"}),
        "spec.model",
        "registry.trackingUri",
    ),
    (
        "registry URI without a version or alias",
        changed(MS, "spec.model", {"uri": "models:/digits", "registry": {"trackingUri": "http://mlflow:5000"}}),
        "spec.model.uri",
        "models:/NAME@ALIAS",
    ),
    (
        "registry for a storage URI",
        changed(MS, "spec.model", {"uri": "s3://models/digits/1", "registry": {"trackingUri": "http://mlflow:5000"}}),
        "spec.model.registry",
        "remove registry",
    ),
    ("bad model name", changed(MS, "spec.modelName", "my model!"), "spec.modelName", "pattern"),
    ("unknown runtime", changed(MS, "spec.runtime", "tflite"), "spec.runtime", "tensorflow"),
    # JSON types as the API server has them: no coercion from strings, booleans or numbers.
    ("epochs as a numeric string", changed(TJ, "spec.training.epochs", "12"), "spec.training.epochs", "whole number"),
    ("workers as true", changed(TJ, "spec.resources.workers", True), "spec.resources.workers", "whole number"),
    (
        "learning rate as a numeric string",
        changed(TJ, "spec.training.optimizer.learningRate", "0.01"),
        "spec.training.optimizer.learningRate",
        "a number",
    ),
    ("suspend as 1", changed(TJ, "spec.runPolicy.suspend", 1), "spec.runPolicy.suspend", "true or false"),
    ("suspend as a string", changed(TJ, "spec.runPolicy.suspend", "true"), "spec.runPolicy.suspend", "true or false"),
    ("CPUs as a word", changed(TJ, "spec.resources.cpusPerWorker", "lots"), "spec.resources.cpusPerWorker", "500m"),
    ("CPUs as true", changed(MS, "spec.resources.cpusPerReplica", True), "spec.resources.cpusPerReplica", "500m"),
    # The kinds' own name rules (the CRDs' root CEL rules): DNS-1035, and the length our children's names allow.
    ("name with a dot", changed(TJ, "metadata.name", "digits.v2"), "metadata.name", "'digits-v2'"),
    ("TrainingJob name of 44 characters", changed(TJ, "metadata.name", "d" * 44), "metadata.name", "at most 43"),
    ("ModelService name of 48 characters", changed(MS, "metadata.name", "d" * 48), "metadata.name", "at most 47"),
    ("uppercase name", changed(MS, "metadata.name", "Digits"), "metadata.name", "'digits'"),
    ("no name", changed(TJ, "metadata.name", None, delete=True), "metadata.name", "add `name`"),
]

#: (description, document, field path, the value it is read as): what the API server accepts, and so must we.
AS_THE_API_SERVER_READS: list[tuple[str, dict[str, Any], str, Any]] = [
    ("a null with a default", changed(TJ, "spec.training.epochs", None), "spec.training.epochs", 10),
    ("a null without a default", changed(TJ, "spec.image", None), "spec.image", None),
    ("a null section", changed(TJ, "spec.runPolicy", None), "spec.runPolicy.backoffLimit", 3),
    ("a null CPU amount", changed(MS, "spec.resources.cpusPerReplica", None), "spec.resources.cpusPerReplica", 1.0),
    ("a null map value", changed(TJ, "spec.resources.nodeSelector", {"a": None}), "spec.resources.nodeSelector", {}),
    ("a whole float for an integer", changed(TJ, "spec.training.epochs", 12.0), "spec.training.epochs", 12),
    ("an integer for a number", changed(TJ, "spec.dataset.validationSplit", 0), "spec.dataset.validationSplit", 0.0),
    ("CPUs as a string", changed(TJ, "spec.resources.cpusPerWorker", "500m"), "spec.resources.cpusPerWorker", "500m"),
    ("a generated name", changed(TJ, "metadata", {"generateName": "digits-"}), "metadata.name", None),
    (
        "a registered model",
        changed(MS, "spec.model", {"uri": "models:/digits/3", "registry": {"trackingUri": "http://mlflow:5000"}}),
        "spec.model.registry.resolveIntervalSeconds",
        60,
    ),
]


@pytest.mark.parametrize(
    ("what", "document", "path", "value"), AS_THE_API_SERVER_READS, ids=[a[0] for a in AS_THE_API_SERVER_READS]
)
def test_documents_the_api_server_accepts_are_valid(what: str, document: dict[str, Any], path: str, value: Any) -> None:
    assert validate_document(document) == []
    assert crd_errors(document) == []
    wire: Any = parse(document).model_dump(mode="json", by_alias=True)
    for part in path.split("."):
        wire = wire[part]
    assert wire == value


@pytest.mark.parametrize(("what", "document", "path", "words"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_documents_are_explained_with_path_and_fix(
    what: str, document: dict[str, Any], path: str, words: str
) -> None:
    problems = validate_document(document)
    assert [p.path for p in problems] == [path], problems
    problem = problems[0]
    assert problem.fix and "\n" not in problem.fix
    assert words in f"{problem.message} {problem.fix}"


@pytest.mark.parametrize(("what", "document", "path", "words"), INVALID, ids=[i[0] for i in INVALID])
def test_invalid_documents_are_refused_by_the_generated_crd(
    what: str, document: dict[str, Any], path: str, words: str
) -> None:
    errors = crd_errors(document)
    assert errors, f"the CRD schema accepted: {what}"


def test_header_problems() -> None:
    assert [p.path for p in validate_document({"kind": "Pod"})] == ["kind"]
    assert [p.path for p in validate_document(changed(TJ, "apiVersion", "trainserve.io/v1"))] == ["apiVersion"]
    assert [p.path for p in validate_document(["not", "a", "mapping"])] == ["(document)"]


def test_format_path() -> None:
    assert format_path(("spec", "dataset", "featureColumns", 0)) == "spec.dataset.featureColumns[0]"
    assert format_path(()) == "(document)"
