"""The HTTP edge of a replica: answers, the bearer-token check and the body (its limit, compressed bodies);
Starlette only, no Ray."""

from __future__ import annotations

import hmac
import zlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .protocol import HEADER_LENGTH_HEADER, ProtocolError

JSON = "application/json"
OCTETS = "application/octet-stream"
#: Compressed request bodies, as tritonclient.http sends them with ``request_compression_algorithm`` (gzip, or
#: deflate in the zlib format: ``zlib.compress``), by their zlib window bits.
COMPRESSED_BODIES = {"gzip": 31, "deflate": 15}


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
    if token is not None:
        check_bearer(request.headers.get("authorization", ""), token)


def check_bearer(authorization: str, token: bytes) -> None:
    """A 401 unless ``authorization`` (a header or gRPC metadata value) is ``Bearer <token>``."""
    scheme, _, presented = authorization.partition(" ")
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
    encoding = request.headers.get("content-encoding")
    return body if encoding is None else decompressed(body, encoding, limit)


def decompressed(body: bytes, encoding: str, limit: int) -> bytes:
    """The body a ``Content-Encoding`` of gzip or deflate stands for; a 413 as soon as it outgrows ``limit``."""
    name = encoding.strip().lower()
    if name == "identity":
        return body
    if name not in COMPRESSED_BODIES:
        raise ProtocolError(
            415, f"Content-Encoding {encoding[:40]!r} is not supported: send the body as gzip, deflate or uncompressed"
        )
    inflater = zlib.decompressobj(COMPRESSED_BODIES[name])
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as err:
        raise ProtocolError(400, f"the request body is not valid {name} data: {err}") from None
    if len(plain) > limit:
        raise ProtocolError(413, f"the request body exceeds the limit of {limit} bytes once decompressed")
    if not inflater.eof:
        raise ProtocolError(400, f"the {name} request body ends early")
    if inflater.unused_data:
        raise ProtocolError(400, f"{len(inflater.unused_data)} bytes follow the end of the {name} data")
    return plain
