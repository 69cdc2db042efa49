"""The work queue: one reconcile per key at a time, de-duplicated adds, delayed re-adds and backoff.

Delays are a few hundredths of a second; where timing matters the tests check the order in which keys
come out (timers fire in order of their deadline), not wall-clock times, so a loaded machine does not
make them flaky.
"""

from __future__ import annotations

import asyncio

import pytest

from trainserve.workqueue import WorkQueue

#: Long enough for a blocked ``get`` to show it stays blocked.
BLOCKED = 0.02


async def nothing_comes_out(queue: WorkQueue[str]) -> bool:
    try:
        await asyncio.wait_for(queue.get(), BLOCKED)
    except TimeoutError:
        return True
    return False


async def next_key(queue: WorkQueue[str]) -> str:
    """The next key, finished at once (as a worker whose reconcile did nothing)."""
    key = await asyncio.wait_for(queue.get(), 1.0)
    queue.done(key)
    return key


@pytest.mark.asyncio
async def test_many_adds_before_a_get_make_one_reconcile() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(3):
        queue.add("ml/digits")
    queue.add("ml/iris")
    queue.add("ml/digits")
    assert len(queue) == 2
    assert await next_key(queue) == "ml/digits"
    assert await next_key(queue) == "ml/iris"
    assert len(queue) == 0
    assert await nothing_comes_out(queue)


@pytest.mark.asyncio
async def test_len_counts_queued_and_active_keys() -> None:
    queue: WorkQueue[str] = WorkQueue()
    assert len(queue) == 0
    queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    key = await queue.get()
    assert len(queue) == 2  # one waiting, one being reconciled
    queue.done(key)
    assert len(queue) == 1


@pytest.mark.asyncio
async def test_key_changed_mid_reconcile_runs_once_more_and_never_twice_at_once() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("ml/digits")
    first = await queue.get()
    second_worker = asyncio.create_task(queue.get())
    queue.add("ml/digits")  # the object changed while the first worker reconciles it
    queue.add("ml/digits")
    await asyncio.sleep(BLOCKED)
    assert not second_worker.done()  # not handed out while it is active
    assert len(queue) == 1
    queue.done(first)
    assert await asyncio.wait_for(second_worker, 1.0) == "ml/digits"
    queue.done("ml/digits")
    assert len(queue) == 0
    assert await nothing_comes_out(queue)  # once more, not once per add


@pytest.mark.asyncio
async def test_a_key_without_changes_mid_reconcile_is_not_run_again() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("ml/digits")
    assert await next_key(queue) == "ml/digits"
    assert await nothing_comes_out(queue)


@pytest.mark.asyncio
async def test_retry_delays_grow_exponentially_up_to_the_cap() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.01, max_delay=0.05)
    delays = [queue.retry("ml/digits") for _ in range(5)]
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.05, 0.05])
    assert queue.retry("ml/iris") == pytest.approx(0.01)  # backoff is per key
    queue.close()


@pytest.mark.asyncio
async def test_a_retried_key_comes_back_after_its_delay() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.01, max_delay=0.05)
    queue.add("ml/digits")
    key = await queue.get()
    queue.retry(key)  # the reconcile failed
    queue.done(key)
    assert len(queue) == 0  # not queued at once
    assert await next_key(queue) == "ml/digits"


@pytest.mark.asyncio
async def test_forget_resets_the_backoff() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.01, max_delay=1.0)
    for _ in range(3):
        queue.retry("ml/digits")
    queue.forget("ml/digits")
    assert queue.retry("ml/digits") == pytest.approx(0.01)
    queue.close()


@pytest.mark.asyncio
async def test_a_later_add_after_does_not_postpone_an_earlier_one() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("ml/digits", 0.01)
    queue.add_after("ml/digits", 0.08)
    queue.add_after("marker", 0.04)
    assert await next_key(queue) == "ml/digits"
    assert await next_key(queue) == "marker"
    await asyncio.sleep(0.06)  # past the later deadline: it was not kept as a second re-add
    assert len(queue) == 0
    assert await nothing_comes_out(queue)


@pytest.mark.asyncio
async def test_an_earlier_add_after_replaces_a_later_one() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("ml/digits", 0.08)
    queue.add_after("ml/digits", 0.01)
    queue.add_after("marker", 0.04)
    assert await next_key(queue) == "ml/digits"  # before the marker: the earlier deadline won
    assert await next_key(queue) == "marker"
    await asyncio.sleep(0.06)  # past the replaced deadline: it was cancelled
    assert len(queue) == 0
    assert await nothing_comes_out(queue)


@pytest.mark.asyncio
async def test_drop_cancels_the_pending_retry_and_resets_the_backoff() -> None:
    queue: WorkQueue[str] = WorkQueue(base_delay=0.01, max_delay=1.0)
    queue.retry("ml/digits")
    queue.retry("ml/digits")
    queue.drop("ml/digits")  # the object was deleted
    await asyncio.sleep(0.03)
    assert len(queue) == 0
    assert queue.retry("ml/digits") == pytest.approx(0.01)
    queue.close()


@pytest.mark.asyncio
async def test_close_cancels_every_timer() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("ml/digits", 0.01)
    queue.add_after("ml/iris", 0.01)
    queue.close()
    await asyncio.sleep(0.03)
    assert len(queue) == 0
    assert await nothing_comes_out(queue)
