"""The HTTP edge of a replica: JSON answers, the bearer-token check and the body limit (Starlette only, no Ray)."""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .protocol import HEADER_LENGTH_HEADER, ProtocolError

JSON = "application/json"
OCTETS = "application/octet-stream"


def json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON response; numpy arrays in ``payload`` are written directly."""
    body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def binary_tensor_response(body: bytes, header_length: int, headers: dict[str, str]) -> Response:
    """An answer with binary tensor data after its JSON part (Triton's binary tensor data extension)."""
    headers = headers | {HEADER_LENGTH_HEADER: str(header_length)}
    return Response(body, status_code=200, media_type=OCTETS, headers=headers)


def error_response(status: int, message: str) -> Response:
    return json_response(status, {"error": message})


def authorize(request: Request, token: bytes | None) -> None:
    """A 401 unless the request carries ``token`` as its bearer token (compared in constant time); no token: open."""
    if token is None:
        return
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token):
        raise ProtocolError(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or a 413 once it is known to exceed ``limit`` bytes (from its declared length when there is one)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(413, f"request body of {declared} bytes exceeds the limit of {limit}")
    body = await request.body()
    if len(body) > limit:
        raise ProtocolError(413, f"request body exceeds the limit of {limit} bytes")
    return body
