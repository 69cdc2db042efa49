"""What the API server refuses for the operator: names KubeRay cannot use, and changes to immutable sections."""

from __future__ import annotations

from tests.support.documents import changed, example, our_crd
from tests.support.schemas import schema_errors, version_schema


def schema() -> dict:  # type: ignore[type-arg]
    return version_schema(our_crd("trainingjobs"), "v1alpha1")


TOO_LONG = changed(example("digits-trainingjob"), "metadata.name", "a" * 44)
DIGIT_FIRST = changed(example("digits-trainingjob"), "metadata.name", "1digits")


def test_names_kuberay_cannot_use_are_refused() -> None:
    assert schema_errors(example("digits-trainingjob"), schema()) == []
    assert any("at most 43" in p for p in schema_errors(TOO_LONG, schema()))
    assert any("start with a letter" in p for p in schema_errors(DIGIT_FIRST, schema()))


def test_immutable_sections_have_transition_rules() -> None:
    rules = [r["rule"] for r in schema()["properties"]["spec"]["x-kubernetes-validations"]]
    for section in ("model", "dataset", "training", "resources"):
        assert f"self.{section} == oldSelf.{section}" in rules
    assert not any("runPolicy" in r for r in rules)  # runPolicy changes take effect
