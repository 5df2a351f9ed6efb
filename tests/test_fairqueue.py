"""`FairQueue`, the waiting behind the store's reader pool and the read budget's lane: order and cancellation."""

from __future__ import annotations

import anyio
import pytest

from harmonia_mcp.fairqueue import FairQueue

pytestmark = pytest.mark.anyio


async def _queued(queue: FairQueue[str], count: int) -> None:
    while len(queue) < count:
        await anyio.sleep(0)


async def test_the_highest_ranked_eligible_waiter_is_served_first_and_the_earliest_among_equals() -> None:
    queue: FairQueue[str] = FairQueue()
    got: list[tuple[str, str]] = []
    rank = {"a": 0.0, "b": 5.0, "c": 5.0, "d": 9.0}

    async def wait(key: str) -> None:
        got.append((key, await queue.wait(key, lambda _key, _value: None)))

    with anyio.fail_after(10):  # a hang guard
        async with anyio.create_task_group() as group:
            for number, key in enumerate("abcd", start=1):
                group.start_soon(wait, key)
                await _queued(queue, number)
            assert queue.keys() == {"a", "b", "c", "d"}
            assert queue.hand("first", rank=rank.__getitem__, eligible=lambda key: key != "d") == "b"
            assert queue.hand("second", rank=rank.__getitem__) == "d"
            assert queue.hand("third", rank=rank.__getitem__) == "c"
            assert queue.hand("none", rank=rank.__getitem__, eligible=lambda key: key != "a") is None
            assert queue.hand("fourth", rank=rank.__getitem__) == "a"
    assert sorted(got) == [("a", "fourth"), ("b", "first"), ("c", "third"), ("d", "second")]
    assert not queue


async def test_a_waiter_cancelled_as_it_is_handed_a_value_passes_it_on() -> None:
    queue: FairQueue[str] = FairQueue()
    passed: list[tuple[str, str]] = []
    scope = anyio.CancelScope()

    async def wait() -> None:
        with scope:
            await queue.wait("a", lambda key, value: passed.append((key, value)))

    with anyio.fail_after(10):  # a hang guard
        async with anyio.create_task_group() as group:
            group.start_soon(wait)
            await _queued(queue, 1)
            scope.cancel()  # the waiter's cancellation is on its way ...
            assert queue.hand("reader", rank=lambda _: 0.0) == "a"  # ... when it is handed the reader
    assert passed == [("a", "reader")]


async def test_a_waiter_cancelled_before_its_turn_leaves_the_queue() -> None:
    queue: FairQueue[str] = FairQueue()
    with anyio.fail_after(10):  # a hang guard
        async with anyio.create_task_group() as group:
            group.start_soon(queue.wait, "a", lambda _key, _value: None)
            await _queued(queue, 1)
            group.cancel_scope.cancel()
    assert not queue and queue.hand("reader", rank=lambda _: 0.0) is None
