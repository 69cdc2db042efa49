"""Operator-wide Kopf wiring: Kopf's own settings, the login, and logging; the kinds' handlers live beside it."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from trainserve.settings import OperatorSettings


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Adds Kopf's settings and the login handler to ``registry``."""

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # Events are posted by the controllers, on condition changes only
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.error_backoffs = [1, 2, 5, 10]

    if settings.api_server:

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            assert settings.api_server is not None
            return kopf.ConnectionInfo(server=settings.api_server, insecure=True, default_namespace="default")

    else:
        # Our registry is a plain OperatorRegistry (no implicit logins): log in the way our own API client does,
        # with the in-cluster ServiceAccount, else KUBECONFIG / ~/.kube/config.
        kopf.on.login(registry=registry)(kopf.login_via_client)


def configure_logging(log_format: str, verbose: bool = False) -> None:
    """Kopf's logging, as JSON lines or text."""
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL)
    # Kopf logs a line per handled watch event on ``kopf.objects`` (thousands a minute under load): DEBUG only.
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
