"""The request parsers on their own: whatever a client sends ends in a result or a ProtocolError (no Ray)."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from tests.workloads.strategies import BODIES
from trainserve_workloads.serve.protocol import ProtocolError, TensorSpec, parse_v1, parse_v2

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
    ],
)
def test_v2_errors_say_what_is_wrong(body: bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_v2(body, FEATURES, OUTPUTS)
    assert words in caught.value.message and caught.value.status == 400
