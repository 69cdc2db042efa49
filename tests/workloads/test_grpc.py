"""The Open Inference Protocol over gRPC, called with `tritonclient.grpc` and the raw stubs as users call it, against
the serving application on a real local Ray Serve (HAProxy's gRPC frontend, direct ingress to the replica): the
same replica, models, canary split, bearer token and per-version counts as REST, with the REST parser's messages."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.workloads.serving_fixtures import publish_digits_model
from trainserve.api.serving import AUTH_TOKEN_ENV, DEFAULT_MAX_BODY_BYTES, ServeAppArgs
from trainserve_workloads.lifecycle import free_port

pytestmark = pytest.mark.slow
TOKEN = "grpc-s3cret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
ROWS = 4


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    output = tmp_path_factory.mktemp("served") / "digits"
    first = publish_digits_model(output, epochs=3, seed=1, hidden=[32])
    second = publish_digits_model(output, epochs=2, seed=2, hidden=[16])
    return {"1": first.uri, "2": second.uri}


@pytest.fixture(scope="module")
def service(models: dict[str, str]) -> Iterator[Any]:
    from trainserve_workloads.local_serve import start

    args = ServeAppArgs.model_validate(
        {
            "modelName": "digits",
            "primary": {"uri": models["1"], "version": 1},
            "canary": {"uri": models["2"], "version": 2, "trafficPercent": 50},
            "batching": {"maxBatchSize": 16, "batchWaitTimeoutMs": 1},
            "resources": {"cpusPerReplica": 0.5, "memoryPerReplica": "1Gi"},
            "authTokenEnv": AUTH_TOKEN_ENV,
            "grpcPort": free_port(),
        }
    )
    running = start(args, port=free_port(), token=TOKEN)
    yield running
    running.stop()


@pytest.fixture
def triton(service: Any) -> Any:
    import tritonclient.grpc

    return tritonclient.grpc.InferenceServerClient(service.grpc_address)


@pytest.fixture
def stub(service: Any) -> Iterator[Any]:
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    with grpc.insecure_channel(service.grpc_address) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def digit_rows(count: int, start: int = 0) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data[start : start + count].astype(np.float32)


def in_process(uri: str, rows: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    serve = tf.saved_model.load(uri).signatures["serving_default"]
    return serve(features=tf.constant(rows, dtype=tf.float32))["predictions"].numpy()


def rest(service: Any, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    host, port = service.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", path, json.dumps(body), {"content-type": "application/json", **AUTH})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def rest_infer(service: Any, rows: np.ndarray, version: str, shape: list[int] | None = None) -> tuple[int, Any]:
    tensor = {"name": "features", "shape": shape or list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
    return rest(service, f"/v2/models/digits/versions/{version}/infer", {"inputs": [tensor]})


def features(rows: np.ndarray, datatype: str = "FP32") -> Any:
    import tritonclient.grpc
    from tritonclient.utils import triton_to_np_dtype

    tensor = tritonclient.grpc.InferInput("features", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows.astype(triton_to_np_dtype(datatype)))
    return tensor


def assert_answer(answer: np.ndarray, expected: np.ndarray) -> None:
    # runtime auto serves the digits mlp on TensorFlow Lite: float32 round-off of the SavedModel's answer
    assert answer.dtype == np.float32 and answer.shape == expected.shape
    np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("version", ["1", "2"])
def test_the_default_call_answers_as_the_model_and_as_rest(
    triton: Any, service: Any, models: dict[str, str], version: str
) -> None:
    rows = digit_rows(ROWS)
    result = triton.infer("digits", [features(rows)], model_version=version, headers=AUTH, request_id="r-7")
    response = result.get_response()
    assert (response.model_version, response.id, response.model_name) == (version, "r-7", "digits")
    answer = result.as_numpy("predictions")
    assert_answer(answer, in_process(models[version], rows))
    status, body = rest_infer(service, rows, version)
    assert status == 200
    np.testing.assert_array_equal(answer, np.asarray(body["outputs"][0]["data"], np.float32).reshape(answer.shape))


@pytest.mark.parametrize("datatype", ["FP64", "INT64", "UINT8"])
def test_other_numeric_types_and_selected_outputs(triton: Any, models: dict[str, str], datatype: str) -> None:
    import tritonclient.grpc

    rows = digit_rows(ROWS, start=30)  # whole numbers 0..16: every type holds them exactly
    wanted = [tritonclient.grpc.InferRequestedOutput("predictions")]
    result = triton.infer("digits", [features(rows, datatype)], outputs=wanted, model_version="1", headers=AUTH)
    assert_answer(result.as_numpy("predictions"), in_process(models["1"], rows))


def typed_request(rows: np.ndarray, datatype: str, field: str, version: str = "1") -> Any:
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name="digits", model_version=version)
    tensor = request.inputs.add(name="features", datatype=datatype, shape=list(rows.shape))
    getattr(tensor.contents, field).extend(rows.ravel().tolist())
    return request


@pytest.mark.parametrize(("datatype", "field"), [("FP32", "fp32_contents"), ("INT32", "int_contents")])
def test_typed_contents(stub: Any, models: dict[str, str], datatype: str, field: str) -> None:
    rows = digit_rows(ROWS, start=60)
    values = rows.astype(np.int32) if datatype == "INT32" else rows
    response = stub.ModelInfer(typed_request(values, datatype, field), metadata=tuple(AUTH.items()))
    assert list(response.outputs[0].shape) == [ROWS, 10] and response.outputs[0].datatype == "FP32"
    answer = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(ROWS, 10)
    assert_answer(answer, in_process(models["1"], rows))


def refusal(call: Any) -> tuple[str, str]:
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.status(), caught.value.message()


def replica_errors_logged() -> int:
    """Lines in which Serve logged a request of this session's replicas as failed (with its traceback)."""
    import ray

    folder = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    return sum(path.read_text().count("Request failed.") for path in folder.glob("replica_*.log"))


def test_refusals_carry_grpc_codes_and_the_rest_messages(triton: Any, service: Any) -> None:
    errors_before = replica_errors_logged()
    rows = digit_rows(1)
    code, message = refusal(lambda: triton.infer("digits", [features(rows)]))
    assert (code, message) == (
        "StatusCode.UNAUTHENTICATED",
        "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
    )
    assert refusal(lambda: triton.infer("digits", [features(rows)], headers={"authorization": "Bearer no"}))[0] == (
        "StatusCode.UNAUTHENTICATED"
    )
    bad = features(rows[:, :10])
    code, message = refusal(lambda: triton.infer("digits", [bad], model_version="1", headers=AUTH))
    assert code == "StatusCode.INVALID_ARGUMENT"
    assert message == rest_infer(service, rows[:, :10], "1")[1]["error"]
    assert refusal(lambda: triton.infer("nope", [features(rows)], headers=AUTH)) == (
        "StatusCode.NOT_FOUND",
        "unknown model 'nope': this server serves 'digits'",
    )
    assert refusal(lambda: triton.infer("digits", [features(rows)], model_version="9", headers=AUTH)) == (
        "StatusCode.NOT_FOUND",
        "version 9 is not served here",
    )
    assert triton.is_server_live() and triton.is_server_ready()  # the service answers on after refusals
    assert replica_errors_logged() == errors_before  # a client's mistake is no server error, as over REST


def test_a_message_over_the_body_limit_is_refused_before_the_model(stub: Any) -> None:
    import grpc

    rows = DEFAULT_MAX_BODY_BYTES // (64 * 4) + 1  # one row more than REST's default body limit takes
    request = pb_request(np.zeros((rows, 64), np.float32))
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, metadata=tuple(AUTH.items()))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (
        caught.value.details()
        == f"request message of {request.ByteSize()} bytes exceeds the limit of {DEFAULT_MAX_BODY_BYTES}"
    )


def pb_request(rows: np.ndarray) -> Any:
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name="digits")
    request.inputs.add(name="features", datatype="FP32", shape=list(rows.shape))
    request.raw_input_contents.append(rows.tobytes())
    return request


def test_typed_contents_that_do_not_match_their_datatype_are_refused(stub: Any) -> None:
    import grpc

    request = typed_request(digit_rows(1).astype(np.int32), "FP32", "int_contents")
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, metadata=tuple(AUTH.items()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == (
        "datatype FP32 takes its values in contents.fp32_contents or raw_input_contents; got int_contents"
    )


def test_health_and_metadata(triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("digits") and triton.is_model_ready("digits", "2")
    assert refusal(lambda: triton.is_model_ready("other"))[0] == "StatusCode.NOT_FOUND"  # REST: 404
    metadata = triton.get_model_metadata("digits", headers=AUTH, as_json=True)
    assert metadata["versions"] == ["1", "2"]
    assert metadata["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "64"]}]
    assert "binary_tensor_data" in triton.get_server_metadata(headers=AUTH, as_json=True)["extensions"]


def versions_answered(service: Any) -> dict[str, int]:
    host, port = service.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", "/v2/models/digits/stats")
    stats = json.loads(connection.getresponse().read())["versions"]
    return {version: stats.get(version, {}).get("requests", 0) for version in ("1", "2")}


def test_the_canary_split_holds_over_grpc_and_each_version_counts_its_requests(triton: Any, service: Any) -> None:
    rows = digit_rows(1, start=100)
    time.sleep(1.5)  # replicas push their counts once a second
    before = versions_answered(service)
    answered = [triton.infer("digits", [features(rows)], headers=AUTH).get_response().model_version for _ in range(200)]
    time.sleep(1.5)
    after = versions_answered(service)
    assert 60 <= answered.count("2") <= 140 and answered.count("1") + answered.count("2") == 200, answered
    assert {v: after[v] - before[v] for v in after} == {v: answered.count(v) for v in after}
