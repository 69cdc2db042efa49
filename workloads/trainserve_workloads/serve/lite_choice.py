"""Whether a served model moves to TensorFlow Lite, and what the replica reports about it.

The two calls are timed interleaved (TensorFlow, Lite, Lite, TensorFlow, ...) and compared by their fastest call at
each probe size: on a busy machine other processes only ever add time, so the minimum of calls made side by side
is the fair estimate of each, where one median after the other measured whatever the machine did meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: The sizes the calls are timed at: one row, and a full batch at the default ``batching.maxBatchSize``.
TIMED_ROWS = (1, 32)
#: Interleaved timing rounds per size (each round calls both ways once).
TIMED_ROUNDS = 15

OFF = "off"  # runtime: tensorflow
CONVERTING = "converting"
SWITCHED = "switched"
KEPT_TENSORFLOW = "kept_tensorflow"  # converted, but slower or answering differently
NOT_CONVERTIBLE = "not_convertible"
FAILED = "failed"  # timed out, or the converter died: TensorFlow serves the model

Call = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class LiteDecision:
    """Where the move to TensorFlow Lite stands; ``seconds`` from the start of the load to the decision."""

    state: str
    reason: str
    seconds: float | None = None
    timings: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        seconds = None if self.seconds is None else round(self.seconds, 2)
        return {"state": self.state, "reason": self.reason, "seconds": seconds, "timings": self.timings}


def _seconds(call: Call, rows: np.ndarray) -> float:
    started = time.perf_counter()
    call(rows)
    return time.perf_counter() - started


def time_interleaved(
    lite: Call, tensorflow: Call, batches: list[np.ndarray], rounds: int = TIMED_ROUNDS
) -> dict[str, dict[str, float]]:
    """Per batch size, the fastest call of each way in milliseconds; the calls alternate, in alternating order."""
    timings = {}
    for rows in batches:
        lite(rows)  # warm-up: the interpreter resizes to a new shape
        tensorflow(rows)
        best = {"tensorflowLiteMs": float("inf"), "tensorflowMs": float("inf")}
        for index in range(rounds):
            pair = [("tensorflowLiteMs", lite), ("tensorflowMs", tensorflow)]
            for key, call in pair if index % 2 == 0 else reversed(pair):
                best[key] = min(best[key], _seconds(call, rows) * 1000.0)
        timings[_size_label(len(rows))] = {key: round(ms, 4) for key, ms in best.items()}
    return timings


def _size_label(rows: int) -> str:
    return "1 row" if rows == 1 else f"{rows} rows"


def timed_batches(n_features: int) -> list[np.ndarray]:
    random = np.random.default_rng(1)
    return [random.random((rows, n_features), dtype=np.float32) for rows in TIMED_ROWS]


def decide(timings: dict[str, dict[str, float]], seconds: float) -> LiteDecision:
    """Switch when TensorFlow Lite's fastest call beats TensorFlow's at every timed size."""
    slower = [size for size, t in timings.items() if t["tensorflowLiteMs"] >= t["tensorflowMs"]]
    if slower:
        reason = f"TensorFlow Lite was not faster at {', '.join(slower)} (fastest of {TIMED_ROUNDS} interleaved calls)"
        return LiteDecision(KEPT_TENSORFLOW, reason, seconds, timings)
    reason = f"TensorFlow Lite was faster at {', '.join(timings)} (fastest of {TIMED_ROUNDS} interleaved calls)"
    return LiteDecision(SWITCHED, reason, seconds, timings)
