"""The fix for an invalid name names a valid one: the operator's condition, `trainserve validate` and `render`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from tests.support.documents import changed, example
from trainserve.api.validation import validate_document
from trainserve.cli import main
from trainserve.naming import (
    DNS1035_LABEL,
    MAX_MODELSERVICE_NAME,
    MAX_TRAININGJOB_NAME,
    name_problem,
    service_name_problem,
    suggest_name,
)
from trainserve.plans.common import parse_stored


@given(st.text(), st.integers(min_value=1, max_value=253))
def test_a_suggestion_is_a_dns1035_label_within_the_limit(name: str, limit: int) -> None:
    suggestion = suggest_name(name, limit)
    assert DNS1035_LABEL.match(suggestion) and len(suggestion) <= limit


@given(st.text())
def test_a_suggestion_passes_the_kinds_own_name_checks(name: str) -> None:
    assert name_problem(suggest_name(name, MAX_TRAININGJOB_NAME)) is None
    assert service_name_problem(suggest_name(name, MAX_MODELSERVICE_NAME)) is None


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("Digits_Ü-Job", "digits-u-job"),
        ("Straße", "strasse"),
        ("1digits", "x-1digits"),
        ("a.b", "a-b"),
        ("--模型--", "unnamed"),
        ("a" * 42 + "-bcd", "a" * 42),  # cut at the limit, without the trailing '-'
    ],
)
def test_a_suggestion_resembles_the_name(name: str, suggestion: str) -> None:
    assert suggest_name(name, 43) == suggestion


def test_the_operator_suggests_a_valid_name() -> None:
    body = changed(example("digits-trainingjob"), "metadata.name", "Digits_Ü-Job")
    resource, problems = parse_stored(body, name_problem, MAX_TRAININGJOB_NAME)
    assert resource is None and [p.path for p in problems] == ["metadata.name"]
    assert "'digits-u-job'" in problems[0].fix and "at most 43" in problems[0].fix


def test_validate_suggests_a_valid_name() -> None:
    problems = validate_document(changed(example("digits-modelservice"), "metadata.name", "Digits_Ü-Job"))
    assert [p.path for p in problems] == ["metadata.name"]
    assert "'digits-u-job'" in problems[0].fix and "at most 47" in problems[0].fix


def test_render_suggests_a_valid_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(changed(example("digits-trainingjob"), "metadata.name", "digits.v2")))
    with pytest.raises(SystemExit) as exited:
        main(["render", "-f", str(path)])
    assert exited.value.code == 2
    assert "fix: use a DNS-1035 name of at most 43 characters, e.g. 'digits-v2'" in capsys.readouterr().err
