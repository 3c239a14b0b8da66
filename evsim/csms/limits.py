"""How many connections the central system serves at once (``--max-connections``).

A slot is taken when the gate lets a connection through the upgrade, not when its handler
starts, so that a burst of upgrades cannot overshoot the limit; it is given back when the
connection's TCP connection is gone, whether or not it ever reached the handler. Beyond the
limit an upgrade gets HTTP 503 with Retry-After, unless its charge point id is connected
already by exactly one connection: a replacement frees its own slot once the old connection is
closed, and another replacement waits for that.

Every connection, one stalled in its handshake too, holds a file descriptor: at start the
soft limit on them is raised toward the hard one, for without descriptors the listener drops
new connections without a word.
"""
from __future__ import annotations

import asyncio
import http
import logging
import time
from collections import Counter
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Response

try:
    import resource
except ImportError:  # not on Windows
    resource = None

log = logging.getLogger("csms")

MAX_CONNECTIONS = 5000
#: What a refused charge point is told to wait before it tries again.
RETRY_AFTER_S = 30
#: Refusals closer together than this are one burst: one line and one event.
BURST_GAP_S = 10.0

#: File descriptors besides the connections: the MemoryBank, the control API, stalled handshakes.
SPARE_FILES = 1024
#: What to ask for when there is no limit on connections.
NO_LIMIT_FILES = 65536

#: (charge point id, peer address, the limit): the first refusal of a burst, to record.
OnBurst = Callable[[str, str, int], None]


class ConnectionLimit:
    """At most ``maximum`` connections (0: no limit), counted per charge point id."""

    def __init__(self, maximum: int, on_burst: OnBurst, gap: float = BURST_GAP_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.maximum = maximum
        self.on_burst = on_burst
        self.gap = gap
        self.clock = clock
        self.total = 0
        self._per_id: Counter[str] = Counter()
        self._watchers: set[asyncio.Task] = set()
        self._burst_start: float | None = None
        self._last_refusal = 0.0
        self._refused = 0

    def full_for(self, charge_point_id: str) -> bool:
        """Whether a new connection for ``charge_point_id`` must wait: the limit is reached
        and the id has not exactly one connection for the new one to replace (one whose
        replacement is still closing does not make room for another: ids are public, and
        replacements must not open sockets beyond the limit)."""
        return 0 < self.maximum <= self.total and self._per_id.get(charge_point_id, 0) != 1

    def admit(self, charge_point_id: str, connection: ServerConnection) -> None:
        """Take a slot until ``connection`` is closed."""
        if not self.maximum:
            return
        self.total += 1
        self._per_id[charge_point_id] += 1
        watcher = asyncio.ensure_future(connection.wait_closed())
        self._watchers.add(watcher)
        watcher.add_done_callback(lambda done: self._release(charge_point_id, done))

    def _release(self, charge_point_id: str, watcher: asyncio.Task) -> None:
        self._watchers.discard(watcher)
        self.total -= 1
        self._per_id[charge_point_id] -= 1
        if self._per_id[charge_point_id] <= 0:
            del self._per_id[charge_point_id]

    def refuse(self, connection: ServerConnection, charge_point_id: str, peer: str) -> Response:
        """HTTP 503 with Retry-After; the first refusal of a burst is recorded, the others only
        counted (a flood must not flood the log)."""
        now = self.clock()
        if self._burst_start is None or now - self._last_refusal > self.gap:
            self._end_burst()
            self._burst_start, self._refused = now, 0
            self.on_burst(charge_point_id, peer, self.maximum)
            asyncio.get_running_loop().call_later(self.gap, self._check_burst_end)
        self._last_refusal = now
        self._refused += 1
        status = http.HTTPStatus.SERVICE_UNAVAILABLE
        response = connection.respond(status, f"{status.phrase}: too many connections\n")
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response

    def _check_burst_end(self) -> None:
        """Called ``gap`` after a burst starts, then again until the refusals stop."""
        if self._burst_start is None:
            return
        quiet_for = self.clock() - self._last_refusal
        if quiet_for > self.gap:
            self._end_burst()
        else:
            asyncio.get_running_loop().call_later(self.gap - quiet_for + 0.01,
                                                  self._check_burst_end)

    def _end_burst(self) -> None:
        if self._burst_start is None:
            return
        lasted = self._last_refusal - self._burst_start
        log.info("connection limit: %d connections refused in %.1f s (503)", self._refused,
                 lasted)
        self._burst_start = None


def raise_open_files_limit(max_connections: int) -> None:
    """Raise the soft limit on file descriptors (often 1,024; 256 on macOS) to what
    ``max_connections`` needs, as far as the hard limit allows; one line if it falls short."""
    if resource is None:
        return
    wanted = max_connections + SPARE_FILES if max_connections else NO_LIMIT_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target < wanted:
        log.warning("only %d file descriptors (ulimit -n), %d wanted: once they are used up, "
                    "new connections are dropped without an answer", target, wanted)
