"""The operator settings that lock the Ray clusters down, read from the environment as the chart sets them."""

from __future__ import annotations

import pytest

from trainserve.settings import parse_labels, settings_from


def test_security_settings_default_to_locked_down() -> None:
    settings = settings_from({})
    assert settings.ray_auth is True
    assert settings.kuberay_namespace == "kuberay-system" and settings.prometheus_namespace == "monitoring"
    assert settings.serve_from_namespace_labels == {} and settings.serve_from_pod_labels == {}


def test_the_environment_sets_them() -> None:
    settings = settings_from(
        {
            "TRAINSERVE_RAY_AUTH": "false",
            "TRAINSERVE_KUBERAY_NAMESPACE": "ray-system",
            "TRAINSERVE_OPERATOR_NAMESPACE": "trainserve",
            "TRAINSERVE_PROMETHEUS_NAMESPACE": "*",
            "TRAINSERVE_SERVE_FROM_NAMESPACE_LABELS": "team=web, tier=edge",
            "TRAINSERVE_SERVE_FROM_POD_LABELS": "app=frontend",
        }
    )
    assert settings.ray_auth is False and settings.kuberay_namespace == "ray-system"
    assert settings.operator_namespace == "trainserve" and settings.prometheus_namespace == "*"
    assert settings.serve_from_namespace_labels == {"team": "web", "tier": "edge"}
    assert settings.serve_from_pod_labels == {"app": "frontend"}


@pytest.mark.parametrize("text", ["team", "=web", "team=web,tier"])
def test_a_label_list_without_key_value_pairs_is_refused_with_the_variable_and_an_example(text: str) -> None:
    with pytest.raises(ValueError, match=r"TRAINSERVE_SERVE_FROM_POD_LABELS: .* is not key=value; write e\.g\."):
        parse_labels(text, "TRAINSERVE_SERVE_FROM_POD_LABELS")


def test_an_empty_value_is_an_empty_label_value() -> None:
    assert parse_labels("role=", "X") == {"role": ""}
