"""A replica's figures: counted locally on the request path, handed on in bulk once a second.

A request is counted in plain Python structures only. Once a second the counts go to Ray's metrics (which Ray
exports to Prometheus), a slice of observations per event-loop turn, and the per-version deltas with the current
roles (primary, canary) go to the StatsCollector deployment, which answers ``/v2/models/NAME/stats``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ray.serve.handle import DeploymentHandle
from ray.serve.metrics import Counter, Histogram

from trainserve.api.figures import LATENCY_BUCKETS_MS

from .stats import BATCH_BUCKETS, StatsCollector, VersionStats

if TYPE_CHECKING:
    from .model import LoadedModel

log = logging.getLogger("trainserve.serve")
STATS_PUSH_SECONDS = 1.0
#: Ray metric observations made per event-loop turn when the counts are flushed (Ray's are slow; figures:
#: docs/performance.md#serving-ray-metrics-flushing).
METRICS_SLICE = 64
Roles = dict[str, dict[str, Any]]


class Served(Protocol):
    """A model version in a role (the server's slot)."""

    model: LoadedModel
    version_label: str


class Telemetry:
    """The counts of one replica, the Ray metrics they feed and the push to the StatsCollector."""

    def __init__(self, stats: DeploymentHandle[StatsCollector], roles: Callable[[], Roles]):
        self.stats = stats
        self.roles = roles  # read at each push: which version is primary and which canary
        self.model_name = ""  # the ``model`` tag; the server sets it when it is configured
        self.local: dict[str, VersionStats] = {}
        self.batch_counts = [0] * (len(BATCH_BUCKETS) + 1)
        self.pending_requests: dict[tuple[str, str, str], int] = {}
        self.pending_latencies: list[tuple[str, float]] = []
        self.pending_batches: list[tuple[str, int]] = []
        # Ray annotates ``tag_keys`` as ``Tuple[str]`` (one string) where it takes any number: hence the ignores.
        self.requests = Counter(
            "trainserve_requests",
            "Inference requests by model, version, protocol and HTTP code.",
            tag_keys=("model", "version", "protocol", "code"),  # type: ignore[arg-type]
        )
        self.latency = Histogram(
            "trainserve_request_latency_ms",
            "Time from request to response, in milliseconds.",
            boundaries=list(LATENCY_BUCKETS_MS),
            tag_keys=("model", "version"),  # type: ignore[arg-type]
        )
        self.batch_size = Histogram(
            "trainserve_batch_size",
            "Requests combined into one model call.",
            boundaries=[float(b) for b in BATCH_BUCKETS],
            tag_keys=("model", "version"),  # type: ignore[arg-type]
        )
        self.pusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Push once a second from now on (on the running event loop)."""
        self.pusher = asyncio.get_running_loop().create_task(self._push_stats())

    def count(self, label: str, protocol: str, code: int, started: float, rows: int) -> None:
        """Count locally only: Ray's metric calls are slow, so they are made in bulk by the flush loop."""
        latency_ms = (time.perf_counter() - started) * 1000.0
        self.local.setdefault(label, VersionStats()).observe(latency_ms, rows, error=code >= 500)
        self.pending_latencies.append((label, latency_ms))
        key = (label, protocol, str(code))
        self.pending_requests[key] = self.pending_requests.get(key, 0) + 1

    def batch_counter(self, label: str) -> Callable[[int], None]:
        """What a version's batcher calls with the size of each batch it ran."""

        def counted(size: int) -> None:
            self.pending_batches.append((label, size))
            self.batch_counts[_bucket(size, BATCH_BUCKETS)] += 1

        return counted

    async def flush_metrics(self) -> None:
        """Hand the counts of the last second to Ray's metrics, a slice of observations per loop turn.

        Why slices: one uninterrupted flush held the event loop long enough to be the p99 latency at concurrency 1
        (figures: docs/performance.md#serving-ray-metrics-flushing).
        """
        requests, latencies, batches = self.pending_requests, self.pending_latencies, self.pending_batches
        self.pending_requests, self.pending_latencies, self.pending_batches = {}, [], []
        for (label, protocol, code), count in requests.items():
            self.requests.inc(
                count, tags={"model": self.model_name, "version": label, "protocol": protocol, "code": code}
            )
        observations = [(self.latency, label, ms) for label, ms in latencies]
        observations += [(self.batch_size, label, float(size)) for label, size in batches]
        for index, (histogram, label, value) in enumerate(observations, start=1):
            histogram.observe(value, tags={"model": self.model_name, "version": label})
            if index % METRICS_SLICE == 0:
                await asyncio.sleep(0)  # requests that arrived meanwhile go first

    async def _push_stats(self) -> None:
        while True:
            await asyncio.sleep(STATS_PUSH_SECONDS)
            await self.flush_metrics()
            if not self.local and not any(self.batch_counts):
                continue
            deltas = {version: stats.to_dict() for version, stats in self.local.items()}
            batches, self.local, self.batch_counts = self.batch_counts, {}, [0] * (len(BATCH_BUCKETS) + 1)
            try:
                await self.stats.push.remote(deltas, batches, self.roles())
            except Exception:  # figures are best effort; serving must go on
                log.warning("could not push stats", exc_info=True)


def roles(primary: Served | None, canary: Served | None, requested: dict[str, str], canary_percent: int) -> Roles:
    """Which version answers as primary and which as canary (the operator judges the canary by its uri), and how
    each replica calls it."""
    shares = {"primary": 100 - (canary_percent if canary else 0), "canary": canary_percent}
    return {
        role: {
            "uri": requested.get(role, slot.model.uri),  # as the ModelService names it
            "loadedFrom": slot.model.uri,
            "version": slot.version_label,
            "percent": shares[role],
            "callPath": slot.model.call_path,  # e.g. "tensorflow lite" (``spec.runtime``)
        }
        for role, slot in (("primary", primary), ("canary", canary))
        if slot is not None
    }


def _bucket(value: float, bounds: tuple[int, ...] | tuple[float, ...]) -> int:
    for index, bound in enumerate(bounds):
        if value <= bound:
            return index
    return len(bounds)
