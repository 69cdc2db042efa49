"""Kopf handlers for TrainingJobs: watch the jobs and their RayJobs, feed the controller; nothing else.

Only ``kopf.on.event`` handlers are used: Kopf keeps no per-object progress or diff-base annotations for
them and adds no finalizers, so the operator's only writes are the controller's own (children, status,
Events). Resync is the controller's timer, not one Kopf timer per object (which would need finalizers).
"""

from __future__ import annotations

from typing import Any

import kopf

from trainserve.api.base import GROUP, VERSION
from trainserve.controllers.trainingjob import TrainingJobController
from trainserve.kube import RAY_GROUP, RAY_VERSION, RAYJOBS, TRAININGJOBS
from trainserve.naming import TRAININGJOB_LABEL


def register(registry: kopf.OperatorRegistry, controller: TrainingJobController) -> None:
    """Adds the TrainingJob handlers to ``registry``."""

    @kopf.on.startup(registry=registry)
    async def start(**_: Any) -> None:
        await controller.start()

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        await controller.stop()

    @kopf.on.event(GROUP, VERSION, TRAININGJOBS, registry=registry)
    async def trainingjob_changed(event: kopf.RawEvent, **_: Any) -> None:
        controller.observe_trainingjob(event.get("type"), dict(event["object"]))

    @kopf.on.event(RAY_GROUP, RAY_VERSION, RAYJOBS, labels={TRAININGJOB_LABEL: kopf.PRESENT}, registry=registry)
    async def rayjob_changed(event: kopf.RawEvent, **_: Any) -> None:
        controller.observe_rayjob(event.get("type"), dict(event["object"]))
