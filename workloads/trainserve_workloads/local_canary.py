"""Automatic canary promotion for `trainserve local serve`: the operator's decision on local figures.

The same :func:`trainserve.plans.modelservice.plan_service` decides, from the same stats endpoint, with the same
step bookkeeping (:class:`trainserve.controllers.canary_windows.CanaryWindows`); only the models are the ones resolved from
the local state folder, and changes go to the local Serve application instead of a RayService.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from typing import Any

from trainserve.api.figures import Figures
from trainserve.api.modelservice import ModelService
from trainserve.api.serving import ModelTarget, ServeAppArgs, serve_args
from trainserve.controllers.canary_windows import CanaryWindows
from trainserve.plans.common import Transition
from trainserve.plans.modelservice import RayServiceView, ServiceObserved, plan_service
from trainserve.servingstats import StatsUnavailable, fetch_snapshot

from .local_serve import LocalService

_RUNNING = RayServiceView("local", True, "RUNNING", "", True, 1, 1)


class LocalPromoter:
    """Moves a local canary along: call :meth:`tick` now and then (it says when next)."""

    def __init__(self, service: ModelService, running: LocalService, args: ServeAppArgs):
        self.service = service
        self.running = running
        self.primary = args.primary
        self.canary: ModelTarget | None = args.canary
        self.applied = args
        self.body: dict[str, Any] = service.model_dump(mode="json", by_alias=True, exclude_none=True)
        self.body["metadata"] = {"namespace": "local", "generation": 1, **self.body.get("metadata", {})}
        self.windows = CanaryWindows()
        self.stats_url = f"{running.url}/v2/models/{args.model_name}/stats"

    async def _figures(self, _uri: str) -> Figures | None:
        if self.canary is None:
            return None
        try:
            snapshot = await fetch_snapshot(self.stats_url)
        except StatsUnavailable:
            return None
        return snapshot.for_uri(self.canary.uri) or Figures()

    def tick(self, now: datetime | None = None) -> tuple[list[Transition], float | None]:
        """One look at the figures; returns the Events of what changed and seconds until the next look."""
        window, wait = asyncio.run(self.windows.window("local", self.body, self._figures))
        result = plan_service(
            ServiceObserved(
                body=copy.deepcopy(self.body),
                trainingjobs={},
                rayservice=_RUNNING,
                kuberay_installed=True,
                now=now or datetime.now(UTC),
                canary_window=window,
                on_cluster=False,
            )
        )
        self.body["status"] = result.status.to_wire()
        wanted = self._args(result.status.to_wire())
        if wanted != self.applied:
            self.running.update(wanted)
            self.applied = wanted
        waits = [w for w in (result.requeue_after, wait) if w is not None]
        return result.events, min(waits) if waits else None

    def _args(self, status: dict[str, Any]) -> ServeAppArgs:
        """The local application for the plan's decision: locally resolved models, the planned share."""
        if status.get("promoted") and self.canary is not None:
            return serve_args(self.service, self.canary, None)
        canary = status.get("canary") or {}
        if self.canary is None or "trafficPercent" not in canary:
            return self.applied
        return serve_args(self.service, self.primary, self.canary, int(canary["trafficPercent"]))
