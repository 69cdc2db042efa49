"""Kopf handlers for TrainingJobs: watch the jobs and their RayJobs, feed the controller; nothing else.

Only ``kopf.on.event`` handlers are used: Kopf keeps no per-object progress or diff-base annotations for
them and adds no finalizers, so the operator's only writes are the controller's own (children, status,
Events). Resync is the controller's timer, not one Kopf timer per object (which would need finalizers).
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from trainserve.api.base import GROUP, VERSION
from trainserve.controller import TrainingJobController
from trainserve.kube import RAY_GROUP, RAY_VERSION, RAYJOBS, TRAININGJOBS
from trainserve.naming import TRAININGJOB_LABEL
from trainserve.settings import OperatorSettings


def register(registry: kopf.OperatorRegistry, controller: TrainingJobController, settings: OperatorSettings) -> None:
    """Adds the TrainingJob handlers to ``registry``."""

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # Events are posted by the controller, on transitions only
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.error_backoffs = [1, 2, 5, 10]
        await controller.start()

    @kopf.on.cleanup(registry=registry)
    async def stop(**_: Any) -> None:
        await controller.stop()

    if settings.api_server:

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            assert settings.api_server is not None
            return kopf.ConnectionInfo(server=settings.api_server, insecure=True, default_namespace="default")

    else:
        # Our registry is a plain OperatorRegistry (no implicit logins): log in the way our own API client does,
        # with the in-cluster ServiceAccount, else KUBECONFIG / ~/.kube/config.
        kopf.on.login(registry=registry)(kopf.login_via_client)

    @kopf.on.event(GROUP, VERSION, TRAININGJOBS, registry=registry)
    async def trainingjob_changed(event: kopf.RawEvent, **_: Any) -> None:
        controller.observe_trainingjob(event.get("type"), dict(event["object"]))

    @kopf.on.event(RAY_GROUP, RAY_VERSION, RAYJOBS, labels={TRAININGJOB_LABEL: kopf.PRESENT}, registry=registry)
    async def rayjob_changed(event: kopf.RawEvent, **_: Any) -> None:
        controller.observe_rayjob(event.get("type"), dict(event["object"]))


def configure_logging(log_format: str, verbose: bool = False) -> None:
    """Kopf's logging, as JSON lines or text."""
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
