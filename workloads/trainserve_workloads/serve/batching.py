"""Dynamic batching: concurrent requests share one model call.

Requests queue up; one drain task takes up to ``max_batch_size`` of them (after waiting up to
``wait_timeout_s`` for more, if set), calls the model once on all their rows, and hands each caller its
slice. With a wait of 0 a lone request goes straight through, and under load the requests that arrived
during one model call form the next batch. A model slower than ``offload_above_s`` per call runs in a
thread, so the event loop keeps reading and parsing requests while it computes.

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
        self._full = asyncio.Event()
        self._drainer: asyncio.Task[None] | None = None

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        """The model's output for ``rows``, computed together with whatever else is waiting."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._pending.append((rows, future))
        if len(self._pending) >= self.max_batch_size:
            self._full.set()
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
                    self._full.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), self.wait_timeout_s)
                batch, self._pending = self._pending[: self.max_batch_size], self._pending[self.max_batch_size :]
                await self._run([(rows, f) for rows, f in batch if not f.done()])
        finally:
            self._draining = False

    async def _run(self, batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]) -> None:
        if not batch:
            return
        rows = self._rows(batch)
        try:
            outputs = await asyncio.to_thread(self.predict, rows) if self.offload else self.predict(rows)
        except Exception as err:  # every caller of the batch learns why
            self._fail(batch, err)
            return
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
