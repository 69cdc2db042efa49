"""Dynamic batching: concurrent requests share one model call.

Requests queue up; one drain task takes up to ``max_batch_size`` of them (after waiting up to
``wait_timeout_s`` for more, if set), calls the model once on all their rows, and hands each caller its
slice. With a wait of 0 a lone request goes straight through, and under load the requests that arrived
during one model call form the next batch. A model slower than ``offload_above_s`` per call runs in a
thread, so the event loop keeps reading and parsing requests while it computes.

An offloaded model's batch also regathers. The callers a call just answered tend to send their next request within a
round trip, so the next batch may wait until as many requests queue as the last call answered plus those that queued
meanwhile; it starts at the latest ``REGATHER_FRACTION`` of that call's time after the call ended, and never more
than ``REGATHER_MAX_S`` after. Without it the connections split into two halves whose batches take turns, and a slow
model's call costs nearly as much for half the rows as for all of them (figures:
docs/performance.md#serving-regathering-a-slow-models-batch). A lone client never waits (its target is its own
request), nor does a request that comes after that moment.

Our own rather than ``serve.batch``: it hands off without timers or queues (a loop callback per burst for
fast models, a task for offloaded or waiting ones, a lock-free list), which is most of the difference at low
concurrency, and it can overlap parsing with compute.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]
REGATHER_FRACTION = 0.5  # of the last offloaded call's time: how long after it the next batch may wait to regather
REGATHER_MAX_S = 0.01  # and never longer: the clients' round trip does not grow with the model's time


class DynamicBatcher:
    def __init__(
        self,
        predict: Predict,
        max_batch_size: int,
        wait_timeout_s: float = 0.0,
        *,
        offload: bool = False,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.wait_timeout_s = wait_timeout_s
        self.offload = offload
        self.on_batch = on_batch or (lambda size: None)
        self._pending: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = []
        self._draining = False
        self._enough_queued = asyncio.Event()  # set once `_wanted` requests are queued (a full batch, or a regather)
        self._wanted = max_batch_size
        self._regather_size = 0  # requests the next offloaded batch waits for (the last call's and its queue)
        self._regather_until = 0.0  # loop time
        self._drainer: asyncio.Task[None] | None = None

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        """The model's output for ``rows``, computed together with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((rows, future))
        if len(self._pending) >= self._wanted:
            self._enough_queued.set()
        if not self._draining:
            self._draining = True
            if self.offload or self.wait_timeout_s > 0:
                self._drainer = loop.create_task(self._drain())
            else:  # two loop turns later, as the task below would: requests the loop has already read join
                loop.call_soon(loop.call_soon, self._drain_inline)
        return await future

    def _drain_inline(self) -> None:
        """A fast model with no wait: run what queued up, right here in a loop callback (no task, no await);
        nothing can arrive while it computes, so one pass empties the queue."""
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch_size], self._pending[self.max_batch_size :]
                live = [(rows, f) for rows, f in batch if not f.done()]
                if live:
                    try:
                        outputs = self.predict(self._rows(live))
                    except Exception as err:  # every caller of the batch learns why
                        self._fail(live, err)
                    else:
                        self._deliver(live, outputs)
        finally:
            self._draining = False

    async def _drain(self) -> None:
        """Runs batches until nothing waits; a task of its own, so a cancelled caller cannot stall others."""
        try:
            await asyncio.sleep(0)  # requests the loop has already read join this batch
            while self._pending:
                if self.wait_timeout_s > 0 and len(self._pending) < self.max_batch_size:
                    await self._gather(self.max_batch_size, self.wait_timeout_s)
                elif self.offload and len(self._pending) < self._regather_size:
                    left = self._regather_until - asyncio.get_running_loop().time()
                    if left > 0:
                        await self._gather(self._regather_size, left)
                batch, self._pending = self._pending[: self.max_batch_size], self._pending[self.max_batch_size :]
                await self._run([(rows, f) for rows, f in batch if not f.done()])
        finally:
            self._draining = False

    async def _gather(self, wanted: int, timeout: float) -> None:
        """Wait until ``wanted`` requests are queued, or ``timeout`` seconds."""
        self._wanted = wanted
        self._enough_queued.clear()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._enough_queued.wait(), timeout)
        finally:
            self._wanted = self.max_batch_size

    async def _run(self, batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]) -> None:
        if not batch:
            return
        rows = self._rows(batch)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            outputs = await asyncio.to_thread(self.predict, rows) if self.offload else self.predict(rows)
        except Exception as err:  # every caller of the batch learns why
            self._fail(batch, err)
            return
        if self.offload:
            self._regather_size = min(self.max_batch_size, len(batch) + len(self._pending))
            ended = loop.time()
            self._regather_until = ended + min(REGATHER_FRACTION * (ended - started), REGATHER_MAX_S)
        self._deliver(batch, outputs)

    @staticmethod
    def _rows(batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]) -> np.ndarray:
        return batch[0][0] if len(batch) == 1 else np.concatenate([r for r, _ in batch])

    @staticmethod
    def _fail(batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]], err: Exception) -> None:
        for _, future in batch:
            if not future.done():
                future.set_exception(err)

    def _deliver(self, batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]], outputs: np.ndarray) -> None:
        self.on_batch(len(batch))
        if len(batch) == 1:
            if not batch[0][1].done():
                batch[0][1].set_result(outputs)
            return
        sizes = [len(rows) for rows, _ in batch]
        for (_, future), part in zip(batch, np.split(outputs, np.cumsum(sizes)[:-1]), strict=True):
            if not future.done():
                future.set_result(part)
