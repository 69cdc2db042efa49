"""Reading HAProxy's stats: when `local serve` may say a service is ready (the live path is in test_grpc.py)."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from trainserve_workloads.haproxy_routes import backend_name, routed_backends, wait_until_routed

HEADER = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,status,weight,act,bck,\n"


def stats(*rows: tuple[str, str, str, str]) -> str:
    return HEADER + "".join(f"{px},{sv},0,0,0,0,,0,{status},1,1,{bck},\n" for px, sv, status, bck in rows)


def test_backend_names_follow_serve() -> None:
    assert backend_name("HTTP", "digits") == "http-digits"
    assert backend_name("grpc", "team/a#b c") == "grpc-team.a-b_c"


def test_only_an_up_primary_server_routes() -> None:
    csv = stats(
        ("http-digits", "FRONTEND", "OPEN", ""),
        ("http-digits", "replica-1", "UP", "0"),
        ("http-digits", "BACKEND", "UP", "0"),
        ("grpc-digits", "fallback", "UP", "1"),  # Serve's own proxy, a backup: not the replicas
        ("grpc-digits", "replica-1", "DOWN", "0"),
        ("grpc-digits", "BACKEND", "UP", "0"),
        ("http-other", "replica-2", "UP 1/2", "0"),
    )
    assert routed_backends(csv) == {"http-digits", "http-other"}
    assert routed_backends("") == set()


@pytest.fixture
def stats_page() -> Iterator[tuple[int, list[str]]]:
    """A stats page whose answers the test changes; yields its port and the list of answers still to give."""
    answers: list[str] = []

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = (answers.pop(0) if len(answers) > 1 else answers[0]).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], answers
    server.shutdown()


def test_waits_until_every_protocol_is_routed(stats_page: tuple[int, list[str]]) -> None:
    port, answers = stats_page
    answers += [
        stats(("http-digits", "replica-1", "UP", "0")),
        stats(("http-digits", "replica-1", "UP", "0"), ("grpc-digits", "replica-1", "UP", "0")),
    ]
    wait_until_routed(port, "digits", ["http", "grpc"], timeout_s=10)
    assert len(answers) == 1  # it read again after the first answer lacked gRPC


def test_says_which_protocol_never_got_a_replica(stats_page: tuple[int, list[str]]) -> None:
    port, answers = stats_page
    answers.append(stats(("http-digits", "replica-1", "UP", "0"), ("grpc-digits", "fallback", "UP", "1")))
    with pytest.raises(TimeoutError, match="no replica UP for grpc-digits after 1s"):
        wait_until_routed(port, "digits", ["http", "grpc"], timeout_s=1)


def test_says_when_the_stats_page_never_answered() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(TimeoutError, match=rf"stats page http://127.0.0.1:{port}/stats;csv did not answer in 1s"):
            wait_until_routed(port, "digits", ["http"], timeout_s=1)
