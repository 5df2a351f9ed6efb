"""Waiting for a scarce thing (a read connection, a slot in a lane) in an order a policy chooses, cancel-safe.

`FairQueue` is the one piece behind `store._ReaderPool` (the next free reader goes to the waiting caller that
holds the fewest) and `throttle.ReadBudget`'s over-budget lane (the next free slot goes to the waiting caller
least in debt). The owner keeps its own count of what each caller holds; the queue only keeps the waiters,
hands a released thing to the one the policy ranks first (the earliest among equals), and makes sure that a
waiter cancelled after it was handed something passes it on instead of losing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")


@dataclass(eq=False)
class _Turn(Generic[T]):
    key: str
    event: anyio.Event = field(default_factory=anyio.Event)
    handed: list[T] = field(default_factory=list)  # empty until `hand` gives this turn its value


class FairQueue(Generic[T]):
    """Callers waiting for a `T`, in arrival order; `hand` gives one to the waiter a policy ranks first."""

    def __init__(self) -> None:
        self._turns: list[_Turn[T]] = []

    def __len__(self) -> int:
        """How many wait (while any do, a newcomer queues too, even if something is free)."""
        return len(self._turns)

    def keys(self) -> set[str]:
        """The callers that wait."""
        return {turn.key for turn in self._turns}

    async def wait(self, key: str, pass_on: Callable[[str, T], None]) -> T:
        """Queue a turn for `key` and return what `hand` gives it.

        If the waiter is cancelled after it was handed a value (both in one event-loop turn), `pass_on(key,
        value)` is called, which must release it as its holder would (so the next waiter gets it), and the
        cancellation propagates.
        """
        turn: _Turn[T] = _Turn(key)
        self._turns.append(turn)
        try:
            await turn.event.wait()
        except BaseException:
            if turn.handed:
                pass_on(key, turn.handed[0])
            else:
                self._turns.remove(turn)
            raise
        return turn.handed[0]

    def hand(
        self, value: T, rank: Callable[[str], float], eligible: Callable[[str], bool] = lambda _: True
    ) -> str | None:
        """Give `value` to the eligible waiter with the highest `rank(key)` (the earliest among equals) and
        return its key; None when no eligible caller waits (the caller keeps `value`). The chosen waiter wakes
        later, so the caller updates its own counts for the returned key right away."""
        ready = [turn for turn in self._turns if eligible(turn.key)]
        if not ready:
            return None
        chosen = max(ready, key=lambda turn: rank(turn.key))  # max() keeps the first of equals
        self._turns.remove(chosen)
        chosen.handed.append(value)
        chosen.event.set()
        return chosen.key
