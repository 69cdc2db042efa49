"""Measuring a canary step: the canary's figures when its step began, and the window since.

Shared by the operator (figures from the serve Service) and `trainserve local serve` (from the local
server); the decision itself is :func:`trainserve.plans.modelservice.plan_service`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from trainserve.api.figures import Figures
from trainserve.plans.canary import canary_step_due

#: Reads the canary's cumulative figures (None when they cannot be read now).
FetchFigures = Callable[[str], Awaitable[Figures | None]]


@dataclass(frozen=True)
class Baseline:
    """The canary's figures when its current step began."""

    uri: str
    share: int
    started: float
    figures: Figures


class CanaryWindows:
    """Baselines per ModelService, in memory: after a restart a step starts over (it waits one more
    interval; it never judges on figures it did not see begin)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.baselines: dict[Hashable, Baseline] = {}

    def forget(self, key: Hashable) -> None:
        self.baselines.pop(key, None)

    async def window(
        self, key: Hashable, body: dict[str, Any], fetch: FetchFigures
    ) -> tuple[Figures | None, float | None]:
        """(the figures since the step began, once ``intervalSeconds`` passed; else None, seconds to wait)."""
        due = canary_step_due(body)
        if due is None:
            self.forget(key)
            return None, None
        uri, share, interval = due
        base = self.baselines.get(key)
        if base is not None and (base.uri, base.share) == (uri, share):
            left = interval - (self.clock() - base.started)
            if left > 0:
                return None, left
        figures = await fetch(uri)
        if figures is None:
            return None, float(interval)
        if base is None or (base.uri, base.share) != (uri, share):
            self.baselines[key] = Baseline(uri, share, self.clock(), figures)
            return None, float(interval)
        return figures.since(base.figures), None
