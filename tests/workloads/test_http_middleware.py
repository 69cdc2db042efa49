"""What the fast path adds to Serve's HTTP side: the middleware on Serve's HTTP servers (Serve's own loader accepts
it, and it marks requests as the fast path needs) and HAProxy's log target (no Ray: Serve's loader and validator
are plain functions, HAProxy checks its config with ``-c``)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

from ray.serve._private.haproxy import get_haproxy_binary
from ray.serve._private.http_util import validate_http_proxy_callback_return
from ray.serve._private.utils import call_function_from_import_path

from trainserve.serveconfig import FAST_INGRESS_ENV
from trainserve_workloads.serve.http_middleware import DISCONNECT_DISABLED_HEADER


def wrapped_app() -> tuple[Any, list[dict[str, Any]]]:
    """Serve's callback, loaded the way Serve loads it, around an app that records what it receives."""
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope)

    (middleware,) = validate_http_proxy_callback_return(
        call_function_from_import_path(FAST_INGRESS_ENV["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"])
    )
    return middleware.cls(app, *middleware.args, **middleware.kwargs), seen


def call(app: Any, scope: dict[str, Any]) -> None:
    async def nothing() -> dict[str, Any]:
        return {}

    async def ignore(message: dict[str, Any]) -> None:
        return None

    asyncio.run(app(scope, nothing, ignore))


def test_requests_reach_the_handler_marked_for_direct_await() -> None:
    app, seen = wrapped_app()
    call(app, {"type": "http", "headers": [(b"content-type", b"application/json")]})
    assert (DISCONNECT_DISABLED_HEADER, b"?1") in seen[0]["headers"]
    assert (b"content-type", b"application/json") in seen[0]["headers"]


def test_a_client_that_sets_the_header_keeps_its_value_and_other_scopes_pass_untouched() -> None:
    app, seen = wrapped_app()
    call(app, {"type": "http", "headers": [(DISCONNECT_DISABLED_HEADER, b"?0")]})
    assert [value for name, value in seen[0]["headers"] if name == DISCONNECT_DISABLED_HEADER] == [b"?0"]
    lifespan = {"type": "lifespan"}
    call(app, lifespan)
    assert seen[1] == {"type": "lifespan"}


def test_haproxy_accepts_the_log_target_and_keeps_access_logs_off(tmp_path: Path) -> None:
    """Serve writes ``log <target> local0 info`` into HAProxy's global section; with our target the shipped
    HAProxy parses the line and logs at level notice and above only (access logs are info)."""
    target = FAST_INGRESS_ENV["RAY_SERVE_HAPROXY_LOG_TARGET"]
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"global\n    log {target} local0 info\n"
        "defaults\n    mode http\n    log global\n    option httplog\n    timeout connect 1s\n"
        "    timeout client 1s\n    timeout server 1s\n"
        "frontend f\n    bind 127.0.0.1:18080\n    default_backend b\nbackend b\n    server r 127.0.0.1:1\n"
    )
    checked = subprocess.run([get_haproxy_binary(), "-c", "-f", str(config)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    directive = target.split("#", 1)[0].split()
    assert directive[-2:] == ["local0", "notice"]
