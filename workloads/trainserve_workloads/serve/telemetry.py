"""A replica's figures: counted locally on the request path, handed on in bulk once a second.

A request is counted in plain Python structures only. Once a second the counts go to Ray's metrics (which Ray
exports to Prometheus), a slice of observations per event-loop turn, and the per-version deltas with the current
roles (primary, canary) go to the StatsCollector deployment, which answers ``/v2/models/NAME/stats``. A candidate in
shadow mode is counted apart from the requests it answers: scored, agreed rows, failures, drops and its latency.
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
        self.pending_shadow: dict[tuple[str, str, str], int] = {}  # (version, counter, outcome) -> count
        self.pending_shadow_latencies: list[tuple[str, float]] = []
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
        self.shadow_requests = Counter(
            "trainserve_shadow_requests",
            "Requests a shadow candidate was offered, by outcome: scored, error (its call failed) or dropped (behind).",
            tag_keys=("model", "version", "outcome"),  # type: ignore[arg-type]
        )
        self.shadow_rows = Counter(
            "trainserve_shadow_rows",
            "Rows a shadow candidate scored, by outcome: agreed or disagreed with the primary.",
            tag_keys=("model", "version", "outcome"),  # type: ignore[arg-type]
        )
        self.shadow_latency = Histogram(
            "trainserve_shadow_latency_ms",
            "Time a shadow candidate took to score a request, from its hand-off, in milliseconds.",
            boundaries=list(LATENCY_BUCKETS_MS),
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

    def count_shadow(self, label: str, started: float, rows: int, agreed: int, error: bool) -> None:
        """A request the candidate ``label`` scored in shadow mode (or failed to)."""
        latency_ms = (time.perf_counter() - started) * 1000.0
        self.local.setdefault(label, VersionStats()).shadowed().observe(latency_ms, rows, agreed, error)
        self.pending_shadow_latencies.append((label, latency_ms))
        self._pend_shadow(label, "requests", "error" if error else "scored", 1)
        if not error:
            self._pend_shadow(label, "rows", "agreed", agreed)
            self._pend_shadow(label, "rows", "disagreed", rows - agreed)

    def count_shadow_dropped(self, label: str) -> None:
        """A request the candidate ``label`` did not score: it had too many in hand."""
        self.local.setdefault(label, VersionStats()).shadowed().dropped += 1
        self._pend_shadow(label, "requests", "dropped", 1)

    def _pend_shadow(self, label: str, counter: str, outcome: str, count: int) -> None:
        key = (label, counter, outcome)
        self.pending_shadow[key] = self.pending_shadow.get(key, 0) + count

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
        shadow, self.pending_shadow = self.pending_shadow, {}
        for (label, counter, outcome), count in shadow.items():
            metric = self.shadow_requests if counter == "requests" else self.shadow_rows
            if count:
                metric.inc(count, tags={"model": self.model_name, "version": label, "outcome": outcome})
        shadow_latencies, self.pending_shadow_latencies = self.pending_shadow_latencies, []
        observations = [(self.latency, label, ms) for label, ms in latencies]
        observations += [(self.batch_size, label, float(size)) for label, size in batches]
        observations += [(self.shadow_latency, label, ms) for label, ms in shadow_latencies]
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


def roles(
    primary: Served | None,
    canary: Served | None,
    requested: dict[str, str],
    canary_percent: int,
    shadow_percent: int | None = None,
) -> Roles:
    """Which version answers as primary and which as canary (the operator judges the canary by its uri), and how
    each replica calls it; a canary in shadow mode answers nothing and scores ``shadowPercent`` of the requests."""
    shares = {"primary": 100 - (canary_percent if canary else 0), "canary": canary_percent}
    shadow = {"canary": {"mode": "shadow", "shadowPercent": shadow_percent}} if shadow_percent is not None else {}
    return {
        role: {
            "uri": requested.get(role, slot.model.uri),  # as the ModelService names it
            "loadedFrom": slot.model.uri,
            "version": slot.version_label,
            "percent": shares[role],
            "callPath": slot.model.call_path,  # e.g. "tensorflow lite" (``spec.runtime``)
            "lite": slot.model.lite.to_dict(),  # the move to TensorFlow Lite: state, reason, seconds, timings
        }
        | shadow.get(role, {})
        for role, slot in (("primary", primary), ("canary", canary))
        if slot is not None
    }


def _bucket(value: float, bounds: tuple[int, ...] | tuple[float, ...]) -> int:
    for index, bound in enumerate(bounds):
        if value <= bound:
            return index
    return len(bounds)
