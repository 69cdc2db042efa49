"""A ModelService on a real cluster: trains digits, serves it through the RayService, answers v1 and v2, and
`kubectl scale` changes the replicas. Covered without a cluster by tests/integration and tests/workloads."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from sklearn.datasets import load_digits

from tests.e2e.conftest import kubectl
from tests.support.documents import example

pytestmark = pytest.mark.e2e


def wait_for(resource: str, check: object, timeout: float) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    status: dict = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        status = json.loads(kubectl("get", resource, "-o", "json")).get("status", {})
        if check(status):  # type: ignore[operator]
            return status
        time.sleep(5)
    raise AssertionError(f"{resource} did not get there: {status}")


def ready(status: dict) -> bool:  # type: ignore[type-arg]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))


def test_trained_model_is_served_and_scales(cleanup: list[str]) -> None:
    job = example("digits-trainingjob")
    job["metadata"]["name"] = "e2e-serve"
    service = example("digits-modelservice")
    service["metadata"]["name"] = "e2e-serve"
    service["spec"]["model"]["fromTrainingJob"]["name"] = "e2e-serve"
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all([job, service]))
    cleanup.extend(["modelservice/e2e-serve", "trainingjob/e2e-serve"])

    wait_for("trainingjob/e2e-serve", lambda s: s.get("phase") == "Succeeded", 1200)
    status = wait_for("modelservice/e2e-serve", ready, 900)
    assert status["model"]["version"] >= 1 and status["url"].startswith("http://e2e-serve-serve-svc.")

    x, y = load_digits(return_X_y=True)
    body = json.dumps({"instances": x[:20].tolist()})
    answer = kubectl(
        "run",
        "e2e-serve-client",
        "--rm",
        "-i",
        "--restart=Never",
        "--image=curlimages/curl:8.10.1",
        "--",
        "-s",
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data",
        body,
        status["endpoints"]["v1"],
    )
    predictions = json.loads(answer[answer.index("{") :])["predictions"]
    assert sum(int(max(range(10), key=p.__getitem__)) == t for p, t in zip(predictions, y[:20], strict=True)) >= 17

    kubectl("scale", "modelservice/e2e-serve", "--replicas=2")
    config = yaml.safe_load(
        json.loads(kubectl("get", "rayservice", "e2e-serve", "-o", "json"))["spec"]["serveConfigV2"]
    )
    deadline = time.monotonic() + 60
    while config["applications"][0]["deployments"][0].get("num_replicas") != 2 and time.monotonic() < deadline:
        time.sleep(2)
        raw = json.loads(kubectl("get", "rayservice", "e2e-serve", "-o", "json"))["spec"]["serveConfigV2"]
        config = yaml.safe_load(raw)
    assert config["applications"][0]["deployments"][0]["num_replicas"] == 2
