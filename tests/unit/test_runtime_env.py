"""`spec.runtimeEnv`: the model and the CRD agree on what they accept."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.documents import changed, example, our_crd
from tests.support.schemas import schema_errors, version_schema
from trainserve.api.validation import validate_document


def crd_errors(document: dict[str, Any]) -> list[str]:
    plural = "trainingjobs" if document["kind"] == "TrainingJob" else "modelservices"
    return schema_errors(document, version_schema(our_crd(plural), "v1alpha1"))


GOOD = [
    {"workingDir": "s3://team/code.zip"},
    {"workingDir": "./team-repo", "envVars": {"TEAM_FLAG": "on", "_X1": ""}},
    {"pip": ["scikit-image==0.24.0", "rich>=13"]},
]
BAD = [
    {"envVars": {"1BAD": "x"}},
    {"envVars": {"HAS-DASH": "x"}},
    {"pip": [""]},
    {"pip": ["x" * 600]},
    {"workingDir": ""},
    {"workingDir": "s3://b/" + "a" * 3000},
    {"unknown": True},
]


@pytest.mark.parametrize("kind", ["digits-trainingjob", "digits-modelservice"])
@pytest.mark.parametrize("runtime_env", GOOD)
def test_accepted_by_both(kind: str, runtime_env: dict[str, Any]) -> None:
    document = changed(example(kind), "spec.runtimeEnv", runtime_env)
    assert validate_document(document) == [] and crd_errors(document) == []


@pytest.mark.parametrize("kind", ["digits-trainingjob", "digits-modelservice"])
@pytest.mark.parametrize("runtime_env", BAD)
def test_refused_by_both_with_the_field_named(kind: str, runtime_env: dict[str, Any]) -> None:
    document = changed(example(kind), "spec.runtimeEnv", runtime_env)
    problems = validate_document(document)
    assert problems and all(p.path.startswith("spec.runtimeEnv") for p in problems), problems
    assert crd_errors(document)
