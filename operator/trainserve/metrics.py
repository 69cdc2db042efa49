"""The operator's Prometheus metrics, on their own registry (one per operator instance)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Suspended")


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else empty: a scrape never fails on an object stored with odd fields."""
    return value if isinstance(value, Mapping) else {}


class _TrainingJobCollector(Collector):
    """``trainserve_trainingjobs{phase}`` and each job's latest epoch metrics, from the cache at scrape time."""

    def __init__(self, trainingjobs: Callable[[], Iterable[Mapping[str, Any]]]):
        self.trainingjobs = trainingjobs

    def collect(self) -> Iterable[GaugeMetricFamily]:
        counts: dict[str, int] = dict.fromkeys(PHASES, 0)
        progress = GaugeMetricFamily(
            "trainserve_trainingjob_metric",
            "Latest epoch metrics of each TrainingJob (loss, accuracy, val_...), as reported in its status.",
            labels=["namespace", "trainingjob", "metric"],
        )
        for job in self.trainingjobs():
            status = _mapping(job.get("status"))
            phase = str(status.get("phase")) if status.get("phase") in PHASES else "Pending"
            counts[phase] += 1
            metadata = _mapping(job.get("metadata"))
            metrics = _mapping(_mapping(status.get("progress")).get("metrics"))
            for metric, value in sorted(metrics.items()):
                if isinstance(value, int | float) and not isinstance(value, bool):
                    progress.add_metric(
                        [str(metadata.get("namespace", "")), str(metadata.get("name", "")), metric], value
                    )
        family = GaugeMetricFamily("trainserve_trainingjobs", "TrainingJobs by phase.", labels=["phase"])
        for phase, count in counts.items():
            family.add_metric([phase], count)
        yield family
        yield progress


@dataclass(frozen=True)
class ServiceSample:
    namespace: str
    name: str
    ready: bool
    canary_percent: int | None


class _ServiceCollector(Collector):
    """``trainserve_modelservices{ready}`` and ``trainserve_canary_traffic_percent``, from the cache at scrape time."""

    def __init__(self, services: Callable[[], Iterable[ServiceSample]]):
        self.services = services

    def collect(self) -> Iterable[GaugeMetricFamily]:
        samples = list(self.services())
        ready = GaugeMetricFamily("trainserve_modelservices", "ModelServices by readiness.", labels=["ready"])
        for value in ("true", "false"):
            ready.add_metric([value], sum(1 for s in samples if s.ready == (value == "true")))
        yield ready
        share = GaugeMetricFamily(
            "trainserve_canary_traffic_percent",
            "Share of requests the canary answers, per ModelService with a canary.",
            labels=["namespace", "modelservice"],
        )
        for sample in samples:
            if sample.canary_percent is not None:
                share.add_metric([sample.namespace, sample.name], sample.canary_percent)
        yield share


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
        self.api_retries = Counter(
            "trainserve_api_retries",
            "API calls tried again after a transient answer (429, 5xx, no answer), by HTTP status (0: none).",
            ["status"],
            registry=self.registry,
        )
        self.jobs_finished = Counter(
            "trainserve_trainingjobs_finished",
            "TrainingJobs that finished, by result: Succeeded or Failed.",
            ["result"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "trainserve_trainingjob_duration_seconds",
            "From the first attempt's start to success or final failure.",
            registry=self.registry,
            buckets=(60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200),
        )

        self.canary_promotions = Counter(
            "trainserve_canary_promotions",
            "Automatic canary decisions: promoted or rolled_back.",
            ["result"],
            registry=self.registry,
        )

    def track_services(self, services: Callable[[], Iterable[ServiceSample]]) -> None:
        self.registry.register(_ServiceCollector(services))

    def track_trainingjobs(self, trainingjobs: Callable[[], Iterable[Mapping[str, Any]]]) -> None:
        self.registry.register(_TrainingJobCollector(trainingjobs))

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serves /metrics in a daemon thread."""
        start_http_server(port, addr=addr, registry=self.registry)

    def sample(self, name: str, labels: Mapping[str, str] | None = None) -> float | None:
        """A current sample value (for tests and debugging)."""
        return self.registry.get_sample_value(name, dict(labels or {}))
