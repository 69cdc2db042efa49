"""Dynamic batching: concurrent requests share one model call.

Requests queue up; one drain task takes up to ``max_batch_size`` of them (after waiting up to
``wait_timeout_s`` for more, if set), calls the model once on all their rows, and hands each caller its
slice. With a wait of 0 a lone request goes straight through, and under load the requests that arrived
during one model call form the next batch. A model slower than ``offload_above_s`` per call runs in a
thread, so the event loop keeps reading and parsing requests while it computes.

Our own rather than ``serve.batch``: it hands off without timers or queues (one task per burst, a lock-free
list), which is most of the difference at low concurrency, and it can overlap parsing with compute.
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

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        """The model's output for ``rows``, computed together with whatever else is waiting."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, future))
        if len(self._pending) >= self.max_batch_size:
            self._full.set()
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

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
        sizes = [len(rows) for rows, _ in batch]
        rows = batch[0][0] if len(batch) == 1 else np.concatenate([r for r, _ in batch])
        try:
            outputs = await asyncio.to_thread(self.predict, rows) if self.offload else self.predict(rows)
        except Exception as err:  # every caller of the batch learns why
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        self.on_batch(len(batch))
        for (_, future), part in zip(batch, np.split(outputs, np.cumsum(sizes)[:-1]), strict=True):
            if not future.done():
                future.set_result(part)
