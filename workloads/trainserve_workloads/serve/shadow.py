"""Shadow evaluation: a candidate scores requests the primary has already answered, in the background.

The client only ever gets the primary's answer. After it, a sampled share of the requests goes to the candidate's
own batch queue on a task of its own, and the replica counts whether the two agree and how long the candidate took.
The work is bounded: while the candidate holds ``max_in_flight`` requests, further ones are dropped (and counted)
rather than queued, so a slower candidate costs the primary at most its share of the replica, never a growing queue.

As Istio's mirroring (a share of live requests, out of band of the primary's path: istio.io/docs/tasks/
traffic-management/mirroring) and Seldon Core's shadow deployments (the shadow's answer discarded: docs.seldon.ai,
seldon-core-1 tutorials/notebooks/ambassador_shadow), but inside the replica that already holds both models, so the
request is neither sent nor parsed twice, and the two answers can be compared.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import numpy as np

log = logging.getLogger("trainserve.serve")


class ShadowTally(Protocol):
    def count_shadow(self, label: str, started: float, rows: int, agreed: int, error: bool) -> None: ...

    def count_shadow_dropped(self, label: str) -> None: ...


def agreeing_rows(task: str | None, primary: np.ndarray, candidate: np.ndarray, tolerance: float) -> int:
    """Rows on which the candidate agrees with the primary: the same class for a classifier (``task`` from the model
    card: ``classification`` by argmax, ``binary`` by the 0.5 threshold), else every output within ``tolerance``
    (relative to the primary's output, absolute below 1). Outputs of another shape agree nowhere."""
    if primary.shape != candidate.shape:
        return 0
    if primary.ndim == 1:
        primary, candidate = primary[:, None], candidate[:, None]
    width = primary.shape[-1]
    if task == "classification" or (task is None and width > 1):
        return int(np.count_nonzero(primary.argmax(axis=-1) == candidate.argmax(axis=-1)))
    if task == "binary":
        return int(np.count_nonzero(((primary >= 0.5) == (candidate >= 0.5)).all(axis=-1)))
    bound = tolerance * np.maximum(1.0, np.abs(primary))
    return int(np.count_nonzero((np.abs(candidate - primary) <= bound).all(axis=-1)))


class ShadowScorer:
    """Offers the candidate ``percent`` of the requests the primary answered; see the module docstring."""

    def __init__(
        self,
        run_batch: Callable[[np.ndarray], Awaitable[np.ndarray]],
        label: str,
        card: dict[str, Any],
        counts: ShadowTally,
        *,
        percent: int,
        tolerance: float,
        max_in_flight: int,
    ):
        self.run_batch = run_batch
        self.label = label
        self.task = card.get("task")
        self.counts = counts
        self.percent = percent
        self.tolerance = tolerance
        self.max_in_flight = max_in_flight
        self.in_flight: set[asyncio.Task[None]] = set()  # held, so a running scoring is not garbage-collected

    def offer(self, rows: np.ndarray, answered: np.ndarray) -> None:
        """After the primary ``answered`` ``rows``: maybe score them with the candidate, never waiting for it."""
        if self.percent < 100 and random.random() * 100 >= self.percent:
            return
        if len(self.in_flight) >= self.max_in_flight:
            self.counts.count_shadow_dropped(self.label)
            return
        task = asyncio.get_running_loop().create_task(self._score(rows, answered))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _score(self, rows: np.ndarray, answered: np.ndarray) -> None:
        await asyncio.sleep(0)  # the primary's response goes out first
        started = time.perf_counter()
        try:
            scored = await self.run_batch(rows)
        except Exception:
            log.warning("the shadow candidate %s failed on a request", self.label, exc_info=True)
            self.counts.count_shadow(self.label, started, len(rows), 0, error=True)
            return
        agreed = agreeing_rows(self.task, answered, scored, self.tolerance)
        self.counts.count_shadow(self.label, started, len(rows), agreed, error=False)

    def stop(self) -> None:
        """Cancel scorings under way (the candidate is being replaced)."""
        for task in list(self.in_flight):
            task.cancel()
