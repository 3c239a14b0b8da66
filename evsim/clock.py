"""One clock for every process: wall time for what is stored, simulated time for what is decided.

Simulated seconds are wall seconds times ``speed`` (ARCHITECTURE.md, "Time"): every wait is
``clock.sleep(simulated_seconds)`` and every elapsed-time figure comes from ``clock.sim()``, so a
run at ``--speed 10`` decides what a run at ``--speed 1`` decides. Tests inject
:class:`FakeClock`, whose time moves only when the test says so.
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

from evsim.constants import SILENCE_FLOOR_WALL_S

#: Periodic work as an async generator: it yields its first deadline (simulated seconds, as
#: :meth:`Clock.sim` counts them), and each step after does the work due and yields the next.
Schedule = AsyncIterator[float]


class Clock:
    """Real time, scaled by ``speed`` for simulated seconds."""

    def __init__(self, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be positive, got {speed}")
        self.speed = speed

    def now(self) -> datetime:
        """Wall-clock UTC, for timestamps that are stored or sent."""
        return datetime.now(UTC)

    def monotonic(self) -> float:
        """Wall seconds that never go back."""
        return time.monotonic()

    def sim(self) -> float:
        """Simulated seconds since an arbitrary origin."""
        return self.monotonic() * self.speed

    def wall_seconds(self, sim_seconds: float) -> float:
        return sim_seconds / self.speed

    def silence(self, sim_seconds: float) -> float:
        """How long a silence must last to count: ``sim_seconds``, and SILENCE_FLOOR_WALL_S
        wall seconds at least, so that a loaded machine at a high speed is not taken for a
        silent peer."""
        return max(sim_seconds, SILENCE_FLOOR_WALL_S * self.speed)

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(max(0.0, sim_seconds) / self.speed)


class FakeClock(Clock):
    """A clock that stands still until :meth:`advance`; sleepers wake in deadline order.

    ``advance`` lets the event loop run after each wake-up, so the tasks a sleeper starts do
    their work at the time they would have in a real run, and a test needs no real sleep.
    """

    def __init__(self, speed: float = 1.0, start: datetime | None = None) -> None:
        super().__init__(speed)
        self._start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._wall = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._order = itertools.count()

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._wall)

    def monotonic(self) -> float:
        return self._wall

    async def sleep(self, sim_seconds: float) -> None:
        if sim_seconds <= 0:  # as asyncio.sleep(0): a turn of the loop, no wait for advance()
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        deadline = self._wall + sim_seconds / self.speed
        heapq.heappush(self._sleepers, (deadline, next(self._order), future))
        await future

    async def advance(self, sim_seconds: float) -> None:
        """Move simulated time forward, waking every sleeper that falls due on the way."""
        target = self._wall + sim_seconds / self.speed
        await settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._wall = max(self._wall, deadline)
            if not future.done():
                future.set_result(None)
            await settle()
        self._wall = target
        await settle()

    @property
    def sleepers(self) -> int:
        return sum(not future.done() for _, _, future in self._sleepers)


async def settle(rounds: int = 50) -> None:
    """Let every task that is ready run until it waits again."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def run_schedules(schedules: Sequence[Schedule], clock: Clock) -> None:
    """Drive ``schedules`` in one task, forever: sleep until the earliest deadline, then step
    each one due, those due at once in the order given. One task and one wake-up for work that
    falls due together, where a task each would wake each one."""
    pending = [(await anext(schedule), index, schedule)
               for index, schedule in enumerate(schedules)]
    heapq.heapify(pending)
    while pending:
        due = pending[0][0]
        await clock.sleep(due - clock.sim())
        now = max(clock.sim(), due)
        while pending and pending[0][0] <= now:
            _, index, schedule = pending[0]
            heapq.heapreplace(pending, (await anext(schedule), index, schedule))
