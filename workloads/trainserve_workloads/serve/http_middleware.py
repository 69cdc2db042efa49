"""ASGI middleware for Serve's own HTTP servers, the replicas' direct-ingress servers included.

Serve calls :func:`middlewares` when a server starts, because ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``
(set by :data:`trainserve.serveconfig.FAST_INGRESS_ENV`) names it.

Why: for every request, Serve starts one task that watches the connection for a client disconnect and a second
that runs the handler, then waits on both. A request that carries ``x-request-disconnect-disabled: ?1`` skips
the two tasks and the handler is awaited directly, a visible share of a small model's throughput at concurrency 1
(figures: docs/performance.md#serving-serves-disconnect-watch). Inference is short and the batcher already skips
callers that went away, so watching for disconnects buys nothing here. A client that sends the header itself keeps
its own value.
"""

from __future__ import annotations

from typing import Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

DISCONNECT_DISABLED_HEADER = b"x-request-disconnect-disabled"


class SkipDisconnectWatch:
    """Marks HTTP requests so that Serve awaits the handler directly instead of racing it with a watch task."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers: list[Any] = scope["headers"]
            if not any(name == DISCONNECT_DISABLED_HEADER for name, _ in headers):
                scope["headers"] = [*headers, (DISCONNECT_DISABLED_HEADER, b"?1")]
        await self.app(scope, receive, send)


def middlewares() -> list[Middleware]:
    """Serve's HTTP callback: the middleware list for every Serve HTTP server of the application."""
    return [Middleware(SkipDisconnectWatch)]
