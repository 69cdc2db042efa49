"""What the API server refuses for the operator: names KubeRay cannot use, and changes to immutable sections."""

from __future__ import annotations

from tests.support.documents import changed, example, our_crd
from tests.support.schemas import schema_errors, version_schema


def schema() -> dict:  # type: ignore[type-arg]
    return version_schema(our_crd("trainingjobs"), "v1alpha1")


def test_names_kuberay_cannot_use_are_refused() -> None:
    ok = example("digits-trainingjob")
    assert schema_errors(ok, schema()) == []
    too_long = changed(ok, "metadata.name", "a" * 44)
    assert any("at most 43" in p for p in schema_errors(too_long, schema()))
    assert any("start with a letter" in p for p in schema_errors(changed(ok, "metadata.name", "1digits"), schema()))


def test_immutable_sections_have_transition_rules() -> None:
    rules = [r["rule"] for r in schema()["properties"]["spec"]["x-kubernetes-validations"]]
    for section in ("model", "dataset", "training", "resources"):
        assert f"self.{section} == oldSelf.{section}" in rules
    assert not any("runPolicy" in r for r in rules)  # runPolicy changes take effect
