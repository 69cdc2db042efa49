"""KServe v1 and Open Inference Protocol (v2) over HTTP/JSON: parse requests, shape responses. Pure.

Every way a request can be wrong ends in :class:`ProtocolError` with an HTTP status and a message that
says what is wrong; nothing a client sends can raise anything else from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

#: OIP datatypes we accept for a float model input (converted to FP32), with their numpy types.
NUMERIC_DATATYPES = {
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}
ALL_DATATYPES = {*NUMERIC_DATATYPES, "BOOL", "BYTES", "BF16"}


class ProtocolError(Exception):
    """A request the server refuses; ``status`` is the HTTP status (4xx)."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: list[int]  # -1 for the batch dimension

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape}


@dataclass(frozen=True)
class InferRequest:
    rows: np.ndarray  # float32, (n, features)
    request_id: str | None
    requested_outputs: list[str] | None


def parse_json(body: bytes) -> Any:
    if not body:
        raise ProtocolError(400, "empty request body: send a JSON object")
    try:
        # on the hot path: far faster than json on rows of numbers (figures: docs/performance.md#serving-request-parsing)
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise ProtocolError(400, f"request body is not valid JSON: {err}") from None


def _as_rows(values: Any, n_features: int, where: str) -> np.ndarray:
    if not isinstance(values, list) or not values:
        raise ProtocolError(400, f"{where} must be a non-empty list of rows of {n_features} numbers")
    try:
        rows = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise ProtocolError(400, f"{where} must hold only numbers, in rows of equal length {n_features}") from None
    if rows.ndim == 1 and rows.shape[0] == n_features and not isinstance(values[0], list):
        rows = rows.reshape(1, n_features)
    if rows.ndim != 2 or rows.shape[1] != n_features:
        raise ProtocolError(400, f"{where} has shape {list(rows.shape)}; this model takes rows of {n_features} numbers")
    return _finite_float32(rows, where)


def _finite_float32(rows: np.ndarray, where: str) -> np.ndarray:
    if not np.all(np.isfinite(rows)):
        raise ProtocolError(400, f"{where} contains NaN or infinite values")
    if np.any(np.abs(rows) > np.finfo(np.float32).max):
        raise ProtocolError(400, f"{where} contains values too large for FP32")
    return rows.astype(np.float32)


def parse_v1(body: bytes, n_features: int) -> np.ndarray:
    """KServe v1 ``:predict``: ``{"instances": [[...], ...]}`` or ``{"inputs": [[...], ...]}``."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ProtocolError(400, 'expected a JSON object such as {"instances": [[...], ...]}')
    keys = [k for k in ("instances", "inputs") if k in payload]
    if len(keys) != 1:
        raise ProtocolError(400, 'send exactly one of "instances" or "inputs", each a list of rows')
    return _as_rows(payload[keys[0]], n_features, keys[0])


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list) and any(isinstance(item, list) for item in data):
        flat: list[Any] = []
        for item in data:
            flat.extend(_flatten(item) if isinstance(item, list) else [item])
        return flat
    return data if isinstance(data, list) else [data]


def parse_v2(body: bytes, model_input: TensorSpec, outputs: list[TensorSpec]) -> InferRequest:
    """OIP ``/infer``: named input tensors with shape, datatype and row-major data (flat or nested)."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ProtocolError(400, 'expected a JSON object with "inputs": [{"name", "shape", "datatype", "data"}]')
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(400, '"id" must be a string')
    inputs = payload.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError(400, '"inputs" must be a non-empty list of tensors')
    if len(inputs) != 1:
        raise ProtocolError(400, f"this model takes one input tensor, {model_input.name!r}; got {len(inputs)}")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise ProtocolError(400, "each input must be an object with name, shape, datatype and data")
    missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
    if missing:
        raise ProtocolError(400, f"input tensor lacks {', '.join(missing)}")
    if tensor["name"] != model_input.name:
        raise ProtocolError(400, f"unknown input {tensor['name']!r}: this model's input is {model_input.name!r}")
    datatype = tensor["datatype"]
    if not isinstance(datatype, str) or datatype not in ALL_DATATYPES:
        raise ProtocolError(400, f"unknown datatype {datatype!r}")
    if datatype not in NUMERIC_DATATYPES:
        raise ProtocolError(
            400, f"datatype {datatype} is not supported by this model: send FP32 (or another numeric type)"
        )
    shape = tensor["shape"]
    n_features = model_input.shape[-1]
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or shape[0] < 1
        or shape[1] != n_features
    ):
        raise ProtocolError(400, f"input shape must be [rows, {n_features}] with rows >= 1; got {shape!r}")
    data = _flatten(tensor["data"])
    if len(data) != math.prod(shape):
        raise ProtocolError(400, f"shape {shape} needs {math.prod(shape)} values; data has {len(data)}")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data):
        raise ProtocolError(400, "data must hold only numbers")
    try:
        values = np.asarray(data, dtype=np.float64).reshape(shape)
    except (ValueError, OverflowError):
        raise ProtocolError(400, "data values are out of range") from None
    if datatype.startswith(("INT", "UINT")) and not np.all(values == np.round(values)):
        raise ProtocolError(400, f"data holds fractions but the datatype is {datatype}")
    requested = payload.get("outputs")
    names: list[str] | None = None
    if requested is not None:
        if not isinstance(requested, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
        ):
            raise ProtocolError(400, '"outputs" must be a list of {"name": ...}')
        names = [o["name"] for o in requested]
        known = {o.name for o in outputs}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ProtocolError(400, f"unknown output(s) {unknown}; this model has {sorted(known)}")
    return InferRequest(_finite_float32(values, "data"), request_id, names)


def v2_metadata(
    model_name: str, versions: list[str], inputs: list[TensorSpec], outputs: list[TensorSpec]
) -> dict[str, Any]:
    """OIP model metadata: the versions it answers for, and its input and output tensors."""
    return {
        "name": model_name,
        "versions": versions,
        "platform": "tensorflow_savedmodel",
        "inputs": [t.to_dict() for t in inputs],
        "outputs": [t.to_dict() for t in outputs],
    }


def v2_response(
    model_name: str, version: int | None, request_id: str | None, output: TensorSpec, predictions: np.ndarray
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "model_name": model_name,
        "outputs": [
            {
                "name": output.name,
                "datatype": output.datatype,
                "shape": list(predictions.shape),
                "data": predictions.ravel().tolist(),
            }
        ],
    }
    if version is not None:
        response["model_version"] = str(version)
    if request_id is not None:
        response["id"] = request_id
    return response
