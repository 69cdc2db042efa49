"""Operator-wide Kopf wiring: Kopf's own settings, the login, and logging; the kinds' handlers live beside it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import kopf

from trainserve.settings import OperatorSettings


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Adds Kopf's settings and the login handler to ``registry``."""

    operator_settings = settings

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # Events are posted by the controllers, on condition changes only
        settings.watching.server_timeout = 300
        settings.watching.client_timeout = 330
        settings.networking.error_backoffs = UnboundedBackoff(
            operator_settings.retry_base_seconds, operator_settings.retry_max_seconds
        )

    if settings.api_server:

        @kopf.on.login(registry=registry)
        def login(**_: Any) -> kopf.ConnectionInfo:
            assert settings.api_server is not None
            return kopf.ConnectionInfo(server=settings.api_server, insecure=True, default_namespace="default")

    else:
        # Our registry is a plain OperatorRegistry (no implicit logins): log in the way our own API client does,
        # with the in-cluster ServiceAccount, else KUBECONFIG / ~/.kube/config.
        kopf.on.login(registry=registry)(kopf.login_via_client)


class UnboundedBackoff:
    """Kopf's delays between attempts of one API call: doubling from ``base`` to ``cap``, and never giving up.

    Kopf re-raises a call's last failure, and a watcher's failed list then stops the whole operator; an API
    server that answers 5xx for a minute must cost a pause, not a crash loop (client-go's reflectors also
    retry their lists for ever). Re-iterable: Kopf starts a fresh iteration for every call.
    """

    def __init__(self, base: float, cap: float):
        self.base, self.cap = base, max(base, cap)

    def __iter__(self) -> Iterator[float]:
        delay = self.base
        while True:
            yield delay
            delay = min(delay * 2, self.cap)


def configure_logging(log_format: str, verbose: bool = False) -> None:
    """Kopf's logging, as JSON lines or text."""
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL)
    # Kopf logs a line per handled watch event on ``kopf.objects`` (thousands a minute under load): DEBUG only.
    logging.getLogger("kopf.objects").setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
