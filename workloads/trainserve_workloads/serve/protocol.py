"""KServe v1 and Open Inference Protocol (v2) over HTTP/JSON: parse requests, shape responses. Pure.

Every way a request can be wrong ends in :class:`ProtocolError` with an HTTP status and a message that
says what is wrong; nothing a client sends can raise anything else from here.
"""

from __future__ import annotations

import itertools
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
#: Output datatypes we can answer as binary tensor data, with their numpy types.
BINARY_OUTPUT_DATATYPES = {**NUMERIC_DATATYPES, "BOOL": np.bool_}
#: The Python types orjson gives JSON numbers (true and false are ``bool``, a type of its own, and stay refused).
JSON_NUMBER_TYPES = frozenset({int, float})
#: Triton's binary tensor data extension: the length of the JSON part of a body followed by tensor bytes
#: (triton-inference-server/server docs/protocol/extension_binary_data.md).
HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"
NO_BINARY = memoryview(b"")
BINARY_HINT = f" (binary tensor data after the JSON needs the {HEADER_LENGTH_HEADER} header)"
#: Triton parameters for extensions this server does not have, with what to do instead.
UNSUPPORTED_PARAMETERS = {
    "shared_memory_region": "send the tensor in the request body",
    "shared_memory_byte_size": "send the tensor in the request body",
    "shared_memory_offset": "send the tensor in the request body",
    "classification": "ask for the output itself and take its top classes",
}


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
    binary_outputs: frozenset[str] = frozenset()  # outputs to answer as binary tensor data


def parse_json(body: bytes | memoryview, hint: str = "") -> Any:
    if not body:
        raise ProtocolError(400, "empty request body: send a JSON object")
    try:
        # on the hot path: far faster than json on rows of numbers (figures: docs/performance.md#serving-request-parsing)
        return orjson.loads(body)
    except orjson.JSONDecodeError as err:
        raise ProtocolError(400, f"request body is not valid JSON: {err}{hint}") from None


def _as_rows(values: Any, n_features: int, where: str) -> np.ndarray:
    if not isinstance(values, list) or not values:
        raise ProtocolError(400, f"{where} must be a non-empty list of rows of {n_features} numbers")
    kinds = set(map(type, values))
    if kinds == {list}:
        kinds = set(map(type, itertools.chain.from_iterable(values)))
    # numpy would read "1.5" and true as numbers; TensorFlow Serving's REST API refuses them, and so do we
    if not kinds <= JSON_NUMBER_TYPES | {list}:
        raise ProtocolError(400, f"{where} must hold only numbers, in rows of equal length {n_features}")
    try:
        rows = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise ProtocolError(400, f"{where} must hold only numbers, in rows of equal length {n_features}") from None
    if rows.ndim == 1 and rows.shape[0] == n_features and not isinstance(values[0], list):
        rows = rows.reshape(1, n_features)
    if rows.ndim != 2 or rows.shape[1] != n_features:
        raise ProtocolError(400, f"{where} has shape {list(rows.shape)}; this model takes rows of {n_features} numbers")
    return finite_float32(rows, where)


def finite_float32(rows: np.ndarray, where: str) -> np.ndarray:
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


def _flatten(data: list[Any]) -> list[Any]:
    """The values of nested lists, row-major."""
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item) if list in set(map(type, item)) else item)
        else:
            flat.append(item)
    return flat


def parse_v2(
    body: bytes, model_input: TensorSpec, outputs: list[TensorSpec], header_length: str | None = None
) -> InferRequest:
    """OIP ``/infer``: named input tensors with shape, datatype and row-major data (flat or nested), or with
    Triton's binary tensor data after the JSON (``header_length``: the ``Inference-Header-Content-Length``)."""
    header, binary = split_binary_body(body, header_length)
    payload = parse_json(header, "" if header_length is not None else BINARY_HINT)
    if not isinstance(payload, dict):
        raise ProtocolError(400, 'expected a JSON object with "inputs": [{"name", "shape", "datatype", "data"}]')
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(400, '"id" must be a string')
    tensor, datatype, shape = checked_input(payload.get("inputs"), model_input)
    size = _binary_data_size(tensor.get("parameters", {}), header_length)
    if size is None:
        if binary:
            raise ProtocolError(
                400, f"{len(binary)} bytes follow the JSON header but no input has a binary_data_size parameter"
            )
        values = _json_values(tensor, datatype, shape)
    else:
        if "data" in tensor:
            raise ProtocolError(400, "the input has both data and binary_data_size: send its values one way")
        values = _binary_values(binary, size, datatype, shape)
    names, binary_outputs = _requested_outputs(payload, outputs)
    return InferRequest(finite_float32(values, "data"), request_id, names, binary_outputs)


def split_binary_body(body: bytes, header_length: str | None) -> tuple[bytes | memoryview, memoryview]:
    """The JSON header and the binary tensor data after it (none without the header length)."""
    if header_length is None:
        return body, NO_BINARY
    if not (header_length.isascii() and header_length.isdigit() and len(header_length) <= 18):
        raise ProtocolError(
            400, f"{HEADER_LENGTH_HEADER} must be the JSON header's length in bytes; got {header_length[:40]!r}"
        )
    length = int(header_length)
    if length > len(body):
        raise ProtocolError(400, f"{HEADER_LENGTH_HEADER} is {length} but the request body has only {len(body)} bytes")
    view = memoryview(body)
    return view[:length], view[length:]


def checked_input(inputs: Any, model_input: TensorSpec) -> tuple[dict[str, Any], str, list[int]]:
    """The one input tensor (an object of the OIP's shape), its datatype and its shape, checked for this model."""
    tensor = _the_input(inputs, model_input)
    datatype, shape = _datatype_and_shape(tensor, model_input.shape[-1])
    check_parameters(tensor, f"input {model_input.name!r}")
    return tensor, datatype, shape


def _the_input(inputs: Any, model_input: TensorSpec) -> dict[str, Any]:
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError(400, '"inputs" must be a non-empty list of tensors')
    if len(inputs) != 1:
        raise ProtocolError(400, f"this model takes one input tensor, {model_input.name!r}; got {len(inputs)}")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise ProtocolError(400, "each input must be an object with name, shape, datatype and data")
    missing = [k for k in ("name", "shape", "datatype") if k not in tensor]
    if missing:
        raise ProtocolError(400, f"input tensor lacks {', '.join(missing)}")
    if tensor["name"] != model_input.name:
        raise ProtocolError(400, f"unknown input {tensor['name']!r}: this model's input is {model_input.name!r}")
    return tensor


def _datatype_and_shape(tensor: dict[str, Any], n_features: int) -> tuple[str, list[int]]:
    datatype = tensor["datatype"]
    if not isinstance(datatype, str) or datatype not in ALL_DATATYPES:
        raise ProtocolError(400, f"unknown datatype {datatype!r}")
    if datatype not in NUMERIC_DATATYPES:
        raise ProtocolError(
            400, f"datatype {datatype} is not supported by this model: send FP32 (or another numeric type)"
        )
    shape = tensor["shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        or shape[0] < 1
        or shape[1] != n_features
    ):
        raise ProtocolError(400, f"input shape must be [rows, {n_features}] with rows >= 1; got {shape!r}")
    return datatype, shape


def check_parameters(entry: dict[str, Any], where: str) -> dict[str, Any]:
    parameters = entry.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ProtocolError(400, f'"parameters" of {where} must be an object')
    unsupported = sorted(UNSUPPORTED_PARAMETERS.keys() & parameters.keys())
    if unsupported:
        name = unsupported[0]
        raise ProtocolError(400, f"{where}: parameter {name} is not supported here; {UNSUPPORTED_PARAMETERS[name]}")
    return parameters


def _binary_data_size(parameters: dict[str, Any], header_length: str | None) -> int | None:
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(400, f"binary_data_size must be a whole number of bytes; got {size!r}")
    if header_length is None:
        raise ProtocolError(
            400,
            f"the input has binary_data_size but the request has no {HEADER_LENGTH_HEADER} header: "
            "send it with the length of the JSON part of the body",
        )
    return size


def _json_values(tensor: dict[str, Any], datatype: str, shape: list[int]) -> np.ndarray:
    if "data" not in tensor:
        raise ProtocolError(400, "input tensor lacks data (or a binary_data_size parameter for binary data)")
    data = tensor["data"] if isinstance(tensor["data"], list) else [tensor["data"]]
    kinds = set(map(type, data))  # one pass in C over a row's values: the check below, and whether they nest
    if list in kinds:
        data = _flatten(data)
        kinds = set(map(type, data))
    if len(data) != math.prod(shape):
        raise ProtocolError(400, f"shape {shape} needs {math.prod(shape)} values; data has {len(data)}")
    if not kinds <= JSON_NUMBER_TYPES:
        raise ProtocolError(400, "data must hold only numbers")
    try:
        values = np.asarray(data, dtype=np.float64).reshape(shape)
    except (ValueError, OverflowError):
        raise ProtocolError(400, "data values are out of range") from None
    if datatype.startswith(("INT", "UINT")) and not np.all(values == np.round(values)):
        raise ProtocolError(400, f"data holds fractions but the datatype is {datatype}")
    return values


def _binary_values(binary: memoryview, size: int, datatype: str, shape: list[int]) -> np.ndarray:
    """Little-endian, row-major, no padding (Triton's binary tensor data extension)."""
    needed = tensor_byte_size(datatype, shape)
    if size != needed:
        raise ProtocolError(400, f"shape {shape} of {datatype} takes {needed} bytes; binary_data_size is {size}")
    if size != len(binary):
        raise ProtocolError(400, f"binary_data_size is {size} but {len(binary)} bytes follow the JSON header")
    return tensor_from_bytes(binary, datatype, shape)


def tensor_byte_size(datatype: str, shape: list[int]) -> int:
    return math.prod(shape) * np.dtype(NUMERIC_DATATYPES[datatype]).itemsize


def tensor_from_bytes(data: bytes | memoryview, datatype: str, shape: list[int]) -> np.ndarray:
    """Little-endian, row-major, no padding: Triton's binary tensor data, and the OIP's raw contents over gRPC."""
    dtype = np.dtype(NUMERIC_DATATYPES[datatype]).newbyteorder("<")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _requested_outputs(payload: dict[str, Any], outputs: list[TensorSpec]) -> tuple[list[str] | None, frozenset[str]]:
    """The outputs asked for by name, and those to answer as binary data (``binary_data`` on an output
    overrides the request's ``binary_data_output``)."""
    all_binary = _flag(check_parameters(payload, "the request"), "binary_data_output")
    requested = payload.get("outputs")
    if requested is None:
        return None, frozenset(o.name for o in outputs if all_binary and o.datatype in BINARY_OUTPUT_DATATYPES)
    if not isinstance(requested, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested
    ):
        raise ProtocolError(400, '"outputs" must be a list of {"name": ...}')
    names = checked_outputs([o["name"] for o in requested], outputs)
    encodable = {o.name for o in outputs if o.datatype in BINARY_OUTPUT_DATATYPES}
    binary = set()
    for entry in requested:
        wanted = _flag(check_parameters(entry, f"output {entry['name']!r}"), "binary_data")
        if (wanted or (wanted is None and all_binary)) and entry["name"] in encodable:
            binary.add(entry["name"])
    return names, frozenset(binary)


def checked_outputs(names: list[str], outputs: list[TensorSpec]) -> list[str]:
    """The outputs a request names, each one this model has."""
    known = {o.name for o in outputs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ProtocolError(400, f"unknown output(s) {unknown}; this model has {sorted(known)}")
    return names


def _flag(parameters: dict[str, Any], name: str) -> bool | None:
    value = parameters.get(name)
    if value is not None and not isinstance(value, bool):
        raise ProtocolError(400, f"parameter {name} must be true or false; got {value!r}")
    return value


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
    entry = {
        "name": output.name,
        "datatype": output.datatype,
        "shape": list(predictions.shape),
        "data": predictions.ravel().tolist(),
    }
    return _v2_envelope(model_name, version, request_id, entry)


def v2_binary_response(
    model_name: str, version: int | None, request_id: str | None, output: TensorSpec, predictions: np.ndarray
) -> tuple[bytes, int]:
    """The body of an answer with the output as binary tensor data, and the length of its JSON part."""
    data = output_bytes(output, predictions)
    entry = {
        "name": output.name,
        "datatype": output.datatype,
        "shape": list(predictions.shape),
        "parameters": {"binary_data_size": len(data)},
    }
    header = orjson.dumps(_v2_envelope(model_name, version, request_id, entry))
    return header + data, len(header)


def output_bytes(output: TensorSpec, predictions: np.ndarray) -> bytes:
    """An output's values as little-endian, row-major bytes of its datatype."""
    dtype = np.dtype(BINARY_OUTPUT_DATATYPES[output.datatype]).newbyteorder("<")
    return np.ascontiguousarray(predictions, dtype=dtype).tobytes()


def _v2_envelope(
    model_name: str, version: int | None, request_id: str | None, output: dict[str, Any]
) -> dict[str, Any]:
    response: dict[str, Any] = {"model_name": model_name, "outputs": [output]}
    if version is not None:
        response["model_version"] = str(version)
    if request_id is not None:
        response["id"] = request_id
    return response
