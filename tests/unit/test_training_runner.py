"""Where a local run trains: the command's own process for one worker, Ray Train when the spec needs it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.support.documents import example
from trainserve.api.trainingjob import TrainingJob, TrainingJobSpec
from trainserve_workloads.train import _runtime_env_here, needs_ray


def spec(**changes: Any) -> TrainingJobSpec:
    document = example("digits-trainingjob")
    document["spec"]["resources"]["workers"] = 1
    document["spec"].update(changes)
    return TrainingJob.model_validate(document).spec


def test_one_worker_with_nothing_for_ray_to_do_trains_in_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert needs_ray(spec()) is None
    assert needs_ray(spec(runtimeEnv={"workingDir": str(tmp_path), "envVars": {"A": "1"}})) is None


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"resources": {"workers": 2}}, "2 workers are 2 processes"),
        ({"runtimeEnv": {"pip": ["requests"]}}, "runtimeEnv.pip"),
        ({"runtimeEnv": {"workingDir": "https://example.com/code.zip"}}, "Ray downloads runtimeEnv.workingDir"),
    ],
)
def test_what_only_ray_can_do_keeps_the_run_on_ray(
    changes: dict[str, Any], reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    found = needs_ray(spec(**changes))
    assert found is not None and reason in found


def test_a_run_inside_a_ray_cluster_stays_on_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert needs_ray(spec()) == "it joins the Ray cluster in RAY_ADDRESS"


def test_the_runtime_env_applies_in_this_process_and_is_put_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Ray does for a worker (envVars, workingDir as the current folder) holds for the run, and no longer:
    the next TrainingJob of the same command starts from the command's own environment."""
    monkeypatch.setenv("TEAM_FLAG", "outer")
    monkeypatch.delenv("TEAM_ONLY_INSIDE", raising=False)
    code = tmp_path / "team-repo"
    code.mkdir()
    before = os.getcwd()
    run = spec(runtimeEnv={"workingDir": str(code), "envVars": {"TEAM_FLAG": "on", "TEAM_ONLY_INSIDE": "1"}})
    with _runtime_env_here(run, str(code)):
        assert (os.environ["TEAM_FLAG"], os.environ["TEAM_ONLY_INSIDE"]) == ("on", "1")
        assert os.environ["TF_USE_LEGACY_KERAS"] == "1"
        assert Path.cwd() == code
    assert os.environ["TEAM_FLAG"] == "outer" and "TEAM_ONLY_INSIDE" not in os.environ
    assert os.getcwd() == before
