"""The request parsers on their own: whatever a client sends ends in a result or a ProtocolError (no Ray)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.workloads.strategies import BODIES
from trainserve_workloads.serve.protocol import (
    HEADER_LENGTH_HEADER,
    NUMERIC_DATATYPES,
    ProtocolError,
    TensorSpec,
    parse_v1,
    parse_v2,
    v2_binary_response,
)

FEATURES = TensorSpec("features", "FP32", [-1, 64])
OUTPUTS = [TensorSpec("predictions", "FP32", [-1, 10])]


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(body=BODIES)
def test_parsers_raise_only_protocol_errors_with_json_safe_messages(body: bytes) -> None:
    for parse in (lambda: parse_v1(body, 64), lambda: parse_v2(body, FEATURES, OUTPUTS)):
        try:
            parse()
        except ProtocolError as err:
            assert 400 <= err.status < 500 and err.message
            orjson.dumps({"error": err.message})


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"inputs": [{"name": "features", "data": [], "shape": [], "datatype": []}]}', "unknown datatype"),
        (b'{"inputs": [{"name": "features", "data": [1], "shape": [1, 64], "datatype": "BYTES"}]}', "not supported"),
        (b'{"inputs": [{"name": "x", "data": [1], "shape": [1, 64], "datatype": "FP32"}]}', "'features'"),
        (
            b'{"inputs": [{"name": "features", "data": [1, 2], "shape": [1, 64], "datatype": "FP32"}]}',
            "needs 64 values",
        ),
        (b'{"inputs": [{"name": "features", "data": [1.5], "shape": [1, 1], "datatype": "INT32"}]}', "shape must be"),
        (b"NaN", "not valid JSON"),
        *[
            (
                orjson.dumps({"inputs": [{"name": "features", "data": data, "shape": [1, 64], "datatype": "FP32"}]}),
                "only numbers",
            )
            for data in ([True] * 64, ["1.5"] * 64, [None] * 64, [[1.0] * 32, [1.0] * 31 + ["x"]], [1.0] * 63 + [{}])
        ],
    ],
)
def test_v2_errors_say_what_is_wrong(body: bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_v2(body, FEATURES, OUTPUTS)
    assert words in caught.value.message and caught.value.status == 400


@pytest.mark.parametrize(
    "nesting", [lambda v: v, lambda v: [v], lambda v: [v[:32], v[32:]], lambda v: [[v[:16], v[16:]]]]
)
def test_v2_data_reads_row_major_however_it_nests(nesting: Any) -> None:
    values = np.random.default_rng(0).random(64).round(4).tolist()
    body = orjson.dumps(
        {"inputs": [{"name": "features", "data": nesting(values), "shape": [1, 64], "datatype": "FP32"}]}
    )
    parsed = parse_v2(body, FEATURES, OUTPUTS)
    assert parsed.rows.dtype == np.float32
    np.testing.assert_array_equal(parsed.rows, np.asarray([values], dtype=np.float32))


@pytest.mark.parametrize(
    "instances",
    [[["1.5"] * 64], [[True] * 64], [[None] * 64], [[1.0] * 63 + ["x"]], ["1"] * 64, [[1.0] * 64, "x"], [{}]],
)
def test_v1_takes_only_numbers(instances: list[Any]) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_v1(orjson.dumps({"instances": instances}), 64)
    assert "only numbers" in caught.value.message and caught.value.status == 400


@pytest.mark.parametrize("rows", [[[0.5] * 64], [[1] * 64, [2.5] * 64], [0.25] * 64])
def test_v1_reads_rows_of_numbers(rows: list[Any]) -> None:
    parsed = parse_v1(orjson.dumps({"instances": rows}), 64)
    np.testing.assert_array_equal(parsed, np.asarray(rows, dtype=np.float32).reshape(-1, 64))


def binary_request(
    rows: np.ndarray, datatype: str = "FP32", request: dict[str, Any] | None = None, size: int | None = None
) -> tuple[bytes, str]:
    """A request as tritonclient.http sends it by default: the JSON header, then the tensor's bytes."""
    data = rows.astype(np.dtype(NUMERIC_DATATYPES[datatype]).newbyteorder("<")).tobytes()
    tensor = {"name": "features", "shape": list(rows.shape), "datatype": datatype}
    tensor["parameters"] = {"binary_data_size": len(data) if size is None else size}
    header = orjson.dumps({"inputs": [tensor]} | (request or {}))
    return header + data, str(len(header))


@pytest.mark.parametrize("datatype", ["FP32", "FP16", "FP64", "INT64", "UINT8", "INT16"])
def test_binary_inputs_read_as_their_datatype(datatype: str) -> None:
    rows = np.arange(128, dtype=np.float64).reshape(2, 64) % 17
    body, header_length = binary_request(rows, datatype)
    parsed = parse_v2(body, FEATURES, OUTPUTS, header_length)
    assert parsed.rows.dtype == np.float32
    np.testing.assert_array_equal(parsed.rows, rows.astype(np.float32))
    assert parsed.binary_outputs == frozenset()  # JSON stays the default answer


@pytest.mark.parametrize(
    ("request_fields", "binary"),
    [
        ({}, False),
        ({"parameters": {"binary_data_output": True}}, True),
        ({"parameters": {"binary_data_output": False}}, False),
        ({"outputs": [{"name": "predictions"}]}, False),
        ({"outputs": [{"name": "predictions", "parameters": {"binary_data": True}}]}, True),
        (
            {
                "parameters": {"binary_data_output": True},
                "outputs": [{"name": "predictions", "parameters": {"binary_data": False}}],
            },
            False,
        ),
        ({"parameters": {"binary_data_output": True}, "outputs": [{"name": "predictions"}]}, True),
    ],
)
def test_outputs_are_binary_only_when_asked(request_fields: dict[str, Any], binary: bool) -> None:
    rows = np.ones((1, 64), dtype=np.float32)
    json_body = orjson.dumps(
        {"inputs": [{"name": "features", "shape": [1, 64], "datatype": "FP32", "data": rows.ravel().tolist()}]}
        | request_fields
    )
    for body, header_length in [(json_body, None), binary_request(rows, request=request_fields)]:
        parsed = parse_v2(body, FEATURES, OUTPUTS, header_length)
        assert parsed.binary_outputs == (frozenset({"predictions"}) if binary else frozenset())


def test_a_binary_answer_reads_back_with_tritonclient() -> None:
    from tritonclient.http import InferResult

    predictions = np.random.default_rng(0).random((3, 10), dtype=np.float32)
    body, header_length = v2_binary_response("digits", 2, "req-9", OUTPUTS[0], predictions)
    result = InferResult.from_response_body(body, header_length=header_length)
    np.testing.assert_array_equal(result.as_numpy("predictions"), predictions)
    assert result.get_response()["model_version"] == "2" and result.get_response()["id"] == "req-9"


ROWS = np.ones((2, 64), dtype=np.float32)
JSON_ONLY = orjson.dumps({"inputs": [{"name": "features", "shape": [2, 64], "datatype": "FP32", "data": [1] * 128}]})


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        ((binary_request(ROWS)[0], "12x"), "must be the JSON header's length"),
        ((binary_request(ROWS)[0], "-5"), "must be the JSON header's length"),
        ((binary_request(ROWS)[0], "\u00b2"), "must be the JSON header's length"),
        ((binary_request(ROWS)[0], "99999"), "has only"),
        ((binary_request(ROWS)[0], None), f"needs the {HEADER_LENGTH_HEADER} header"),
        ((binary_request(ROWS)[0][:-4], binary_request(ROWS)[1]), "binary_data_size is 512 but 508 bytes follow"),
        ((binary_request(ROWS)[0] + b"\0", binary_request(ROWS)[1]), "but 513 bytes follow"),
        (binary_request(ROWS, size=500), "takes 512 bytes; binary_data_size is 500"),
        (binary_request(ROWS, size=-1), "whole number of bytes"),
        ((JSON_ONLY + b"\0\0\0\0", str(len(JSON_ONLY))), "no input has a binary_data_size"),
        ((binary_request(ROWS)[0][: -ROWS.nbytes], None), f"has no {HEADER_LENGTH_HEADER} header"),
        (binary_request(ROWS, request={"parameters": {"binary_data_output": "yes"}}), "must be true or false"),
        (
            binary_request(ROWS, request={"outputs": [{"name": "predictions", "parameters": {"classification": 3}}]}),
            "classification is not supported",
        ),
        (binary_request(ROWS, request={"parameters": []}), '"parameters" of the request must be an object'),
    ],
)
def test_lying_binary_sizes_and_headers_get_a_400_that_says_what(
    request_: tuple[bytes, str | None], words: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_v2(request_[0], FEATURES, OUTPUTS, request_[1])
    assert words in caught.value.message and caught.value.status == 400


def test_data_and_binary_data_size_together_are_refused() -> None:
    tensor = {"name": "features", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}
    header = orjson.dumps({"inputs": [tensor | {"parameters": {"binary_data_size": 256}}]})
    with pytest.raises(ProtocolError, match="both data and binary_data_size"):
        parse_v2(header + bytes(256), FEATURES, OUTPUTS, str(len(header)))


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    body=BODIES,
    tail=st.binary(max_size=300),
    size=st.none() | st.integers(-3, 600) | st.sampled_from([True, "256", 2.5]),
    header_length=st.none() | st.integers(-2, 1000).map(str) | st.text(max_size=4),
)
def test_binary_bodies_raise_only_protocol_errors(body: bytes, tail: bytes, size: Any, header_length: Any) -> None:
    try:
        payload = orjson.loads(body)
        payload["inputs"][0]["parameters"] = {"binary_data_size": size}
        body = orjson.dumps(payload)
    except (orjson.JSONDecodeError, TypeError, KeyError, IndexError):
        pass
    if header_length == "":
        header_length = str(len(body))
    try:
        parse_v2(body + tail, FEATURES, OUTPUTS, header_length)
    except ProtocolError as err:
        assert 400 <= err.status < 500 and err.message
