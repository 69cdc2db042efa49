"""The serving application's stats endpoint, with figures a test sets (the figures are its input)."""

from __future__ import annotations

from typing import Any

import aiohttp.web

from trainserve.api.figures import LATENCY_BUCKETS_MS


def _counts(requests: int, latency_ms: float) -> list[int]:
    counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    counts[next(i for i, b in enumerate(LATENCY_BUCKETS_MS) if latency_ms <= b)] = requests
    return counts


class FakeServeStats:
    """Answers ``/v2/models/digits/stats`` as the ModelServer does, with the figures set by :meth:`serve`."""

    def __init__(self) -> None:
        self.versions: dict[str, dict[str, Any]] = {}
        self.roles: dict[str, dict[str, Any]] = {}

    def serve(self, version: str, uri: str, role: str, requests: int, errors: int = 0, latency_ms: float = 4) -> None:
        self.versions[version] = {
            "requests": requests,
            "errors": errors,
            "latencyCounts": _counts(requests, latency_ms),
        }
        self.roles[role] = {"uri": uri, "version": version}

    def shadow(self, version: str, uri: str, scored: int, rows: int, agreed: int, latency_ms: float = 4) -> None:
        """The candidate ``version`` in shadow mode: it answered nothing and scored ``scored`` requests."""
        counts = _counts(scored, latency_ms)
        shadow = {"requests": scored, "rows": rows, "agreed": agreed, "errors": 0, "latencyCounts": counts}
        self.versions[version] = {"requests": 0, "errors": 0, "latencyCounts": _counts(0, 0), "shadow": shadow}
        self.roles["canary"] = {"uri": uri, "version": version, "mode": "shadow"}

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        assert request.path == "/v2/models/digits/stats"
        return aiohttp.web.json_response({"versions": self.versions, "roles": self.roles})
