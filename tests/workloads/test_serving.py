"""The serving application on a real local Ray Serve, over real HTTP: protocols, batching, canary, auth."""

from __future__ import annotations

import http.client
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.workloads.serving_fixtures import publish_digits_model
from tests.workloads.strategies import BODIES
from trainserve.api.serving import AUTH_TOKEN_ENV, CanaryTarget, ModelTarget, ServeAppArgs
from trainserve_workloads.lifecycle import free_port

pytestmark = pytest.mark.slow
TOKEN = "s3cret-token"


class Client:
    """A keep-alive HTTP client (one connection per thread)."""

    def __init__(self, port: int):
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], Any]:
        for attempt in range(2):
            try:
                self.connection.request(method, path, body=body, headers=headers or {})
                response = self.connection.getresponse()
                raw = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt:
                    raise
        payload = json.loads(raw) if raw else None
        return response.status, {k.lower(): v for k, v in response.getheaders()}, payload

    def post(self, path: str, payload: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        return self.request(
            "POST", path, json.dumps(payload).encode(), {"content-type": "application/json"} | (headers or {})
        )


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output = tmp_path_factory.mktemp("served") / "digits"
    first = publish_digits_model(output, epochs=8, seed=1, hidden=[64])
    second = publish_digits_model(output, epochs=4, seed=2, hidden=[32])
    shuffled = publish_digits_model(output, epochs=2, seed=3, hidden=[16], shuffled_labels=True)
    return {"output": output, "v1": first, "v2": second, "shuffled": shuffled}


def base_args(models: dict[str, Any]) -> ServeAppArgs:
    return ServeAppArgs.model_validate(
        {
            "modelName": "digits",
            "primary": {"uri": models["v1"].uri, "version": 1},
            "batching": {"maxBatchSize": 32, "batchWaitTimeoutMs": 0},
            "resources": {"cpusPerReplica": 0.5, "memoryPerReplica": "1Gi"},
        }
    )


@pytest.fixture(scope="module")
def service(models: dict[str, Any]) -> Iterator[Any]:
    from trainserve_workloads.local_serve import start

    os.environ[AUTH_TOKEN_ENV] = TOKEN  # present in the Ray processes; used only once auth is switched on
    running = start(base_args(models), port=free_port())
    running.port = int(running.url.rsplit(":", 1)[1])  # type: ignore[attr-defined]
    yield running
    running.stop()


@pytest.fixture
def client(service: Any) -> Client:
    return Client(service.port)


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype("float32"), y


def in_process(uri: str, rows: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    serve = tf.saved_model.load(uri).signatures["serving_default"]
    return serve(features=tf.constant(rows))["predictions"].numpy()


def v2_body(rows: np.ndarray, request_id: str = "req-1") -> dict[str, Any]:
    return {
        "id": request_id,
        "inputs": [{"name": "features", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}],
    }


def test_v1_and_v2_answer_what_the_model_computes_in_process(client: Client, models: dict[str, Any]) -> None:
    x, y = digits()
    rows = x[:40]
    expected = in_process(models["v1"].uri, rows)
    status, headers, body = client.post("/v1/models/digits:predict", {"instances": rows.tolist()})
    assert status == 200 and headers["x-model-version"] == "1"
    np.testing.assert_allclose(body["predictions"], expected, rtol=1e-5, atol=1e-6)
    status, _, body = client.post("/v1/models/digits:predict", {"inputs": rows[:3].tolist()})
    assert status == 200 and len(body["predictions"]) == 3

    status, _, body = client.post("/v2/models/digits/infer", v2_body(rows))
    assert status == 200
    assert body["model_name"] == "digits" and body["model_version"] == "1" and body["id"] == "req-1"
    (output,) = body["outputs"]
    assert output["name"] == "predictions" and output["datatype"] == "FP32" and output["shape"] == [40, 10]
    np.testing.assert_allclose(np.reshape(output["data"], (40, 10)), expected, rtol=1e-5, atol=1e-6)
    assert (expected.argmax(axis=1) == y[:40]).mean() > 0.9

    nested = {
        "inputs": [{"name": "features", "shape": [2, 64], "datatype": "INT64", "data": x[:2].astype(int).tolist()}]
    }
    status, _, body = client.post("/v2/models/digits/infer", nested)  # nested data and integer types are allowed
    assert status == 200 and "id" not in body


def test_a_standard_oip_client_works_unchanged(service: Any, models: dict[str, Any]) -> None:
    import tritonclient.http as triton

    x, _ = digits()
    oip = triton.InferenceServerClient(f"127.0.0.1:{service.port}")
    assert oip.is_server_live() and oip.is_server_ready() and oip.is_model_ready("digits")
    metadata = oip.get_model_metadata("digits")
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 64]}]
    assert metadata["outputs"] == [{"name": "predictions", "datatype": "FP32", "shape": [-1, 10]}]
    tensor = triton.InferInput("features", [3, 64], "FP32")
    tensor.set_data_from_numpy(x[:3], binary_data=False)
    result = oip.infer("digits", [tensor], outputs=[triton.InferRequestedOutput("predictions", binary_data=False)])
    np.testing.assert_allclose(
        result.as_numpy("predictions"), in_process(models["v1"].uri, x[:3]), rtol=1e-5, atol=1e-6
    )


def test_health_metadata_and_unknown_models(client: Client) -> None:
    assert client.request("GET", "/v2/health/live")[0] == 200
    assert client.request("GET", "/v2/health/ready")[0] == 200
    assert client.request("GET", "/v1/models/digits")[2] == {"name": "digits", "ready": True}
    status, _, body = client.request("GET", "/v2/models/digits")
    assert status == 200 and body["platform"] == "tensorflow_savedmodel" and body["versions"] == ["1"]
    status, _, body = client.post("/v2/models/cats/infer", {})
    assert status == 404 and "digits" in body["error"]
    assert client.post("/v1/models/cats:predict", {})[0] == 404
    assert client.request("GET", "/v2/models/digits/infer")[0] == 405
    assert client.request("GET", "/nothing/here")[0] == 404


def test_concurrent_requests_are_batched(client: Client, service: Any) -> None:
    x, _ = digits()
    bodies = [json.dumps({"instances": x[i : i + 2].tolist()}).encode() for i in range(0, 1200, 2)]

    def worker(chunk: list[bytes]) -> list[int]:
        local = Client(service.port)
        return [
            local.request("POST", "/v1/models/digits:predict", b, {"content-type": "application/json"})[0]
            for b in chunk
        ]

    with ThreadPoolExecutor(max_workers=24) as pool:
        codes = [c for result in pool.map(worker, [bodies[i::24] for i in range(24)]) for c in result]
    assert codes == [200] * len(bodies)
    deadline = time.monotonic() + 10
    while True:
        stats = client.request("GET", "/v2/models/digits/stats")[2]
        counts = stats["batchSizes"]["counts"]
        pushed = stats["versions"].get("1", {}).get("requests", 0)
        if (sum(counts[1:]) > 0 and pushed >= len(bodies)) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sum(counts[1:]) > 0, f"no model call ever combined two requests: {stats['batchSizes']}"
    assert stats["versions"]["1"]["requests"] >= len(bodies)


def test_oversize_bodies_get_413(client: Client) -> None:
    status, _, body = client.request("POST", "/v1/models/digits:predict", b"[" + b"0," * 5_000_000 + b"0]")
    assert status == 413 and "limit" in body["error"]


def test_malformed_bodies_always_get_a_4xx_json_error(service: Any) -> None:
    client = Client(service.port)
    seen: Counter[int] = Counter()

    @settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=BODIES, path=st.sampled_from(["/v1/models/digits:predict", "/v2/models/digits/infer"]))
    def check(body: bytes, path: str) -> None:
        status, _, payload = client.request("POST", path, body, {"content-type": "application/json"})
        seen[status] += 1
        if status == 200:
            return  # hypothesis can stumble on a valid request; that is fine
        assert 400 <= status < 500, (status, body[:200], payload)
        assert isinstance(payload, dict) and isinstance(payload.get("error"), str) and payload["error"]

    check()
    assert sum(seen[s] for s in seen if 400 <= s < 500) >= 1000, seen
    x, _ = digits()
    assert client.post("/v1/models/digits:predict", {"instances": x[:1].tolist()})[0] == 200  # the replica is fine


def test_canary_split_changes_without_restarting_replicas(client: Client, service: Any, models: dict[str, Any]) -> None:
    x, _ = digits()
    request = json.dumps({"instances": x[:1].tolist()}).encode()

    def answer_versions(count: int) -> tuple[Counter[str], set[str]]:
        versions: Counter[str] = Counter()
        replicas = set()
        for _ in range(count):
            status, headers, _ = client.request(
                "POST", "/v1/models/digits:predict", request, {"content-type": "application/json"}
            )
            assert status == 200
            versions[headers["x-model-version"]] += 1
            replicas.add(headers["x-trainserve-replica"])
        return versions, replicas

    _, replicas_before = answer_versions(5)
    args = base_args(models)
    args.canary = CanaryTarget(uri=models["v2"].uri, version=2, traffic_percent=20)
    service.update(args)
    versions, replicas = answer_versions(1000)
    assert replicas == replicas_before, "adding a canary restarted the replica"
    assert 150 <= versions["2"] <= 250 and versions["1"] + versions["2"] == 1000, versions

    args.canary.traffic_percent = 60
    service.update(args)
    versions, replicas = answer_versions(500)
    assert replicas == replicas_before, "changing the split restarted the replica"
    assert 250 <= versions["2"] <= 350, versions

    status, _headers, body = client.post("/v2/models/digits/versions/2/infer", v2_body(x[:1]))  # pinned version
    assert status == 200 and body["model_version"] == "2"
    np.testing.assert_allclose(
        np.reshape(body["outputs"][0]["data"], (1, 10)), in_process(models["v2"].uri, x[:1]), rtol=1e-5, atol=1e-6
    )
    assert client.request("GET", "/v2/models/digits")[2]["versions"] == ["1", "2"]
    time.sleep(1.5)
    stats = client.request("GET", "/v2/models/digits/stats")[2]["versions"]
    assert stats["2"]["requests"] >= 400 and stats["2"]["errors"] == 0 and stats["2"]["p95Ms"] is not None

    # Promotion, as the operator will do it: the canary becomes the primary, in place.
    service.update(
        ServeAppArgs.model_validate(
            base_args(models).model_dump() | {"primary": ModelTarget(uri=models["v2"].uri, version=2)}
        )
    )
    versions, replicas = answer_versions(50)
    assert versions == Counter({"2": 50}) and replicas == replicas_before
    service.update(base_args(models))


def test_the_runtime_switches_in_place_and_both_answer_as_the_model_in_process(
    client: Client, service: Any, models: dict[str, Any]
) -> None:
    x, _ = digits()
    rows = x[:5]
    expected = in_process(models["v1"].uri, rows)

    def answer() -> tuple[np.ndarray, str, str, dict[str, Any]]:
        status, headers, body = client.post("/v1/models/digits:predict", {"instances": rows.tolist()})
        assert status == 200
        time.sleep(1.5)  # replicas push their figures and roles once a second
        primary = client.request("GET", "/v2/models/digits/stats")[2]["roles"]["primary"]
        predictions = np.asarray(body["predictions"], dtype=np.float32)  # JSON carries the float32s exactly
        return predictions, primary["callPath"], headers["x-trainserve-replica"], primary["lite"]

    predictions, call_path, replica, lite = answer()
    assert call_path == "tensorflow lite"  # the default, `runtime: auto`, on a CPU: float32 round-off apart
    assert lite["state"] == "switched" and lite["seconds"] > 0 and "faster" in lite["reason"]
    np.testing.assert_allclose(predictions, expected, rtol=1e-5, atol=1e-6)
    service.update(ServeAppArgs.model_validate(base_args(models).model_dump() | {"runtime": "tensorflow"}))
    try:
        predictions, call_path, same_replica, lite = answer()
        assert call_path == "single-threaded executor" and same_replica == replica
        assert lite["state"] == "off"
        np.testing.assert_array_equal(predictions, expected)  # the SavedModel itself: bit for bit
    finally:
        service.update(base_args(models))


def test_bearer_token_guards_inference_but_not_health(client: Client, service: Any, models: dict[str, Any]) -> None:
    x, _ = digits()
    args = base_args(models)
    args.auth_token_env = AUTH_TOKEN_ENV
    service.update(args)
    try:
        body = {"instances": x[:1].tolist()}
        status, _, payload = client.post("/v1/models/digits:predict", body)
        assert status == 401 and "Bearer" in payload["error"]
        assert client.post("/v1/models/digits:predict", body, {"authorization": "Bearer wrong"})[0] == 401
        assert client.post("/v1/models/digits:predict", body, {"authorization": f"Bearer {TOKEN}"})[0] == 200
        assert client.post("/v2/models/digits/infer", v2_body(x[:1]), {"authorization": f"Bearer {TOKEN}"})[0] == 200
        assert client.post("/v2/models/digits/infer", v2_body(x[:1]))[0] == 401
        assert client.request("GET", "/v2/health/ready")[0] == 200
        assert client.request("GET", "/v2/models/digits/ready")[0] == 200
    finally:
        service.update(base_args(models))


def test_local_canary_is_promoted_step_by_step_on_real_traffic(
    client: Client, service: Any, models: dict[str, Any]
) -> None:
    """The operator's promotion logic, on the real application's figures, with real traffic."""
    from trainserve.api.modelservice import ModelService
    from trainserve.api.serving import serve_args
    from trainserve_workloads.local_canary import LocalPromoter

    x, _ = digits()
    spec = base_args(models).model_dump(mode="json", by_alias=True, include={"modelName", "batching", "resources"})
    spec |= {
        "model": {"uri": models["v1"].uri},
        "canary": {
            "model": {"uri": models["v2"].uri},
            "trafficPercent": 30,
            "autoPromote": {"stepPercent": 40, "intervalSeconds": 5, "minRequests": 40, "maxErrorRate": 0.01},
        },
    }
    document = {"apiVersion": "trainserve.io/v1alpha1", "kind": "ModelService", "metadata": {"name": "digits"}}
    ms = ModelService.model_validate(document | {"spec": spec})
    args = serve_args(ms, ModelTarget(uri=models["v1"].uri, version=1), ModelTarget(uri=models["v2"].uri, version=2))
    service.update(args)
    promoter = LocalPromoter(ms, service, args)
    request = {"instances": x[:2].tolist()}
    shares, reasons = [], []
    try:
        deadline = time.monotonic() + 90
        while "promoted" not in promoter.body.get("status", {}) and time.monotonic() < deadline:
            events, wait = promoter.tick()
            reasons += [e.reason for e in events]
            shares.append(promoter.applied.canary.traffic_percent if promoter.applied.canary else 100)
            until = time.monotonic() + min(wait or 1.0, 1.0)
            while time.monotonic() < until:  # real traffic between looks
                assert client.post("/v1/models/digits:predict", request)[0] == 200
        assert reasons.count("CanaryStep") == 1 and "CanaryPromoted" in reasons, reasons
        assert shares[0] == 30 and 70 in shares, shares
        versions = Counter(client.post("/v1/models/digits:predict", request)[1]["x-model-version"] for _ in range(30))
        assert versions == Counter({"2": 30})
    finally:
        service.update(base_args(models))


def register_in_mlflow(server: str, name: str, folders: list[str]) -> None:
    """Each model folder logged as a run's `model` artifact and registered as the next version of ``name``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server)
    experiment = client.create_experiment(f"{name}-runs")
    client.create_registered_model(name)
    for folder in folders:
        run = client.create_run(experiment)
        client.log_artifacts(run.info.run_id, folder, "model")
        client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)


def test_moving_a_registry_alias_rolls_the_local_service_to_that_version(
    client: Client, service: Any, models: dict[str, Any], mlflow_server: str, tmp_path: Path
) -> None:
    """`trainserve local serve` on `models:/NAME@ALIAS`: the replicas download the version through MLflow, and the
    alias moved in MLflow is followed in place, as the operator follows it on a cluster."""
    from mlflow import MlflowClient

    from trainserve.api.modelservice import ModelService
    from trainserve_workloads.local_serve import RegistryFollower, local_args

    register_in_mlflow(mlflow_server, "digits-local", [models["v1"].uri, models["v2"].uri])
    registry = MlflowClient(tracking_uri=mlflow_server)
    registry.set_registered_model_alias("digits-local", "champion", "1")
    spec = base_args(models).model_dump(mode="json", by_alias=True, include={"modelName", "batching", "resources"})
    model = {
        "uri": "models:/digits-local@champion",
        "registry": {"trackingUri": mlflow_server, "resolveIntervalSeconds": 5},
    }
    document = {"apiVersion": "trainserve.io/v1alpha1", "kind": "ModelService", "metadata": {"name": "digits"}}
    ms = ModelService.model_validate(document | {"spec": spec | {"model": model}})
    x, _ = digits()
    request = {"instances": x[:3].tolist()}
    try:
        args = local_args(ms, tmp_path)
        assert args.primary.uri.startswith("mlflow-artifacts:/") and args.primary.version == 1
        service.update(args)
        status, headers, answer = client.post("/v1/models/digits:predict", request)
        assert status == 200 and headers["x-model-version"] == "1"
        np.testing.assert_allclose(answer["predictions"], in_process(models["v1"].uri, x[:3]), rtol=1e-4, atol=1e-5)

        registry.set_registered_model_alias("digits-local", "champion", "2")
        follower = RegistryFollower(ms, tmp_path, service, args)
        follower.next_look = time.monotonic()  # look now rather than in 5 s
        assert follower.tick() == ["Normal: ModelChanged: now serving version 2 (was 1)"]
        versions = Counter(client.post("/v1/models/digits:predict", request)[1]["x-model-version"] for _ in range(10))
        assert versions == Counter({"2": 10})
        assert follower.tick() == [], "nothing moved, nothing done"
    finally:
        service.update(base_args(models))


def test_local_rollout_canary_tries_a_new_version_of_the_local_job(
    client: Client, service: Any, models: dict[str, Any], tmp_path: Any
) -> None:
    """`fromTrainingJob.rollout: canary` locally: a new version from `trainserve local train` earns its traffic."""
    from tests.support.documents import example
    from trainserve.api.modelservice import ModelService
    from trainserve.api.trainingjob import TrainingJob, TrainingJobStatus
    from trainserve.localstate import save_job
    from trainserve_workloads.local_canary import LocalPromoter
    from trainserve_workloads.local_serve import local_args

    def trained(model: Any) -> None:
        job = TrainingJob.model_validate(example("digits-trainingjob"))
        job.status = TrainingJobStatus(phase="Succeeded", model=model)
        save_job(tmp_path, job)

    x, _ = digits()
    spec = base_args(models).model_dump(mode="json", by_alias=True, include={"modelName", "batching", "resources"})
    spec |= {
        "model": {"fromTrainingJob": {"name": "digits", "rollout": "canary"}},
        "canary": {
            "trafficPercent": 30,
            "autoPromote": {"stepPercent": 70, "intervalSeconds": 5, "minRequests": 40, "maxErrorRate": 0.01},
        },
    }
    document = {"apiVersion": "trainserve.io/v1alpha1", "kind": "ModelService", "metadata": {"name": "digits"}}
    ms = ModelService.model_validate(document | {"spec": spec})
    trained(models["v1"])
    args = local_args(ms, tmp_path)
    assert args.primary.version == 1 and args.canary is None
    service.update(args)
    promoter = LocalPromoter(ms, service, args, tmp_path)
    request = {"instances": x[:2].tolist()}
    try:
        promoter.tick()
        assert promoter.applied.canary is None
        trained(models["v2"])  # a re-run of `trainserve local train` wrote version 2
        reasons: list[str] = []
        deadline = time.monotonic() + 90
        while "promoted" not in promoter.body.get("status", {}) and time.monotonic() < deadline:
            events, wait = promoter.tick()
            reasons += [e.reason for e in events]
            until = time.monotonic() + min(wait or 1.0, 1.0)
            while time.monotonic() < until:  # real traffic between looks
                assert client.post("/v1/models/digits:predict", request)[0] == 200
        assert reasons[0] == "CanaryStarted" and "CanaryPromoted" in reasons, reasons
        versions = Counter(client.post("/v1/models/digits:predict", request)[1]["x-model-version"] for _ in range(30))
        assert versions == Counter({"2": 30})
    finally:
        service.update(base_args(models))


def shadow_service(models: dict[str, Any], candidate: str, version: int) -> tuple[Any, ServeAppArgs]:
    """A ModelService with ``candidate`` scored in the shadow of version 1, promoted straight on agreement."""
    from trainserve.api.modelservice import ModelService
    from trainserve.api.serving import serve_args

    spec = base_args(models).model_dump(mode="json", by_alias=True, include={"modelName", "batching", "resources"})
    policy = {"intervalSeconds": 5, "minRequests": 40, "maxErrorRate": 0.01, "minAgreement": 0.8}
    spec |= {
        "model": {"uri": models["v1"].uri},
        "canary": {"model": {"uri": models[candidate].uri}, "mode": "shadow", "autoPromote": policy},
    }
    document = {"apiVersion": "trainserve.io/v1alpha1", "kind": "ModelService", "metadata": {"name": "digits"}}
    ms = ModelService.model_validate(document | {"spec": spec})
    primary = ModelTarget(uri=models["v1"].uri, version=1)
    return ms, serve_args(ms, primary, ModelTarget(uri=models[candidate].uri, version=version))


def test_local_shadow_candidates_are_judged_on_agreement_while_clients_get_the_primary_only(
    client: Client, service: Any, models: dict[str, Any]
) -> None:
    """Shadow mode on the real application with real traffic: a candidate trained on shuffled labels is rolled back,
    a good one promoted; until then every answer is the primary's."""
    from trainserve_workloads.local_canary import LocalPromoter

    x, _ = digits()
    rows = x[:240]
    expected = in_process(models["v1"].uri, rows)
    chunks = [(rows[i : i + 4], expected[i : i + 4]) for i in range(0, len(rows), 4)]

    def run(promoter: LocalPromoter) -> tuple[list[str], dict[str, Any]]:
        reasons: list[str] = []
        sent = 0
        deadline = time.monotonic() + 40  # a window of 5 s, after the look that starts it
        while time.monotonic() < deadline:
            events, wait = promoter.tick()
            reasons += [e.reason for e in events]
            if {"CanaryPromoted", "CanaryRolledBack"} & set(reasons):
                break
            until = time.monotonic() + min(wait or 1.0, 1.0)
            while time.monotonic() < until:  # real traffic between looks: only the primary answers
                chunk, answer = chunks[sent % len(chunks)]
                status, headers, body = client.post("/v1/models/digits:predict", {"instances": chunk.tolist()})
                assert status == 200 and headers["x-model-version"] == "1" and body["model_version"] == "1"
                np.testing.assert_allclose(body["predictions"], answer, rtol=1e-4, atol=1e-5)
                sent += 1
        return reasons, promoter.body.get("status", {})

    ms, args = shadow_service(models, "shuffled", 3)
    try:
        service.update(args)
        reasons, status = run(LocalPromoter(ms, service, args))
        assert "CanaryRolledBack" in reasons and "promoted" not in status, reasons
        shadow = status["canary"]["shadow"]
        assert shadow["scored"] >= 40 and shadow["agreement"] < 0.5 and shadow["p95Ms"] is not None, shadow
        figures = client.request("GET", "/v2/models/digits/stats")[2]["versions"]["3"]
        assert figures["requests"] == 0 and figures["shadow"]["requests"] >= 40, figures
        time.sleep(1.5)  # a rolled-back candidate scores no more
        scored = client.request("GET", "/v2/models/digits/stats")[2]["versions"]["3"]["shadow"]["requests"]
        for chunk, _ in chunks[:10]:
            assert client.post("/v1/models/digits:predict", {"instances": chunk.tolist()})[0] == 200
        time.sleep(1.5)
        assert client.request("GET", "/v2/models/digits/stats")[2]["versions"]["3"]["shadow"]["requests"] == scored

        ms, args = shadow_service(models, "v2", 2)
        service.update(args)
        reasons, status = run(LocalPromoter(ms, service, args))
        assert "CanaryStarted" in reasons and "CanaryPromoted" in reasons, reasons
        assert status["promoted"]["version"] == 2
        promotion = next(c for c in status["conditions"] if c["type"] == "Canary")["message"]
        assert "promoted version 2 over version 1 after its shadow evaluation" in promotion, promotion
        versions = Counter(
            client.post("/v1/models/digits:predict", {"instances": x[:2].tolist()})[1]["x-model-version"]
            for _ in range(20)
        )
        assert versions == Counter({"2": 20})
    finally:
        service.update(base_args(models))
