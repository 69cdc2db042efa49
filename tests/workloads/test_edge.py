"""The replica's HTTP edge without Ray: the bearer-token check and the body limit answer as a client expects."""

from __future__ import annotations

import asyncio
import gzip
import logging
import zlib

import pytest
from starlette.requests import Request

from trainserve_workloads.serve.edge import authorize, error_response, read_body
from trainserve_workloads.serve.protocol import ProtocolError


def request(headers: dict[str, str] | None = None, body: bytes = b"") -> Request:
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw}, receive)


def test_no_token_configured_lets_everyone_in() -> None:
    authorize(request(), None)


@pytest.mark.parametrize("header", ["Bearer s3cret", "bearer s3cret", "Bearer  s3cret "])
def test_the_right_bearer_token_passes(header: str) -> None:
    authorize(request({"Authorization": header}), b"s3cret")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}])
def test_a_missing_or_wrong_token_is_a_401_that_says_how_to_send_it(headers: dict[str, str]) -> None:
    with pytest.raises(ProtocolError) as refused:
        authorize(request(headers), b"s3cret")
    assert refused.value.status == 401 and "Authorization: Bearer" in refused.value.message
    assert "s3cret" not in refused.value.message


def test_the_token_is_compared_in_constant_time_and_never_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every check goes through ``hmac.compare_digest`` (its time does not depend on where the tokens differ),
    and neither the presented nor the expected token reaches a log record or the refusal."""
    from trainserve_workloads.serve import edge

    compared: list[tuple[bytes, bytes]] = []
    real = edge.hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(edge.hmac, "compare_digest", recording)
    caplog.set_level(logging.DEBUG)
    authorize(request({"Authorization": "Bearer s3cret"}), b"s3cret")
    with pytest.raises(ProtocolError) as refused:
        authorize(request({"Authorization": "Bearer gu3ssed"}), b"s3cret")
    assert compared == [(b"s3cret", b"s3cret"), (b"gu3ssed", b"s3cret")]
    assert "gu3ssed" not in refused.value.message
    assert not [r for r in caplog.records if "s3cret" in r.getMessage() or "gu3ssed" in r.getMessage()]


def test_a_body_within_the_limit_is_read() -> None:
    assert asyncio.run(read_body(request(body=b"x" * 100), 100)) == b"x" * 100


def test_a_declared_length_over_the_limit_is_refused_before_reading() -> None:
    with pytest.raises(ProtocolError) as refused:
        asyncio.run(read_body(request({"Content-Length": "5000"}, b""), 1024))
    assert refused.value.status == 413 and "5000" in refused.value.message


def test_an_undeclared_body_over_the_limit_is_refused() -> None:
    with pytest.raises(ProtocolError) as refused:
        asyncio.run(read_body(request(body=b"x" * 2000), 1024))
    assert refused.value.status == 413


def test_errors_are_json() -> None:
    response = error_response(404, "unknown model 'x'")
    assert response.status_code == 404 and response.media_type == "application/json"
    assert response.body == b'{"error":"unknown model \'x\'"}'


COMPRESSORS = {"gzip": gzip.compress, "deflate": zlib.compress}  # as tritonclient.http compresses request bodies


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "GZip", "identity"])
def test_compressed_bodies_are_read_as_what_they_stand_for(encoding: str) -> None:
    plain = b'{"instances": [[1, 2, 3]]}' * 10
    sent = COMPRESSORS.get(encoding.lower(), lambda b: b)(plain)
    assert asyncio.run(read_body(request({"Content-Encoding": encoding}, sent), 1024)) == plain


@pytest.mark.parametrize(
    ("encoding", "body", "status", "words"),
    [
        ("br", b"x", 415, "gzip, deflate or uncompressed"),
        ("gzip", b"not gzip at all", 400, "not valid gzip data"),
        # mtime=0: the header's time is part of the test's id, which both pytest workers must collect alike
        ("gzip", gzip.compress(b"x" * 100, mtime=0)[:-12], 400, "ends early"),
        ("deflate", zlib.compress(b"x" * 100) + b"more", 400, "4 bytes follow the end"),
        ("gzip", gzip.compress(b"0" * 5000, mtime=0), 413, "once decompressed"),
    ],
    ids=["brotli", "not-gzip", "gzip-cut-short", "deflate-then-more", "gzip-over-the-limit"],
)
def test_bad_or_oversize_compressed_bodies_say_what(encoding: str, body: bytes, status: int, words: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        asyncio.run(read_body(request({"Content-Encoding": encoding}, body), 1024))
    assert refused.value.status == status and words in refused.value.message
