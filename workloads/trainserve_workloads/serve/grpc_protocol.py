"""Open Inference Protocol over gRPC (KServe's and Triton's ``inference.GRPCInferenceService``): requests to the
same :class:`~.protocol.InferRequest` as REST, through the same checks and messages, and answers as protos. Pure.

The protos are tritonclient's generated ones: the same package, service and messages as KServe's
``grpc_predict_v2.proto``, so both projects' clients call this service.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np

from .grpc_stubs import pb
from .protocol import (
    InferRequest,
    ProtocolError,
    TensorSpec,
    check_parameters,
    checked_input,
    checked_outputs,
    finite_float32,
    output_bytes,
    tensor_byte_size,
    tensor_from_bytes,
)

#: A refusal's HTTP status as a gRPC status code (the mapping of grpc's doc/http-grpc-status-mapping.md, read backwards).
GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}
#: Which ``InferTensorContents`` field holds the typed values of each datatype (KServe's grpc_predict_v2.proto).
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def status_code(http_status: int) -> grpc.StatusCode:
    return GRPC_CODES.get(http_status, grpc.StatusCode.INTERNAL)


def check_size(request: Any, limit: int) -> None:
    """REST's body limit (``maxBodyBytes``) for a gRPC request: a 413, which is RESOURCE_EXHAUSTED. (Serve's gRPC
    server itself takes messages of up to 2 GiB: ray/serve/_private/constants.py, RAY_SERVE_GRPC_MAX_MESSAGE_SIZE.)"""
    size = request.ByteSize()
    if size > limit:
        raise ProtocolError(413, f"request message of {size} bytes exceeds the limit of {limit}")


def parameters(entries: Any) -> dict[str, Any]:
    """An ``InferParameter`` map as plain values."""
    return {
        name: getattr(value, value.WhichOneof("parameter_choice") or "string_param") for name, value in entries.items()
    }


def _as_object(tensor: Any) -> dict[str, Any]:
    return {
        "name": tensor.name,
        "datatype": tensor.datatype,
        "shape": list(tensor.shape),
        "parameters": parameters(tensor.parameters),
    }


def parse_infer(request: Any, model_input: TensorSpec, outputs: list[TensorSpec]) -> InferRequest:
    """A ``ModelInferRequest``: one input tensor, its values in ``raw_input_contents`` or typed ``contents``."""
    check_parameters({"parameters": parameters(request.parameters)}, "the request")
    _, datatype, shape = checked_input([_as_object(t) for t in request.inputs], model_input)
    raw, typed = request.raw_input_contents, request.inputs[0].contents
    if raw:
        if typed.ListFields():
            raise ProtocolError(400, "the input has both contents and raw_input_contents: send its values one way")
        if len(raw) != 1:
            raise ProtocolError(400, f"raw_input_contents has {len(raw)} entries; this model takes one input")
        values = _raw_values(raw[0], datatype, shape)
    else:
        values = _typed_values(typed, datatype, shape)
    names = checked_outputs([o.name for o in request.outputs], outputs) if request.outputs else None
    return InferRequest(finite_float32(values, "data"), request.id or None, names)


def _raw_values(data: bytes, datatype: str, shape: list[int]) -> np.ndarray:
    needed = tensor_byte_size(datatype, shape)
    if len(data) != needed:
        raise ProtocolError(
            400, f"shape {shape} of {datatype} takes {needed} bytes; raw_input_contents has {len(data)}"
        )
    return tensor_from_bytes(data, datatype, shape)


def _typed_values(contents: Any, datatype: str, shape: list[int]) -> np.ndarray:
    field = CONTENTS_FIELDS.get(datatype)
    present = [descriptor.name for descriptor, _ in contents.ListFields()]
    if field is None:
        raise ProtocolError(400, f"{datatype} values have no typed contents field: send them in raw_input_contents")
    if present != [field]:
        got = f"; got {', '.join(present)}" if present else ""
        raise ProtocolError(400, f"datatype {datatype} takes its values in contents.{field} or raw_input_contents{got}")
    values: Sequence[Any] = getattr(contents, field)
    needed = int(np.prod(shape))
    if len(values) != needed:
        raise ProtocolError(400, f"shape {shape} needs {needed} values; contents.{field} has {len(values)}")
    return np.fromiter(values, dtype=np.float64, count=needed).reshape(shape)


def infer_response(
    model_name: str, version: int | None, request_id: str | None, output: TensorSpec, predictions: np.ndarray
) -> Any:
    """The answer with the output in ``raw_output_contents``, as Triton answers by default."""
    answer = pb.ModelInferResponse(
        model_name=model_name, model_version="" if version is None else str(version), id=request_id or ""
    )
    answer.outputs.add(name=output.name, datatype=output.datatype, shape=list(predictions.shape))
    answer.raw_output_contents.append(output_bytes(output, predictions))
    return answer


def bearer(metadata: Sequence[tuple[str, Any]]) -> str:
    """The ``authorization`` entry of a call's metadata (gRPC's keys are lower case), or ''."""
    for key, value in metadata:
        if key == "authorization":
            return value if isinstance(value, str) else bytes(value).decode(errors="replace")
    return ""
