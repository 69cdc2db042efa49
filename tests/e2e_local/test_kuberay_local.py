"""End to end without a cluster: the operator (`trainserve run`, its own process) writes RayJobs and RayServices
into the emulated API server, and the process-level KubeRay stand-in (tests/support/kuberay_local.py) runs them
with real Ray: real training that reports through the in-pod status channel with the job's own token, real Serve
answering HTTP, an in-place model roll under load, a failure and a retry that resumes from its checkpoint.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import numpy as np
import pytest
import tritonclient.http as triton
from sklearn.datasets import load_digits

from tests.e2e_local.conftest import World
from tests.support.documents import changed, example
from tests.support.kubesim import eventually
from trainserve.api.storage import CLUSTER_VOLUMES_DIR
from trainserve.naming import job_account_name

pytestmark = [pytest.mark.asyncio, pytest.mark.slow, pytest.mark.timeout(420)]
#: Where the pods see the claims (the stand-in bind-mounts `<workdir>/volumes/<claim>` there).
CLAIMS = CLUSTER_VOLUMES_DIR
ROWS = load_digits().data[:4].astype(np.float32)


def training_job(name: str, epochs: int, workers: int = 2) -> dict[str, Any]:
    document = changed(example("digits-trainingjob"), "metadata.name", name)
    document["spec"]["training"]["epochs"] = epochs
    document["spec"]["resources"]["workers"] = workers
    document["spec"]["output"]["uri"] = f"pvc://models/{name}"
    return document


def model_service() -> dict[str, Any]:
    document = example("digits-modelservice")
    document["spec"]["model"]["fromTrainingJob"]["minMetrics"] = {"val_accuracy": 0.5}  # a few epochs only
    return document


def status_patches(world: World, job: str) -> list[Any]:
    """The in-pod channel's patches of ``job``'s status, in order (each checked against the job's Role)."""
    return [c for c in world.api.tokens.calls if c.resource == "trainingjobs/status" and c.name == job]


async def finished(world: World, job: str, timeout: float = 180) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = world.cluster.status(job)
        assert status.get("phase") != "Failed", status
        return status if status.get("phase") == "Succeeded" else None

    result: dict[str, Any] = await eventually(done, timeout=timeout, message=f"{job} Succeeded")
    return result


def serving(world: World, name: str) -> bool:
    ready = world.cluster.service_condition(name, "Ready")
    assert ready.get("status") == "True", ready  # the last one is in the timeout's message
    return True


def predict_v1(url: str) -> tuple[int, str]:
    body = json.dumps({"instances": ROWS[:2].tolist()}).encode()
    request = urllib.request.Request(f"{url}/v1/models/digits:predict", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
            assert len(answer["predictions"]) == 2
            return response.status, str(answer["model_version"])
    except urllib.error.HTTPError as err:
        return err.code, ""
    except OSError:
        return 0, ""


class SteadyClient:
    """Sends v1 requests one after another on a thread until stopped; keeps (status, version) of each."""

    def __init__(self, url: str):
        self.url, self.answers = url, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.answers.append(predict_v1(self.url))
            time.sleep(0.02)

    def __enter__(self) -> SteadyClient:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


async def test_train_serve_and_roll_a_new_version_in_place(world: World) -> None:
    # 1. TrainingJob -> RayJob -> real training, progress through the in-pod channel with the job's token.
    await world.apply(training_job("digits", epochs=3))
    status = await finished(world, "digits")
    patches = status_patches(world, "digits")
    assert patches and all(c.allowed and c.account.name == job_account_name("digits") for c in patches)
    epochs = [c.body["status"]["progress"]["epoch"] for c in patches if "progress" in c.body["status"]]
    assert epochs == sorted(epochs) and len(set(epochs)) >= 3 and epochs[-1] == 3, epochs
    assert status["model"]["version"] == 1 and status["model"]["uri"] == "pvc://models/digits/1"
    assert (world.workdir / "volumes/models/digits/1/model.json").exists()

    # 2. ModelService fromTrainingJob -> RayService -> real answers on v1 and OIP v2.
    await world.apply(model_service())
    await eventually(lambda: serving(world, "digits"), timeout=120, message="the ModelService Ready")
    url = world.kuberay.serve_url("digits")
    assert await asyncio.to_thread(predict_v1, url) == (200, "1")
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    metadata = client.get_model_metadata("digits")
    tensor = triton.InferInput(metadata["inputs"][0]["name"], list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS)  # tritonclient's default: Triton's binary tensor extension, both ways
    output = metadata["outputs"][0]["name"]
    requested = [triton.InferRequestedOutput(output)]
    # gevent-based: called on this thread (the server is another process)
    answer = client.infer("digits", [tensor], outputs=requested)
    probabilities = answer.as_numpy(output)
    assert probabilities.shape == (4, 10) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)
    assert answer.get_response()["model_version"] == "1"
    # authOptions (token): the serving cluster's dashboard refuses a caller without the cluster's token.
    assert (
        await asyncio.to_thread(status_of, world.kuberay.started[-1].dashboard_url + "/api/serve/applications/") == 401
    )

    # 3. The job re-runs with more epochs (delete + apply; the garbage collector takes the old RayJob): version 2
    # rolls out in place while a client keeps sending requests.
    with SteadyClient(url) as steady:
        await world.cluster.delete_trainingjob("digits")
        await world.cluster.collect_garbage()
        await world.apply(training_job("digits", epochs=5, workers=1))  # what rolls is the model, however trained
        await finished(world, "digits")
        await eventually(lambda: steady.answers[-20:] == [(200, "2")] * 20, timeout=90, message="answers from v2")
    failures = [a for a in steady.answers if a[0] != 200]
    assert not failures, f"{len(failures)} of {len(steady.answers)} requests failed: {failures[:5]}"
    assert {version for _, version in steady.answers} == {"1", "2"}
    assert len(world.kuberay.started) == 3, "the model roll kept the RayService's cluster"


async def test_a_failed_attempt_reports_rays_error_and_the_retry_resumes_from_its_checkpoint(world: World) -> None:
    document = training_job("flaky", epochs=3, workers=1)
    document["spec"]["model"] = {"entrypoint": "tests.e2e_local.flaky_model:fails_once"}
    document["spec"]["training"]["hyperparameters"] = {"marker": f"{CLAIMS}/models/flaky-failed-once", "failAtStep": 50}
    document["spec"]["runPolicy"]["backoffLimit"] = 1
    await world.apply(document)

    def failure_reported() -> dict[str, Any] | None:
        failed = world.cluster.condition("flaky", "Failed")
        return failed if "injected failure at step" in failed.get("message", "") else None

    failed = await eventually(failure_reported, timeout=150, message="the first attempt's failure in a condition")
    assert failed["status"] == "False", "one retry left"
    checkpoint = world.cluster.status("flaky")["lastCheckpoint"]["epoch"]
    before = len(status_patches(world, "flaky"))
    status = await finished(world, "flaky")
    assert status["attempts"] == 2
    resumed = [c.body["status"]["progress"]["epoch"] for c in status_patches(world, "flaky")[before:]]
    assert checkpoint >= 1 and resumed and min(resumed) >= checkpoint, (checkpoint, resumed)
    card = json.loads((world.workdir / "volumes/models/flaky/1/model.json").read_text())
    assert card["resumedFromEpoch"] == checkpoint and card["epochsCompleted"] == 3
