"""Per-version request figures, aggregated across replicas, for canary decisions and the stats endpoint.

Each replica counts locally (no I/O on the request path) and sends its deltas to one StatsCollector
every second; the collector keeps cumulative totals per model version. Latency is a fixed-bucket
histogram, so totals add up across replicas and a reader can compute percentiles of any window from
two snapshots.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from trainserve.api.figures import LATENCY_BUCKETS_MS, percentile

BATCH_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


def _no_latencies() -> list[int]:
    return [0] * (len(LATENCY_BUCKETS_MS) + 1)


def _summed(a: list[int], b: list[int]) -> list[int]:
    return [x + y for x, y in zip(a, b, strict=True)]


@dataclass
class ShadowStats:
    """Cumulative figures of a candidate in shadow mode (:class:`trainserve.api.figures.ShadowCounts` on the wire)."""

    requests: int = 0
    rows: int = 0
    agreed: int = 0
    errors: int = 0
    dropped: int = 0
    latency_buckets: list[int] = field(default_factory=_no_latencies)

    def observe(self, latency_ms: float, rows: int, agreed: int, error: bool) -> None:
        self.requests += 1
        self.errors += int(error)
        self.rows += rows
        self.agreed += agreed
        self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1

    def add(self, other: ShadowStats) -> None:
        for name in ("requests", "rows", "agreed", "errors", "dropped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latency_buckets = _summed(self.latency_buckets, other.latency_buckets)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "rows": self.rows,
            "agreed": self.agreed,
            "agreement": round(self.agreed / self.rows, 6) if self.rows else None,
            "errors": self.errors,
            "dropped": self.dropped,
            "latencyCounts": list(self.latency_buckets),
            "p50Ms": percentile(self.latency_buckets, 0.50),
            "p95Ms": percentile(self.latency_buckets, 0.95),
            "p99Ms": percentile(self.latency_buckets, 0.99),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShadowStats:
        requests, rows, agreed, errors, dropped = (
            int(data[k]) for k in ("requests", "rows", "agreed", "errors", "dropped")
        )
        return cls(requests, rows, agreed, errors, dropped, list(data["latencyCounts"]))


@dataclass
class VersionStats:
    """Cumulative figures of one model version; ``shadow`` once it scored requests in shadow mode."""

    requests: int = 0
    errors: int = 0
    rows: int = 0
    latency_buckets: list[int] = field(default_factory=_no_latencies)
    latency_sum_ms: float = 0.0
    shadow: ShadowStats | None = None

    def observe(self, latency_ms: float, rows: int, error: bool) -> None:
        self.requests += 1
        self.errors += int(error)
        self.rows += rows
        self.latency_buckets[bisect.bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
        self.latency_sum_ms += latency_ms

    def shadowed(self) -> ShadowStats:
        """The shadow figures, from now on reported."""
        self.shadow = self.shadow or ShadowStats()
        return self.shadow

    def add(self, other: VersionStats) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.rows += other.rows
        self.latency_sum_ms += other.latency_sum_ms
        self.latency_buckets = _summed(self.latency_buckets, other.latency_buckets)
        if other.shadow is not None:
            self.shadowed().add(other.shadow)

    def to_dict(self) -> dict[str, Any]:
        shadow = {"shadow": self.shadow.to_dict()} if self.shadow is not None else {}
        return {
            "requests": self.requests,
            "errors": self.errors,
            "rows": self.rows,
            "latencySumMs": round(self.latency_sum_ms, 3),
            "latencyBucketsMs": list(LATENCY_BUCKETS_MS),
            "latencyCounts": list(self.latency_buckets),
            "p50Ms": percentile(self.latency_buckets, 0.50),
            "p95Ms": percentile(self.latency_buckets, 0.95),
            "p99Ms": percentile(self.latency_buckets, 0.99),
        } | shadow

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersionStats:
        shadow = ShadowStats.from_dict(data["shadow"]) if data.get("shadow") else None
        return cls(
            data["requests"], data["errors"], data["rows"], list(data["latencyCounts"]), data["latencySumMs"], shadow
        )


class StatsCollector:
    """Totals per model version across all replicas (a Serve deployment with one replica)."""

    def __init__(self) -> None:
        self.versions: dict[str, VersionStats] = {}
        self.batches: list[int] = [0] * (len(BATCH_BUCKETS) + 1)
        self.roles: dict[str, dict[str, Any]] = {}

    def push(
        self, deltas: dict[str, dict[str, Any]], batch_counts: list[int], roles: dict[str, dict[str, Any]] | None = None
    ) -> None:
        """Add a replica's counts; ``roles`` says which version is primary and canary (uri and version label)."""
        if roles is not None:
            self.roles = roles
        for version, data in deltas.items():
            self.versions.setdefault(version, VersionStats()).add(VersionStats.from_dict(data))
        self.batches = [a + b for a, b in zip(self.batches, batch_counts, strict=True)]

    def snapshot(self) -> dict[str, Any]:
        return {
            "versions": {version: stats.to_dict() for version, stats in sorted(self.versions.items())},
            "batchSizes": {"bounds": list(BATCH_BUCKETS), "counts": list(self.batches)},
            "roles": self.roles,
        }
