"""Shadow scoring on its own (asyncio, no Ray): agreement, and a candidate that falls behind is dropped, not queued."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from trainserve_workloads.serve.shadow import ShadowScorer, agreeing_rows


class Tally:
    def __init__(self) -> None:
        self.scored: list[tuple[int, int, bool]] = []
        self.dropped = 0

    def count_shadow(self, label: str, started: float, rows: int, agreed: int, error: bool) -> None:
        self.scored.append((rows, agreed, error))

    def count_shadow_dropped(self, label: str) -> None:
        self.dropped += 1


def test_classifiers_agree_on_the_same_class_whatever_the_probabilities() -> None:
    primary = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]], dtype=np.float32)
    candidate = np.array([[0.6, 0.4], [0.7, 0.3], [0.01, 0.99]], dtype=np.float32)
    assert agreeing_rows("classification", primary, candidate, 0.0) == 2
    assert agreeing_rows(None, primary, candidate, 0.0) == 2  # no card task: several outputs are classes


def test_binary_classifiers_agree_on_the_same_side_of_one_half() -> None:
    primary = np.array([[0.9], [0.4], [0.51]], dtype=np.float32)
    candidate = np.array([[0.6], [0.45], [0.49]], dtype=np.float32)
    assert agreeing_rows("binary", primary, candidate, 0.0) == 2


def test_regressions_agree_within_the_tolerance_relative_above_one() -> None:
    primary = np.array([[0.5], [100.0], [100.0], [0.0]], dtype=np.float32)
    candidate = np.array([[0.505], [100.9], [102.0], [0.02]], dtype=np.float32)
    assert agreeing_rows("regression", primary, candidate, 0.01) == 2
    assert agreeing_rows("regression", primary, candidate, 0.05) == 4


def test_outputs_of_another_shape_agree_nowhere() -> None:
    assert agreeing_rows("classification", np.zeros((2, 3)), np.zeros((2, 4)), 0.0) == 0


def scorer(run_batch, tally: Tally, percent: int = 100, max_in_flight: int = 4) -> ShadowScorer:  # type: ignore[no-untyped-def]
    card = {"task": "classification"}
    return ShadowScorer(run_batch, "2", card, tally, percent=percent, tolerance=0.0, max_in_flight=max_in_flight)


def test_the_candidate_scores_after_the_caller_moved_on_and_its_agreement_is_counted() -> None:
    tally = Tally()
    order: list[str] = []

    async def candidate(rows: np.ndarray) -> np.ndarray:
        order.append("candidate")
        return np.eye(2, dtype=np.float32)[[0, 0]]

    async def scenario() -> None:
        shadow = scorer(candidate, tally)
        shadow.offer(np.zeros((2, 4)), np.eye(2, dtype=np.float32))
        order.append("answered")
        await asyncio.gather(*shadow.in_flight)

    asyncio.run(scenario())
    assert order == ["answered", "candidate"]
    assert tally.scored == [(2, 1, False)]


def test_a_slow_candidate_has_its_excess_dropped_not_queued() -> None:
    tally = Tally()
    release = asyncio.Event()

    async def slow(rows: np.ndarray) -> np.ndarray:
        await release.wait()
        return rows

    async def scenario() -> None:
        shadow = scorer(slow, tally, max_in_flight=3)
        for _ in range(10):
            shadow.offer(np.ones((1, 2)), np.ones((1, 2)))
        assert len(shadow.in_flight) == 3
        release.set()
        await asyncio.gather(*shadow.in_flight)

    asyncio.run(scenario())
    assert tally.dropped == 7 and len(tally.scored) == 3


def test_a_failing_candidate_is_counted_as_an_error() -> None:
    tally = Tally()

    async def broken(rows: np.ndarray) -> np.ndarray:
        raise ValueError("incompatible input")

    async def scenario() -> None:
        shadow = scorer(broken, tally)
        shadow.offer(np.ones((3, 2)), np.ones((3, 2)))
        await asyncio.gather(*shadow.in_flight)

    asyncio.run(scenario())
    assert tally.scored == [(3, 0, True)]


@pytest.mark.parametrize("percent", [25, 75])
def test_the_share_scored_follows_the_percent(percent: int) -> None:
    tally = Tally()

    async def echo(rows: np.ndarray) -> np.ndarray:
        return rows

    async def scenario() -> None:
        shadow = scorer(echo, tally, percent=percent, max_in_flight=10000)
        for _ in range(2000):
            shadow.offer(np.ones((1, 2)), np.ones((1, 2)))
        await asyncio.gather(*shadow.in_flight)

    asyncio.run(scenario())
    assert abs(len(tally.scored) - 20 * percent) < 150
