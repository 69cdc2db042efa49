"""A TrainingJob on a real cluster: RayJob created, progress in status, Succeeded with a model."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from tests.e2e.conftest import kubectl
from tests.support.documents import example

pytestmark = pytest.mark.e2e


def test_digits_trainingjob_runs_to_a_model(cleanup: list[str]) -> None:
    document = example("digits-trainingjob")
    document["metadata"]["name"] = "e2e-digits"
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(document))
    cleanup.append("trainingjob/e2e-digits")

    deadline = time.monotonic() + 1200
    seen_progress = False
    while time.monotonic() < deadline:
        status = json.loads(kubectl("get", "trainingjob", "e2e-digits", "-o", "json")).get("status", {})
        seen_progress = seen_progress or bool(status.get("progress", {}).get("epoch"))
        if status.get("phase") in ("Succeeded", "Failed"):
            break
        time.sleep(5)
    assert status.get("phase") == "Succeeded", status
    assert seen_progress, "no progress was reported while training"
    assert status["model"]["version"] >= 1 and status["model"]["metrics"]["val_accuracy"] >= 0.9
    rayjobs = kubectl("get", "rayjobs", "-l", "trainserve.io/trainingjob=e2e-digits", "-o", "name").split()
    assert rayjobs == ["rayjob.ray.io/e2e-digits-1"]
    assert "e2e-digits" in kubectl("get", "tj", "e2e-digits")  # printer columns work with the short name
