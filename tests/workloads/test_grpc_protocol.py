"""The OIP gRPC request parser on its own (no Ray): the same rows as REST from raw or typed contents, and REST's
refusals with REST's messages."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from tritonclient.grpc import service_pb2 as pb

from trainserve_workloads.serve.grpc_protocol import check_size, infer_response, parse_infer, status_code
from trainserve_workloads.serve.protocol import ProtocolError, TensorSpec, parse_v2

FEATURES = TensorSpec("features", "FP32", [-1, 64])
OUTPUTS = [TensorSpec("predictions", "FP32", [-1, 10])]
ROWS = np.arange(128, dtype=np.float32).reshape(2, 64) / 7


def request(datatype: str = "FP32", shape: tuple[int, ...] = (2, 64), **fields: Any) -> Any:
    message = pb.ModelInferRequest(model_name="digits", id=fields.pop("id", ""))
    tensor = message.inputs.add(name=fields.pop("name", "features"), datatype=datatype, shape=list(shape))
    for field, values in fields.items():
        if field == "raw":
            message.raw_input_contents.append(values)
        elif field == "outputs":
            for name in values:
                message.outputs.add(name=name)
        else:
            getattr(tensor.contents, field).extend(values)
    return message


def rest_refusal(datatype: str, shape: list[int], data: list[float]) -> str:
    body = {"inputs": [{"name": "features", "datatype": datatype, "shape": shape, "data": data}]}
    with pytest.raises(ProtocolError) as caught:
        parse_v2(orjson.dumps(body), FEATURES, OUTPUTS)
    return caught.value.message


def refusal(message: Any) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_infer(message, FEATURES, OUTPUTS)
    return caught.value


def test_raw_and_typed_contents_give_the_rows_rest_gives() -> None:
    rest = parse_v2(
        orjson.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 64], "data": ROWS.tolist()}]}),
        FEATURES,
        OUTPUTS,
    ).rows
    raw = parse_infer(request(raw=ROWS.astype("<f4").tobytes(), id="r1"), FEATURES, OUTPUTS)
    typed = parse_infer(request(fp32_contents=ROWS.ravel().tolist(), outputs=["predictions"]), FEATURES, OUTPUTS)
    whole = np.arange(128).reshape(2, 64)
    ints = parse_infer(request("INT64", int64_contents=whole.ravel().tolist()), FEATURES, OUTPUTS)
    np.testing.assert_array_equal(raw.rows, rest)
    np.testing.assert_array_equal(typed.rows, rest)
    np.testing.assert_array_equal(ints.rows, whole.astype(np.float32))
    assert (raw.request_id, raw.requested_outputs, typed.request_id, typed.requested_outputs) == (
        "r1",
        None,
        None,
        ["predictions"],
    )


def test_shape_and_datatype_refusals_are_rests() -> None:
    bad_shape = refusal(request(shape=(1, 10), fp32_contents=[0.0] * 10))
    assert (bad_shape.status, bad_shape.message) == (400, rest_refusal("FP32", [1, 10], [0.0] * 10))
    bad_type = refusal(request("BYTES", bytes_contents=[b"x"] * 128))
    assert bad_type.message == rest_refusal("BYTES", [2, 64], [0.0] * 128)
    bad_name = refusal(request(name="pixels", fp32_contents=[0.0] * 128))
    assert bad_name.message == "unknown input 'pixels': this model's input is 'features'"
    assert (
        "unknown output(s) ['probabilities']" in refusal(request(raw=ROWS.tobytes(), outputs=["probabilities"])).message
    )
    assert status_code(bad_shape.status).name == "INVALID_ARGUMENT"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (request(raw=b"\0" * 12), "shape [2, 64] of FP32 takes 512 bytes; raw_input_contents has 12"),
        (request(fp32_contents=[1.0] * 3), "shape [2, 64] needs 128 values; contents.fp32_contents has 3"),
        (
            request(int_contents=[1] * 128),
            "datatype FP32 takes its values in contents.fp32_contents or raw_input_contents; got int_contents",
        ),
        (request(), "datatype FP32 takes its values in contents.fp32_contents or raw_input_contents"),
        (
            request("FP16", fp32_contents=[1.0] * 128),
            "FP16 values have no typed contents field: send them in raw_input_contents",
        ),
        (
            request(raw=ROWS.tobytes(), fp32_contents=[1.0] * 128),
            "the input has both contents and raw_input_contents: send its values one way",
        ),
        (request(fp32_contents=[float("nan")] * 128), "data contains NaN or infinite values"),
    ],
)
def test_contents_that_do_not_fit_are_refused_with_what_to_send(message: Any, expected: str) -> None:
    refused = refusal(message)
    assert (refused.status, refused.message) == (400, expected)


def test_an_unsupported_parameter_is_refused_as_over_rest() -> None:
    message = request(raw=ROWS.tobytes())
    message.inputs[0].parameters["shared_memory_region"].string_param = "region"
    assert refusal(message).message == (
        "input 'features': parameter shared_memory_region is not supported here; send the tensor in the request body"
    )


def test_the_answer_carries_raw_little_endian_output_and_the_version() -> None:
    predictions = np.linspace(0, 1, 20, dtype=np.float32).reshape(2, 10)
    answer = infer_response("digits", 3, "r9", OUTPUTS[0], predictions)
    assert (answer.model_name, answer.model_version, answer.id) == ("digits", "3", "r9")
    assert (answer.outputs[0].name, answer.outputs[0].datatype, list(answer.outputs[0].shape)) == (
        "predictions",
        "FP32",
        [2, 10],
    )
    np.testing.assert_array_equal(np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(2, 10), predictions)


def test_a_message_over_the_body_limit_is_refused_as_a_body_over_rest_is() -> None:
    message = request(raw=ROWS.tobytes())
    size = message.ByteSize()
    check_size(message, size)  # at the limit: taken
    with pytest.raises(ProtocolError) as caught:
        check_size(message, size - 1)
    assert caught.value.status == 413 and status_code(413).name == "RESOURCE_EXHAUSTED"
    assert caught.value.message == f"request message of {size} bytes exceeds the limit of {size - 1}"
