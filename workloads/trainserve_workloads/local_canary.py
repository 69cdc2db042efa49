"""Automatic canary promotion for `trainserve local serve`: the operator's decision on local figures.

The same :func:`trainserve.plans.modelservice.plan_service` decides, from the same stats endpoint, with the same
step bookkeeping (:class:`trainserve.controllers.canary_windows.CanaryWindows`); only the models are the ones resolved from
the local state folder, and changes go to the local Serve application instead of a RayService. With
``fromTrainingJob.rollout: canary`` it reads the local TrainingJob at each look, so a new version from
`trainserve local train` goes through the same canary steps as on a cluster.
"""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trainserve.api.figures import Figures
from trainserve.api.modelservice import CanaryMode, ModelService
from trainserve.api.serving import ModelTarget, ServeAppArgs, serve_args
from trainserve.controllers.canary_windows import CanaryWindows
from trainserve.localstate import load_job
from trainserve.plans.common import Transition
from trainserve.plans.modelservice import RayServiceView, ServiceObserved, plan_service
from trainserve.servingstats import StatsUnavailable, fetch_snapshot

from .local_serve import LocalService

_RUNNING = RayServiceView("local", True, "RUNNING", "", True, 1, 1)


class LocalPromoter:
    """Moves a local canary along: call :meth:`tick` now and then (it says when next)."""

    def __init__(
        self, service: ModelService, running: LocalService, args: ServeAppArgs, state_root: Path | None = None
    ):
        self.service = service
        source = service.spec.model.from_training_job
        #: The local TrainingJob whose new versions enter as canaries (``rollout: canary``), and where it lives.
        self.job = source.name if source is not None and source.rollout == "canary" else None
        self.state_root = state_root
        self.running = running
        self.primary = args.primary
        self.canary: ModelTarget | None = args.canary
        self.applied = args
        self.body: dict[str, Any] = service.model_dump(mode="json", by_alias=True, exclude_none=True)
        self.body["metadata"] = {"namespace": "local", "generation": 1, **self.body.get("metadata", {})}
        self.windows = CanaryWindows()
        self.stats_url = f"{running.url}/v2/models/{args.model_name}/stats"

    async def _figures(self, uri: str) -> Figures | None:
        if self.job is None:
            if self.canary is None:
                return None
            uri = self.canary.uri  # resolved locally: an output folder given as canary names its newest version
        try:
            snapshot = await fetch_snapshot(self.stats_url)
        except StatsUnavailable:
            return None
        return snapshot.for_uri(uri) or Figures()

    def _trainingjobs(self) -> dict[str, dict[str, Any]]:
        """The local TrainingJob the versions come from, as the plan reads a cluster's."""
        job = load_job(self.state_root, self.job) if self.job is not None and self.state_root is not None else None
        return {job.metadata.name or "": job.model_dump(mode="json", by_alias=True, exclude_none=True)} if job else {}

    def tick(self, now: datetime | None = None) -> tuple[list[Transition], float | None]:
        """One look at the figures; returns the Events of what changed and seconds until the next look."""
        window, wait = asyncio.run(self.windows.window("local", self.body, self._figures))
        result = plan_service(
            ServiceObserved(
                body=copy.deepcopy(self.body),
                trainingjobs=self._trainingjobs(),
                rayservice=_RUNNING,
                kuberay_installed=True,
                now=now or datetime.now(UTC),
                canary_window=window,
                on_cluster=False,
            )
        )
        self.body["status"] = result.status.to_wire()
        wanted = (
            result.args if self.job is not None and result.args is not None else self._args(result.status.to_wire())
        )
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
        shadow = canary.get("mode") == "shadow" and canary.get("state") != "RolledBack"  # a rolled-back shadow stops
        mode: CanaryMode = "shadow" if shadow else "split"
        return serve_args(self.service, self.primary, self.canary, int(canary["trafficPercent"]), mode)
