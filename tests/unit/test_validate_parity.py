"""`trainserve validate` gives the API server's verdict: every document the tests know, and a few hundred generated
variants of the examples, are accepted or refused alike by the models (`validate_document`, what the CLI runs) and
by the generated CRD (defaulting, structural validation and CEL, as the API server applies them)."""

from __future__ import annotations

import functools
from typing import Any

from tests.support.documents import all_examples, changed, example, our_crd
from tests.support.schemas import schema_errors, version_schema
from tests.support.variants import Variant, combined_variants, cpu_variants, name_variants, spec_variants
from tests.unit.test_api import AS_THE_API_SERVER_READS, INVALID, MINIMAL
from tests.unit.test_cli_validate import BAD_JOB
from tests.unit.test_crd_bounds import BOUNDS, LONG_URI
from tests.unit.test_trainingjob_crd_rules import DIGIT_FIRST, TOO_LONG
from trainserve.api.validation import validate_document

PLURALS = {"TrainingJob": "trainingjobs", "ModelService": "modelservices"}
CPU_FIELDS = {"TrainingJob": "spec.resources.cpusPerWorker", "ModelService": "spec.resources.cpusPerReplica"}
#: The examples whose every field is varied: between them they set every optional section.
VARIED = ("digits-trainingjob", "digits-gpu-trainingjob", "digits-gpu-modelservice")
SEED = 16


@functools.cache
def crd_schema(kind: str) -> dict[str, Any]:
    return version_schema(our_crd(PLURALS[kind]), "v1alpha1")


def known_documents() -> list[Variant]:
    """The documents the other tests use."""
    known: list[Variant] = [(f"example {name}", document) for name, document in all_examples()]
    known += [("minimal TrainingJob", MINIMAL), ("validate CLI: bad job", BAD_JOB), ("10000-character uri", LONG_URI)]
    known += [(f"invalid: {what}", document) for what, document, _, _ in INVALID]
    known += [(f"valid: {what}", document) for what, document, _, _ in AS_THE_API_SERVER_READS]
    known += [("name of 44 characters", TOO_LONG), ("name with a digit first", DIGIT_FIRST)]
    for name, path, at_limit, over in BOUNDS:
        known += [(f"{path} at its bound", changed(example(name), path, at_limit))]
        known += [(f"{path} over its bound", changed(example(name), path, over))]
    return known


def generated_documents() -> list[Variant]:
    generated: list[Variant] = []
    for name, document in all_examples():
        generated += [(f"{name}: {what}", doc) for what, doc in name_variants(document)]
        generated += [(f"{name}: {what}", doc) for what, doc in cpu_variants(document, CPU_FIELDS[document["kind"]])]
    for name in VARIED:
        base = example(name)
        varied = list(spec_variants(base, crd_schema(base["kind"])["properties"]["spec"]))
        generated += [(f"{name}: {what}", doc) for what, doc in varied]
        generated += [(f"{name}: {what}", doc) for what, doc in combined_variants(base, varied, 60, SEED)]
    return generated


def verdicts(document: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Why the CLI and why the API server (the CRD) refuse ``document``; empty lists when they accept it."""
    cli = [f"{p.path}: {p.message}" for p in validate_document(document)]
    crd = schema_errors(document, crd_schema(document["kind"]))
    return cli, crd


def test_the_cli_and_the_api_server_agree_on_every_document() -> None:
    documents = known_documents() + generated_documents()
    disagreements = []
    accepted = 0
    for what, document in documents:
        cli, crd = verdicts(document)
        if bool(cli) != bool(crd):
            disagreements.append(f"{what}\n    CLI: {cli or 'valid'}\n    API server: {crd or 'valid'}")
        accepted += not crd
    assert len(documents) >= 500
    assert 0.2 < accepted / len(documents) < 0.8, "the variants should be a mix of valid and invalid documents"
    assert disagreements == [], f"{len(disagreements)} of {len(documents)} documents:\n" + "\n".join(disagreements)
