"""The operator's Prometheus metrics, on their own registry (one per operator instance)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Suspended")


class _PhaseCollector(Collector):
    """``trainserve_trainingjobs{phase}``, counted from the operator's cache at scrape time."""

    def __init__(self, phases: Callable[[], Iterable[str | None]]):
        self.phases = phases

    def collect(self) -> Iterable[GaugeMetricFamily]:
        counts: dict[str, int] = dict.fromkeys(PHASES, 0)
        for phase in self.phases():
            key = phase or "Pending"
            counts[key] = counts.get(key, 0) + 1
        family = GaugeMetricFamily("trainserve_trainingjobs", "TrainingJobs by phase.", labels=["phase"])
        for phase, count in counts.items():
            family.add_metric([phase], count)
        yield family


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.attempts = Counter(
            "trainserve_trainingjob_attempts",
            "Attempts started (a RayJob created), first attempts and retries.",
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "trainserve_reconcile_duration_seconds",
            "Time of one reconcile.",
            ["kind"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.reconcile_errors = Counter(
            "trainserve_reconcile_errors",
            "Reconciles that failed, by reason (HTTP status or exception).",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "trainserve_trainingjob_duration_seconds",
            "From the first attempt's start to success or final failure.",
            registry=self.registry,
            buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200),
        )

    def track_phases(self, phases: Callable[[], Iterable[str | None]]) -> None:
        self.registry.register(_PhaseCollector(phases))

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serves /metrics in a daemon thread."""
        start_http_server(port, addr=addr, registry=self.registry)

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """A current sample value (for tests and debugging)."""
        return self.registry.get_sample_value(name, dict(labels or {}))
