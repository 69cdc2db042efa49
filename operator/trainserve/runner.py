"""Runs the operator: Kopf with the TrainingJob controller, and the metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kopf

from trainserve.controller import TrainingJobController
from trainserve.handlers import trainingjob
from trainserve.kube import KubeApi
from trainserve.metrics import OperatorMetrics
from trainserve.settings import OperatorSettings

log = logging.getLogger("trainserve.operator")


class Operator:
    """One operator instance: its own Kopf registry, API client, controller and metrics (tests run several)."""

    def __init__(self, settings: OperatorSettings):
        self.settings = settings
        self.registry = kopf.OperatorRegistry()
        self.api = KubeApi.from_settings(settings)
        self.metrics = OperatorMetrics()
        self.trainingjobs = TrainingJobController(self.api, settings, self.metrics)
        trainingjob.register(self.registry, self.trainingjobs, settings)

    async def run(
        self,
        *,
        stop_flag: asyncio.Event | threading.Event | None = None,
        ready_flag: asyncio.Event | threading.Event | None = None,
    ) -> None:
        settings = self.settings
        if settings.metrics_port:
            self.metrics.serve(settings.metrics_port)
            log.info("metrics on :%d/metrics", settings.metrics_port)
        kwargs: dict[str, Any] = (
            {"clusterwide": True} if settings.all_namespaces else {"namespaces": settings.namespaces}
        )
        try:
            await kopf.operator(
                registry=self.registry,
                standalone=settings.standalone,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
                **kwargs,
            )
        finally:
            self.api.close()


def run(settings: OperatorSettings, verbose: bool = False) -> None:
    """``trainserve run``: blocks until the operator is stopped (SIGINT/SIGTERM)."""
    if not settings.all_namespaces and not settings.namespaces:
        raise SystemExit("trainserve run: give --namespace NS (repeatable) or --all-namespaces")
    trainingjob.configure_logging(settings.log_format, verbose)
    asyncio.run(Operator(settings).run())
