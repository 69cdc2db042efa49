"""The operator's /metrics answers whatever the cache holds: objects stored with odd fields never fail a scrape."""

from __future__ import annotations

from typing import Any

from prometheus_client import generate_latest

from trainserve.metrics import OperatorMetrics

ODD_JOBS: list[dict[str, Any]] = [
    {"metadata": {"namespace": "ml", "name": "a"}, "status": "garbage"},
    {"metadata": {"namespace": "ml", "name": "b"}, "status": {"phase": "Exploded", "progress": "epoch three"}},
    {"metadata": None, "status": {"phase": "Running", "progress": {"metrics": ["loss", 1]}}},
    {
        "metadata": {"namespace": "ml", "name": "d"},
        "status": {"phase": "Running", "progress": {"metrics": {"loss": 0.5, "ok": True}}},
    },
]


def test_a_scrape_counts_odd_objects_instead_of_failing() -> None:
    metrics = OperatorMetrics()
    metrics.track_trainingjobs(lambda: ODD_JOBS)
    text = generate_latest(metrics.registry).decode()
    assert 'trainserve_trainingjobs{phase="Pending"} 2.0' in text
    assert 'trainserve_trainingjobs{phase="Running"} 2.0' in text
    assert 'trainserve_trainingjob_metric{metric="loss",namespace="ml",trainingjob="d"} 0.5' in text
    assert 'metric="ok"' not in text
