"""The RayService patch: the JSON merge patch (RFC 7386) from the spec we applied last to the one we want now,
and reading back the applied spec from its annotation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainserve.controllers.modelservice import APPLIED_ANNOTATION, applied_spec, merge_diff


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386, section 2: what the API server does with a merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


# A few keys, so that old and new documents share keys and nested objects get diffed, not just replaced.
# Integers and strings only: Python's ``1 == True`` would make a changed JSON type look unchanged.
KEYS = st.sampled_from(["a", "b", "c", "d"])
SCALARS = st.integers(-3, 3) | st.text(max_size=2)


def documents(with_nulls: bool) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects; a merge patch cannot produce an object member that is null, so ``new`` has none
    (null list items are fine: lists are replaced whole)."""
    leaves = SCALARS | st.none() if with_nulls else SCALARS
    values = st.recursive(
        leaves,
        lambda inner: st.lists(inner | st.none(), max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
        max_leaves=12,
    )
    return st.dictionaries(KEYS, values, max_size=4)


#: Generating the first documents can be slow on a machine busy with other tests; that is not a failure.
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)


def test_removed_keys_become_null() -> None:
    assert merge_diff({"a": 1, "b": {"c": 2}}, {"a": 1}) == {"b": None}


def test_nested_objects_are_diffed_key_by_key() -> None:
    old = {"spec": {"replicas": 1, "serve": {"route": "/digits", "port": 8000}}}
    new = {"spec": {"replicas": 1, "serve": {"route": "/digits", "port": 9000, "timeout": 30}}}
    assert merge_diff(old, new) == {"spec": {"serve": {"port": 9000, "timeout": 30}}}


def test_changed_lists_are_replaced_whole() -> None:
    old = {"workers": [{"name": "cpu", "replicas": 1}, {"name": "gpu", "replicas": 2}], "args": ["a", "b"]}
    new = {"workers": [{"name": "cpu", "replicas": 3}], "args": ["a", "b"]}
    assert merge_diff(old, new) == {"workers": [{"name": "cpu", "replicas": 3}]}


def test_an_object_replaced_by_a_scalar_and_back() -> None:
    assert merge_diff({"a": {"b": 1}}, {"a": 5}) == {"a": 5}
    assert merge_diff({"a": 5}, {"a": {"b": 1}}) == {"a": {"b": 1}}


def test_an_unchanged_spec_needs_an_empty_patch() -> None:
    spec = {"a": 1, "b": {"c": [1, 2], "d": {"e": "x"}}}
    assert merge_diff(spec, json.loads(json.dumps(spec))) == {}


@PROPERTY
@given(documents(with_nulls=True), documents(with_nulls=False))
def test_applying_the_patch_to_old_gives_new(old: dict[str, Any], new: dict[str, Any]) -> None:
    assert apply_merge_patch(old, merge_diff(old, new)) == new


@PROPERTY
@given(documents(with_nulls=True), documents(with_nulls=False))
def test_the_patch_names_only_keys_that_changed(old: dict[str, Any], new: dict[str, Any]) -> None:
    patch = merge_diff(old, new)
    assert all(key not in old or key not in new or old[key] != new[key] for key in patch)


@PROPERTY
@given(documents(with_nulls=True))
def test_a_document_diffed_with_itself_is_an_empty_patch(doc: dict[str, Any]) -> None:
    assert merge_diff(doc, doc) == {}


def rayservice(annotations: dict[str, str] | None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "digits", "namespace": "ml"}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"metadata": metadata, "spec": {"serveConfigV2": "applications: []"}}


def test_applied_spec_reads_the_annotation() -> None:
    spec = {"serveConfigV2": "applications: []", "rayClusterConfig": {"rayVersion": "2.40.0"}}
    assert applied_spec(rayservice({APPLIED_ANNOTATION: json.dumps(spec)})) == spec


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(rayservice({APPLIED_ANNOTATION: '{"serveConfigV2": '}), id="broken-json"),
        pytest.param(rayservice({APPLIED_ANNOTATION: "[1, 2]"}), id="a-list"),
        pytest.param(rayservice({APPLIED_ANNOTATION: '"text"'}), id="a-string"),
        pytest.param(rayservice({APPLIED_ANNOTATION: ""}), id="empty"),
        pytest.param(rayservice({"other": "{}"}), id="another-annotation"),
        pytest.param(rayservice(None), id="no-annotations"),
        pytest.param({"metadata": None, "spec": {}}, id="null-metadata"),
        pytest.param({}, id="no-metadata"),
    ],
)
def test_applied_spec_is_none_without_a_usable_annotation(obj: dict[str, Any]) -> None:
    assert applied_spec(obj) is None
