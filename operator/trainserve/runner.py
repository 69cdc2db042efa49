"""Runs the operator: Kopf with the TrainingJob and ModelService controllers, and the metrics endpoint."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException  # type: ignore[import-untyped]

from trainserve.controllers.base import KubeRayProbe
from trainserve.controllers.modelservice import ModelServiceController
from trainserve.controllers.trainingjob import TrainingJobController
from trainserve.handlers import modelservice, operator, trainingjob, workloadpods
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
        self.api.on_retry = lambda status: self.metrics.api_retries.labels(str(status)).inc()
        kuberay = KubeRayProbe(self.api, settings.kuberay_probe_seconds)
        self.trainingjobs = TrainingJobController(self.api, settings, self.metrics, kuberay=kuberay)
        self.modelservices = ModelServiceController(
            self.api, settings, self.trainingjobs.trainingjobs_in, self.metrics, kuberay=kuberay
        )
        self.trainingjobs.listeners.append(self.modelservices.trainingjob_changed)
        operator.register(self.registry, settings)
        trainingjob.register(self.registry, self.trainingjobs)
        modelservice.register(self.registry, self.modelservices)
        workloadpods.register(self.registry, [self.trainingjobs, self.modelservices])
        if settings.peering_name and not settings.standalone:

            @kopf.on.startup(registry=self.registry, backoff=5)
            async def create_peering(**_: Any) -> None:
                await asyncio.to_thread(ensure_peering, self.api, settings)

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
                liveness_endpoint=settings.liveness_endpoint,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
                **peering(settings),
                **kwargs,
            )
        finally:
            self.api.close()


def peering(settings: OperatorSettings) -> dict[str, Any]:
    """Kopf's peering arguments: with a name, peering is mandatory; by default the oldest replica leads.

    Kopf pauses an operator that sees a live peer of higher priority, and pauses *all* peers of equal
    priority, so replicas need distinct priorities: the negated start time makes a new replica (a rolling
    update, a restart) a hot standby that takes over when the leader leaves the peering or stops renewing it.
    """
    if settings.standalone or not settings.peering_name:
        return {}
    priority = settings.peering_priority if settings.peering_priority is not None else -(time.time_ns() // 1000)
    return {"peering_name": settings.peering_name, "priority": priority}


def ensure_peering(api: KubeApi, settings: OperatorSettings) -> None:
    """Creates the peering object(s) Kopf's mandatory peering waits for; existing ones are left alone."""
    scopes: list[str | None] = [None] if settings.all_namespaces else list(settings.namespaces)
    for namespace in scopes:
        kind = "ClusterKopfPeering" if namespace is None else "KopfPeering"
        body = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": settings.peering_name}}
        try:
            if namespace is None:
                api.custom.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)
            else:
                api.custom.create_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", body)
        except ApiException as err:
            if err.status != 409:  # 409: it exists already
                raise


def run(settings: OperatorSettings, verbose: bool = False) -> None:
    """``trainserve run``: blocks until the operator is stopped (SIGINT/SIGTERM)."""
    if not settings.all_namespaces and not settings.namespaces:
        raise SystemExit("trainserve run: give --namespace NS (repeatable) or --all-namespaces")
    operator.configure_logging(settings.log_format, verbose)
    asyncio.run(Operator(settings).run())
