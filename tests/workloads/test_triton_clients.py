"""`tritonclient.http` as its users call it, against the serving application on a real local Ray Serve:
binary tensor data by default, JSON on request, answers equal to the model's own (in-process) predictions."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.workloads.serving_fixtures import publish_digits_model
from trainserve.api.serving import ServeAppArgs
from trainserve_workloads.lifecycle import free_port

pytestmark = pytest.mark.slow
ROWS_PER_CALL = 5


@pytest.fixture(scope="module")
def model_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return publish_digits_model(tmp_path_factory.mktemp("served") / "digits", epochs=3, seed=3, hidden=[32]).uri


@pytest.fixture(scope="module")
def port(model_uri: str) -> Iterator[int]:
    from trainserve_workloads.local_serve import start

    args = ServeAppArgs.model_validate(
        {
            "modelName": "digits",
            "primary": {"uri": model_uri, "version": 1},
            "batching": {"maxBatchSize": 16, "batchWaitTimeoutMs": 2},
            "resources": {"cpusPerReplica": 0.5, "memoryPerReplica": "1Gi"},
        }
    )
    running = start(args, port=free_port())
    yield int(running.url.rsplit(":", 1)[1])
    running.stop()


@pytest.fixture
def triton(port: int) -> Any:
    import tritonclient.http

    return tritonclient.http.InferenceServerClient(f"127.0.0.1:{port}", concurrency=8)


def digit_rows(count: int, start: int = 0) -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().data[start : start + count].astype(np.float32)


def model_answers(uri: str, rows: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    serve = tf.saved_model.load(uri).signatures["serving_default"]
    return serve(features=tf.constant(rows, dtype=tf.float32))["predictions"].numpy()


def assert_model_answer(answer: np.ndarray, expected: np.ndarray) -> None:
    # runtime auto serves the digits mlp on TensorFlow Lite: float32 round-off of the SavedModel's answer
    assert answer.dtype == np.float32 and answer.shape == expected.shape
    np.testing.assert_allclose(answer, expected, rtol=1e-5, atol=1e-6)


def features(rows: np.ndarray, *, binary: bool = True, datatype: str = "FP32") -> Any:
    import tritonclient.http

    tensor = tritonclient.http.InferInput("features", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows.astype(tritonclient.utils.triton_to_np_dtype(datatype)), binary_data=binary)
    return tensor


def output_parameters(result: Any) -> dict[str, Any]:
    return dict(result.get_output("predictions").get("parameters") or {})


def test_the_default_call_sends_and_gets_binary_tensors(triton: Any, model_uri: str) -> None:
    rows = digit_rows(ROWS_PER_CALL)
    result = triton.infer("digits", [features(rows)])  # no outputs named: tritonclient asks for binary outputs
    assert output_parameters(result) == {"binary_data_size": rows.shape[0] * 10 * 4}
    assert_model_answer(result.as_numpy("predictions"), model_answers(model_uri, rows))
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]


@pytest.mark.parametrize(
    ("binary_input", "binary_output"),
    [(False, True), (True, False), (False, False)],
    ids=["json-in", "json-out", "json"],
)
def test_json_and_binary_mix_as_asked(triton: Any, model_uri: str, binary_input: bool, binary_output: bool) -> None:
    import tritonclient.http

    rows = digit_rows(ROWS_PER_CALL, start=20)
    requested = [tritonclient.http.InferRequestedOutput("predictions", binary_data=binary_output)]
    result = triton.infer("digits", [features(rows, binary=binary_input)], outputs=requested, model_version="1")
    assert ("binary_data_size" in output_parameters(result)) is binary_output
    assert result.get_response()["model_version"] == "1"
    assert_model_answer(result.as_numpy("predictions"), model_answers(model_uri, rows))


@pytest.mark.parametrize("datatype", ["FP64", "INT64", "UINT8"])
def test_binary_inputs_of_other_numeric_types(triton: Any, model_uri: str, datatype: str) -> None:
    rows = digit_rows(ROWS_PER_CALL, start=40)  # whole numbers 0..16: every type holds them exactly
    result = triton.infer("digits", [features(rows, datatype=datatype)])
    assert_model_answer(result.as_numpy("predictions"), model_answers(model_uri, rows))


@pytest.mark.parametrize("compression", ["gzip", "deflate"])
def test_compressed_requests(triton: Any, model_uri: str, compression: str) -> None:
    rows = digit_rows(ROWS_PER_CALL, start=80)
    result = triton.infer("digits", [features(rows)], request_compression_algorithm=compression)
    assert_model_answer(result.as_numpy("predictions"), model_answers(model_uri, rows))


def test_concurrent_binary_calls_are_batched_and_each_gets_its_own_answer(triton: Any, model_uri: str) -> None:
    rows = digit_rows(400)
    calls = [triton.async_infer("digits", [features(rows[i : i + 2])]) for i in range(0, len(rows), 2)]
    answers = np.concatenate([call.get_result().as_numpy("predictions") for call in calls])
    assert_model_answer(answers, model_answers(model_uri, rows))


def test_v1_and_v2_agree(port: int, triton: Any) -> None:
    rows = digit_rows(ROWS_PER_CALL, start=60)
    v2 = triton.infer("digits", [features(rows)]).as_numpy("predictions")
    status, v1 = post(port, "/v1/models/digits:predict", json.dumps({"instances": rows.tolist()}).encode())
    assert status == 200
    np.testing.assert_allclose(np.asarray(v1["predictions"], dtype=np.float32), v2, rtol=1e-6, atol=1e-7)


def test_lying_sizes_get_a_400_that_reaches_the_client(port: int, triton: Any) -> None:
    import tritonclient.utils

    header = json.dumps(
        {
            "inputs": [
                {"name": "features", "shape": [1, 64], "datatype": "FP32", "parameters": {"binary_data_size": 256}}
            ]
        }
    ).encode()
    data = digit_rows(1).tobytes()
    cases = [
        (header + data[:-4], str(len(header)), "binary_data_size is 256 but 252 bytes follow"),
        (header + data, str(len(header) + 300), "but the request body has only"),
        (header + data, "twelve", "must be the JSON header's length"),
        (header + data, None, "needs the Inference-Header-Content-Length header"),
    ]
    for body, header_length, words in cases:
        status, answer = post(port, "/v2/models/digits/infer", body, header_length)
        assert status == 400 and words in answer["error"], (header_length, answer)
    with pytest.raises(tritonclient.utils.InferenceServerException, match="shape must be"):
        triton.infer("digits", [features(np.zeros((2, 8), dtype=np.float32))])


def post(port: int, path: str, body: bytes, header_length: str | None = None) -> tuple[int, Any]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Inference-Header-Content-Length": header_length} if header_length is not None else {}
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()
