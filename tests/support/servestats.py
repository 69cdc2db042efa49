"""The serving application's stats endpoint, with figures a test sets (the figures are its input)."""

from __future__ import annotations

from typing import Any

import aiohttp.web

from trainserve.api.figures import LATENCY_BUCKETS_MS


class FakeServeStats:
    """Answers ``/v2/models/digits/stats`` as the ModelServer does, with the figures set by :meth:`serve`."""

    def __init__(self) -> None:
        self.versions: dict[str, dict[str, Any]] = {}
        self.roles: dict[str, dict[str, Any]] = {}

    def serve(self, version: str, uri: str, role: str, requests: int, errors: int = 0, latency_ms: float = 4) -> None:
        counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        counts[next(i for i, b in enumerate(LATENCY_BUCKETS_MS) if latency_ms <= b)] = requests
        self.versions[version] = {"requests": requests, "errors": errors, "latencyCounts": counts}
        self.roles[role] = {"uri": uri, "version": version}

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        assert request.path == "/v2/models/digits/stats"
        return aiohttp.web.json_response({"versions": self.versions, "roles": self.roles})
