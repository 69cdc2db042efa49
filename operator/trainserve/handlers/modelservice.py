"""Kopf handlers for ModelServices: watch them, their RayServices and NetworkPolicies, feed the controller.

As for TrainingJobs, only ``kopf.on.event``: no finalizers, no Kopf annotations, no writes of Kopf's own.
"""

from __future__ import annotations

from typing import Any

import kopf

from trainserve.api.base import GROUP, VERSION
from trainserve.controllers.modelservice import ModelServiceController
from trainserve.kube import MODELSERVICES, RAY_GROUP, RAY_VERSION, RAYSERVICES
from trainserve.naming import MODELSERVICE_LABEL


def register(registry: kopf.OperatorRegistry, controller: ModelServiceController) -> None:
    """Adds the ModelService handlers to ``registry``."""

    @kopf.on.startup(registry=registry)
    async def start(**_: Any) -> None:
        await controller.start()

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        await controller.stop()

    @kopf.on.event(GROUP, VERSION, MODELSERVICES, registry=registry)
    async def modelservice_changed(event: kopf.RawEvent, **_: Any) -> None:
        controller.observe_modelservice(event.get("type"), dict(event["object"]))

    @kopf.on.event(RAY_GROUP, RAY_VERSION, RAYSERVICES, labels={MODELSERVICE_LABEL: kopf.PRESENT}, registry=registry)
    async def rayservice_changed(event: kopf.RawEvent, **_: Any) -> None:
        controller.observe_rayservice(event.get("type"), dict(event["object"]))

    @kopf.on.event(
        "networking.k8s.io", "v1", "networkpolicies", labels={MODELSERVICE_LABEL: kopf.PRESENT}, registry=registry
    )
    async def network_policy_changed(event: kopf.RawEvent, **_: Any) -> None:
        controller.observe_network_policy(event.get("type"), dict(event["object"]))
