"""Whether a served model moves to TensorFlow Lite, on how many interpreter threads, and what the replica reports
about it.

Two calls are timed interleaved (a turn of one, a turn of the other, the order alternating by round) and compared by
their fastest call at each probe size: on a busy machine other processes only ever add time, so the minimum of calls
made side by side is the fair estimate of each, where one median after the other measured whatever the machine did
meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The sizes the calls are timed at: one row, and a full batch at the default ``batching.maxBatchSize``.
TIMED_ROWS = (1, 32)
#: Interleaved timing rounds per size (each round gives each way one turn).
TIMED_ROUNDS = 15
#: Calls of one way in a row in each round; the first is not timed.
CALLS_PER_TURN = 3
#: How much faster at every timed size an interpreter of several threads must be to be used instead of one
#: thread: between calls its pool's threads spin on the cores the replica's event loop and the proxy need, which
#: the call's own time does not show (figures: docs/performance.md#interpreter-threads).
SEVERAL_THREADS_GAIN = 0.25

OFF = "off"  # runtime: tensorflow
CONVERTING = "converting"
SWITCHED = "switched"
KEPT_TENSORFLOW = "kept_tensorflow"  # converted, but slower or answering differently
NOT_CONVERTIBLE = "not_convertible"
FAILED = "failed"  # timed out, or the converter died: TensorFlow serves the model

Call = Callable[[np.ndarray], Any]
#: The keys of the TensorFlow Lite against TensorFlow timings (``LiteDecision.timings``).
LITE_MS, TENSORFLOW_MS = "tensorflowLiteMs", "tensorflowMs"


@dataclass(frozen=True)
class LiteDecision:
    """Where the move to TensorFlow Lite stands; ``seconds`` from the start of the load to the decision."""

    state: str
    reason: str
    seconds: float | None = None
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    threads: ThreadChoice | None = None  # the interpreter's threads, when it was converted

    def to_dict(self) -> dict[str, Any]:
        seconds = None if self.seconds is None else round(self.seconds, 2)
        reported = {"state": self.state, "reason": self.reason, "seconds": seconds, "timings": self.timings}
        if self.threads is not None:
            reported["threads"] = self.threads.to_dict()
        return reported


@dataclass(frozen=True)
class ThreadChoice:
    """How many threads the interpreter runs on, and the timings (one thread against the CPU share's) behind it."""

    chosen: int
    timings: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.chosen, "timings": self.timings}


def _seconds(call: Call, rows: np.ndarray) -> float:
    started = time.perf_counter()
    call(rows)
    return time.perf_counter() - started


def time_interleaved(
    calls: dict[str, Call], batches: list[np.ndarray], rounds: int = TIMED_ROUNDS
) -> dict[str, dict[str, float]]:
    """Per batch size, the fastest call of each of two ways in milliseconds, keyed as ``calls``.

    Each round calls one way ``CALLS_PER_TURN`` times, then the other (the order alternating), and keeps all but
    the first call of a turn: the way called before leaves its pool threads spinning for a while, which slows the
    next call of the other way by as much as twice (docs/performance.md#interpreter-threads).
    """
    timings = {}
    for rows in batches:
        for call in calls.values():
            call(rows)  # warm-up: an interpreter resizes to a new shape
        best = dict.fromkeys(calls, float("inf"))
        pair = list(calls.items())
        for index in range(rounds):
            for key, call in pair if index % 2 == 0 else reversed(pair):
                call(rows)
                for _ in range(CALLS_PER_TURN - 1):
                    best[key] = min(best[key], _seconds(call, rows) * 1000.0)
        timings[_size_label(len(rows))] = {key: round(ms, 4) for key, ms in best.items()}
    return timings


def several_threads_pay(timings: dict[str, dict[str, float]], one: str, several: str) -> bool:
    """Whether the interpreter of several threads was ``SEVERAL_THREADS_GAIN`` faster than one thread at every
    timed size."""
    return all(t[several] <= t[one] * (1 - SEVERAL_THREADS_GAIN) for t in timings.values())


def _size_label(rows: int) -> str:
    return "1 row" if rows == 1 else f"{rows} rows"


def timed_batches(n_features: int) -> list[np.ndarray]:
    random = np.random.default_rng(1)
    return [random.random((rows, n_features), dtype=np.float32) for rows in TIMED_ROWS]


def decide(timings: dict[str, dict[str, float]], seconds: float, threads: ThreadChoice | None = None) -> LiteDecision:
    """Switch when TensorFlow Lite's fastest call beats TensorFlow's at every timed size."""
    slower = [size for size, t in timings.items() if t[LITE_MS] >= t[TENSORFLOW_MS]]
    if slower:
        reason = f"TensorFlow Lite was not faster at {', '.join(slower)} (fastest call of {TIMED_ROUNDS} interleaved turns each)"
        return LiteDecision(KEPT_TENSORFLOW, reason, seconds, timings, threads)
    reason = (
        f"TensorFlow Lite was faster at {', '.join(timings)} (fastest call of {TIMED_ROUNDS} interleaved turns each)"
    )
    if threads is not None:
        reason += f"; {threads.chosen} interpreter thread{'s' if threads.chosen > 1 else ''}"
    return LiteDecision(SWITCHED, reason, seconds, timings, threads)
