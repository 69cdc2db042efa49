"""Dynamic batching on its own (asyncio, no Ray): requests share model calls and get their own rows back."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from trainserve_workloads.serve.batching import DynamicBatcher


class Model:
    """Doubles its input; records the size of every call."""

    def __init__(self, seconds: float = 0.0, fail: bool = False):
        self.calls: list[int] = []
        self.seconds = seconds
        self.fail = fail

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(len(rows))
        if self.seconds:
            time.sleep(self.seconds)
        if self.fail:
            raise ValueError("model broke")
        return rows * 2


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def test_concurrent_requests_share_a_call_and_each_gets_its_rows() -> None:
    model = Model()
    sizes: list[int] = []

    async def scenario() -> list[np.ndarray]:
        batcher = DynamicBatcher(model, max_batch_size=8, on_batch=sizes.append)
        requests = [np.full((i % 3 + 1, 2), float(i)) for i in range(5)]
        return await asyncio.gather(*(batcher(r) for r in requests))

    results = run(scenario())
    assert model.calls == [1 + 2 + 3 + 1 + 2]  # one call for the five requests
    assert sizes == [5]
    for i, result in enumerate(results):
        np.testing.assert_array_equal(result, np.full((i % 3 + 1, 2), float(i) * 2))


def test_batches_never_exceed_the_maximum() -> None:
    model = Model()

    async def scenario() -> None:
        batcher = DynamicBatcher(model, max_batch_size=4)
        await asyncio.gather(*(batcher(np.ones((1, 1))) for _ in range(10)))

    run(scenario())
    assert model.calls == [4, 4, 2]


def test_a_lone_request_does_not_wait_with_a_zero_timeout_but_waits_to_fill_otherwise() -> None:
    async def timed(wait: float) -> float:
        batcher = DynamicBatcher(Model(), max_batch_size=8, wait_timeout_s=wait)
        started = time.perf_counter()
        await batcher(np.ones((1, 1)))
        return time.perf_counter() - started

    assert run(timed(0.0)) < 0.02
    assert run(timed(0.1)) >= 0.09


def test_requests_arriving_during_a_slow_offloaded_call_form_the_next_batch() -> None:
    model = Model(seconds=0.05)

    async def scenario() -> None:
        batcher = DynamicBatcher(model, max_batch_size=32, offload=True)
        first = asyncio.ensure_future(batcher(np.ones((1, 1))))
        await asyncio.sleep(0.01)  # the first call is running in its thread now
        later = [batcher(np.ones((1, 1))) for _ in range(6)]
        await asyncio.gather(first, *later)

    run(scenario())
    assert model.calls == [1, 6]


def test_a_failing_model_fails_every_caller_of_the_batch_and_the_next_batch_works() -> None:
    model = Model(fail=True)

    async def scenario() -> np.ndarray:
        batcher = DynamicBatcher(model, max_batch_size=8)
        outcomes = await asyncio.gather(*(batcher(np.ones((1, 1))) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(o, ValueError) for o in outcomes)
        model.fail = False
        return await batcher(np.ones((1, 1)))

    np.testing.assert_array_equal(run(scenario()), [[2.0]])


def test_a_cancelled_caller_does_not_stall_the_others() -> None:
    model = Model(seconds=0.02)

    async def scenario() -> list[np.ndarray]:
        batcher = DynamicBatcher(model, max_batch_size=2, offload=True)
        doomed = asyncio.ensure_future(batcher(np.ones((1, 1))))
        others = [asyncio.ensure_future(batcher(np.full((1, 1), 3.0))) for _ in range(3)]
        await asyncio.sleep(0)
        doomed.cancel()
        return await asyncio.wait_for(asyncio.gather(*others), 2)

    results = run(scenario())
    assert [float(r[0, 0]) for r in results] == [6.0, 6.0, 6.0]


@pytest.mark.parametrize("size", [1, 7])
def test_rows_of_several_requests_keep_their_order(size: int) -> None:
    async def scenario() -> list[np.ndarray]:
        batcher = DynamicBatcher(Model(), max_batch_size=16)
        return await asyncio.gather(
            *(batcher(np.arange(size * k, size * (k + 1)).reshape(size, 1).astype(float)) for k in range(6))
        )

    for k, result in enumerate(run(scenario())):
        np.testing.assert_array_equal(result[:, 0], np.arange(size * k, size * (k + 1)) * 2)


async def clients(batcher: DynamicBatcher, count: int, calls: int, round_trip: float) -> list[float]:
    """``count`` clients that each send ``calls`` requests one after the other, ``round_trip`` apart; the
    first starts alone, the others 5 ms later. Returns every request's latency."""
    latencies: list[float] = []

    async def client(delay: float) -> None:
        await asyncio.sleep(delay)
        for _ in range(calls):
            started = time.perf_counter()
            await batcher(np.ones((1, 1)))
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(round_trip)

    await asyncio.gather(*(client(0.0 if k == 0 else 0.005) for k in range(count)))
    return latencies


def test_an_offloaded_batch_regathers_the_clients_it_just_answered() -> None:
    """One client ahead of seven others: without regathering, a batch of 1 and one of 7 take turns for good."""
    model = Model(seconds=0.03)

    async def scenario() -> None:
        batcher = DynamicBatcher(model, max_batch_size=32, offload=True)
        await clients(batcher, count=8, calls=12, round_trip=0.002)

    run(scenario())
    assert model.calls[0] == 1
    assert model.calls[-7:-1] == [8] * 6, model.calls  # the first client, one call ahead, ends first


def test_a_lone_client_never_waits_to_regather() -> None:
    model = Model(seconds=0.03)

    async def scenario() -> list[float]:
        batcher = DynamicBatcher(model, max_batch_size=32, offload=True)
        return await clients(batcher, count=1, calls=8, round_trip=0.002)

    latencies = sorted(run(scenario()))
    assert model.calls == [1] * 8
    assert latencies[len(latencies) // 2] < 0.03 + 0.006, latencies  # the call and a thread hand-off; a wait adds 10 ms


@pytest.mark.parametrize(("call", "longest_wait"), [(0.012, 0.006), (0.1, 0.01)])
def test_a_regathering_batch_waits_at_most_half_a_call_and_10_ms(call: float, longest_wait: float) -> None:
    """After a batch of 8, a lone request waits for the others at most half the last call's time and at most
    10 ms; a request that comes later than that does not wait at all."""
    model = Model(seconds=call)

    async def scenario() -> tuple[float, float]:
        batcher = DynamicBatcher(model, max_batch_size=32, offload=True)
        await asyncio.gather(*(batcher(np.ones((1, 1))) for _ in range(8)))
        started = time.perf_counter()
        await batcher(np.ones((1, 1)))  # straight after: the other seven do not come back
        soon = time.perf_counter() - started
        await asyncio.sleep(0.08)  # later than the longest wait
        started = time.perf_counter()
        await batcher(np.ones((1, 1)))
        return soon, time.perf_counter() - started

    soon, later = run(scenario())
    assert model.calls == [8, 1, 1]
    assert call + 0.8 * longest_wait < soon < call + longest_wait + 0.03, soon  # it waited, no longer than allowed
    assert later < call + 0.03, later
