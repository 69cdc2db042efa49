"""`trainserve logs`: which pod it reads (pure), and its kubectl plugin entry point."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from trainserve.podlogs import LogsError, LogSource, modelservice_source, parse_target, trainingjob_source

ROOT = Path(__file__).resolve().parents[2]


def pod(name: str, created: str = "2026-12-01T10:00:00Z", **labels: str) -> dict[str, Any]:
    spec = {"containers": [{"name": "ray-job-submitter"}]}
    return {"metadata": {"name": name, "labels": labels, "creationTimestamp": created}, "spec": spec}


def ray_pod(name: str, cluster: str, node_type: str) -> dict[str, Any]:
    return pod(name, **{"ray.io/cluster": cluster, "ray.io/node-type": node_type})


def test_targets() -> None:
    assert parse_target("tj/digits") == ("TrainingJob", "digits")
    assert parse_target("modelservices/digits") == ("ModelService", "digits")
    with pytest.raises(LogsError, match="tj/NAME"):
        parse_target("digits")


def test_the_newest_submitter_pod_of_the_attempt_is_the_drivers() -> None:
    pods = [
        pod("digits-2-old", "2026-12-01T10:00:00Z", **{"batch.kubernetes.io/job-name": "digits-2"}),
        pod("digits-2-new", "2026-12-01T10:05:00Z", **{"job-name": "digits-2"}),
        pod("digits-1-first", "2026-12-01T11:00:00Z", **{"batch.kubernetes.io/job-name": "digits-1"}),
        ray_pod("digits-2-abcde-head", "digits-2-abcde", "head"),
    ]
    assert trainingjob_source("digits", 2, pods, None) == LogSource("digits-2-new", "ray-job-submitter")


def test_workers_belong_to_the_attempts_cluster_only() -> None:
    pods = [
        ray_pod("digits-1-aaaaa-worker-x", "digits-1-aaaaa", "worker"),
        ray_pod("digits-10-bbbbb-worker-y", "digits-10-bbbbb", "worker"),
    ]
    assert trainingjob_source("digits", 1, pods, 0).pod == "digits-1-aaaaa-worker-x"
    with pytest.raises(LogsError, match=r"0: digits-1-aaaaa-worker-x$"):
        trainingjob_source("digits", 1, pods, 1)


def test_a_service_without_workers_shows_its_head() -> None:
    source = modelservice_source("digits", [ray_pod("digits-c-head", "digits-c", "head")], None)
    assert source.pod == "digits-c-head" and source.container == "ray-head" and "no worker pod" in source.note


def test_installed_as_a_kubectl_plugin() -> None:
    """kubectl runs `kubectl-<name>` from PATH for `kubectl <name> ...`: the plugin is the same command."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kubectl-trainserve"] == scripts["trainserve"] == "trainserve.cli:main"
