"""Per-version request figures as the serving application reports them, and windows between two reports.

The serving replicas count cumulatively in fixed latency buckets (``/v2/models/NAME/stats``), so the figures
of any time window are the difference of two snapshots, and percentiles of the window come from the
bucket counts. Shared by the serving application (which writes them) and the operator (which judges a
canary by them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Upper bounds of the latency buckets, in milliseconds (the last bucket is open-ended).
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    0.5,
    1,
    2,
    3,
    5,
    7.5,
    10,
    15,
    20,
    30,
    50,
    75,
    100,
    150,
    200,
    300,
    500,
    750,
    1000,
    2000,
    5000,
    10000,
)


def percentile(counts: list[int], quantile: float) -> float | None:
    """The quantile of a bucketed histogram, interpolated inside its bucket; None when empty."""
    total = sum(counts)
    if total == 0:
        return None
    target = quantile * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= target:
            low = LATENCY_BUCKETS_MS[index - 1] if index > 0 else 0.0
            high = LATENCY_BUCKETS_MS[index] if index < len(LATENCY_BUCKETS_MS) else LATENCY_BUCKETS_MS[-1] * 2
            return round(low + (high - low) * (target - seen) / count, 3)
        seen += count
    return LATENCY_BUCKETS_MS[-1]


NO_LATENCIES: tuple[int, ...] = (0,) * (len(LATENCY_BUCKETS_MS) + 1)


def _counts(data: dict[str, Any]) -> tuple[int, ...]:
    counts = tuple(int(c) for c in data.get("latencyCounts") or ())
    return counts if len(counts) == len(NO_LATENCIES) else NO_LATENCIES


def _went_down(later: tuple[int, ...], earlier: tuple[int, ...]) -> bool:
    return any(a < b for a, b in zip(later, earlier, strict=True))


def _minus(later: tuple[int, ...], earlier: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(a - b for a, b in zip(later, earlier, strict=True))


class _Rates:
    """Error rate and p95 of requests counted with their failures and a latency histogram."""

    requests: int
    errors: int
    latency_counts: tuple[int, ...]

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def p95_ms(self) -> float | None:
        return percentile(list(self.latency_counts), 0.95)


@dataclass(frozen=True)
class ShadowCounts(_Rates):
    """What a candidate did in shadow mode: requests it scored after the primary answered, rows on which it agreed
    with the primary, failed scorings, requests dropped because it was behind, and its latency histogram."""

    requests: int = 0
    rows: int = 0
    agreed: int = 0
    errors: int = 0
    dropped: int = 0
    latency_counts: tuple[int, ...] = NO_LATENCIES

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ShadowCounts:
        def number(key: str) -> int:
            return int(data.get(key, 0))

        return cls(
            number("requests"), number("rows"), number("agreed"), number("errors"), number("dropped"), _counts(data)
        )

    def since(self, earlier: ShadowCounts) -> ShadowCounts:
        """The window after ``earlier`` (from zero when a replica restarted and its totals went down)."""
        if self.requests < earlier.requests or _went_down(self.latency_counts, earlier.latency_counts):
            return self
        return ShadowCounts(
            self.requests - earlier.requests,
            self.rows - earlier.rows,
            self.agreed - earlier.agreed,
            self.errors - earlier.errors,
            self.dropped - earlier.dropped,
            _minus(self.latency_counts, earlier.latency_counts),
        )

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.rows if self.rows else None

    def describe(self) -> str:
        agreement = f"{self.agreement:.2%} agreement" if self.agreement is not None else "no agreement yet"
        p95 = self.p95_ms
        latency = f"p95 {p95:.1f} ms" if p95 is not None else "no latency yet"
        return (
            f"shadow: {self.requests} requests scored, {agreement} ({self.agreed}/{self.rows} rows), "
            f"{self.errors} errors ({self.error_rate:.2%}), {latency}, {self.dropped} dropped"
        )


@dataclass(frozen=True)
class Figures(_Rates):
    """Requests, failures (5xx) and the latency histogram of one model version, cumulative or for a window; and
    what it did in shadow mode."""

    requests: int = 0
    errors: int = 0
    latency_counts: tuple[int, ...] = NO_LATENCIES
    shadow: ShadowCounts = ShadowCounts()

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Figures:
        shadow = ShadowCounts.from_wire(data.get("shadow") or {})
        return cls(int(data.get("requests", 0)), int(data.get("errors", 0)), _counts(data), shadow)

    def since(self, earlier: Figures) -> Figures:
        """The figures of the window after ``earlier``; replicas that restarted reset their counts, so a
        total that went down starts the window from zero."""
        shadow = self.shadow.since(earlier.shadow)
        if self.requests < earlier.requests or _went_down(self.latency_counts, earlier.latency_counts):
            return Figures(self.requests, self.errors, self.latency_counts, shadow)
        return Figures(
            self.requests - earlier.requests,
            self.errors - earlier.errors,
            _minus(self.latency_counts, earlier.latency_counts),
            shadow,
        )

    def describe(self) -> str:
        p95 = self.p95_ms
        latency = f"p95 {p95:.1f} ms" if p95 is not None else "no latency yet"
        return f"{self.requests} requests, {self.errors} errors ({self.error_rate:.2%}), {latency}"


@dataclass(frozen=True)
class Snapshot:
    """One reading of the stats endpoint: figures per version, and which version plays which role."""

    versions: dict[str, Figures]
    roles: dict[str, dict[str, Any]]

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Snapshot:
        versions = {str(k): Figures.from_wire(v) for k, v in (data.get("versions") or {}).items()}
        roles = {str(k): dict(v) for k, v in (data.get("roles") or {}).items() if isinstance(v, dict)}
        return cls(versions, roles)

    def for_uri(self, uri: str) -> Figures | None:
        """The figures of the version loaded from ``uri`` (None when no replica has reported it yet)."""
        for role in self.roles.values():
            if role.get("uri") == uri:
                return self.versions.get(str(role.get("version")), Figures())
        return None
