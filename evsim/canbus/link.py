"""A CAN node's link to the bus, in asyncio: frames arrive through python-can's ``Notifier`` and
``AsyncBufferedReader``, frames leave in order from one thread, and a lost bus is reopened.

The charge point, the charger and the plotter each hold one. ``on_frame`` gets every decoded
frame of the table (a known ID with the wrong length is logged and dropped); ``on_up`` runs each
time the bus is (re)opened, so a node can re-send the state the bus may have missed.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import can

from evsim.canbus import bus as canbus
from evsim.canbus import frames

log = logging.getLogger("canbus")

NOTIFIER_THREAD = "Notifier for bus"


class _Reader(can.AsyncBufferedReader):
    """The reader, told by the Notifier when the bus fails under it."""

    def __init__(self, lost: asyncio.Event) -> None:
        super().__init__()
        self.lost = lost
        self.error: BaseException | None = None

    def on_error(self, exc: Exception) -> None:
        self.error = exc
        self.lost.set()


class _ThreadedBus:
    """The bus as the Notifier sees it: without a file descriptor, so that it reads in its
    thread, which reports a lost bus to ``on_error`` (read in the event loop, a lost bus raises
    in a callback, again and again, and nobody is told)."""

    def __init__(self, bus: can.BusABC) -> None:
        self._bus = bus
        self.channel_info = bus.channel_info

    def fileno(self) -> int:
        raise NotImplementedError

    def recv(self, timeout: float | None = None) -> can.Message | None:
        return self._bus.recv(timeout)


def _quiet_notifier_threads() -> None:
    """A Notifier's thread re-raises the error of a lost bus after reporting it; the link has
    already said so in one line, so the thread's end is not printed as a traceback."""
    previous = threading.excepthook
    if getattr(previous, "evsim_quiet", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        name = args.thread.name if args.thread is not None else ""
        if name.startswith(NOTIFIER_THREAD) and isinstance(args.exc_value, canbus.BUS_ERRORS):
            return
        previous(args)
    hook.evsim_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


class CanLink:
    """Keeps one bus open and dispatches its frames into the running event loop."""

    def __init__(self, config: dict[str, Any], on_frame: Callable[[frames.Frame], Any],
                 on_up: Callable[[], Any] | None = None, retry_interval: float = 1.0,
                 name: str = "can") -> None:
        self.config = config
        self.on_frame = on_frame
        self.on_up = on_up
        self.retry_interval = retry_interval
        self.name = name
        self._bus: can.BusABC | None = None
        self._closed = threading.Event()
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{name}-send")

    @property
    def up(self) -> bool:
        return self._bus is not None

    async def run(self) -> None:
        """Open the bus and dispatch its frames until :meth:`close`; reopen it when it is lost."""
        _quiet_notifier_threads()
        loop = asyncio.get_running_loop()
        while not self._closed.is_set():
            bus = await loop.run_in_executor(None, canbus.open_bus, self.config, self._closed,
                                             self.retry_interval)
            if bus is None:
                return
            try:
                await self._session(bus, loop)
            finally:
                self._bus = None
                await loop.run_in_executor(None, canbus.shutdown_quietly, bus)

    async def _session(self, bus: can.BusABC, loop: asyncio.AbstractEventLoop) -> None:
        lost = asyncio.Event()
        reader = _Reader(lost)
        notifier = can.Notifier(_ThreadedBus(bus), [reader], timeout=0.2, loop=loop)
        self._bus = bus
        try:
            if self.on_up is not None:
                self.on_up()
            lost_wait = asyncio.ensure_future(lost.wait())
            try:
                while True:
                    message = asyncio.ensure_future(reader.get_message())
                    done, _ = await asyncio.wait({message, lost_wait},
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if message in done:
                        self._dispatch(message.result())
                        continue
                    message.cancel()
                    log.warning("CAN bus %s lost (%s); reconnecting", canbus.describe(self.config),
                                canbus.error_text(reader.error or OSError("closed")))
                    return
            finally:
                lost_wait.cancel()
        finally:
            await loop.run_in_executor(None, notifier.stop, 1.0)

    def _dispatch(self, msg: can.Message) -> None:
        frame = frames.decode_or_log(msg, log)
        if frame is not None:
            self.on_frame(frame)

    async def send(self, msg: can.Message) -> bool:
        """Send one frame after those sent before it; False (logged) when the bus is down."""
        if self._closed.is_set():
            return False
        return await asyncio.get_running_loop().run_in_executor(self._sender, self._send, msg)

    def _send(self, msg: can.Message) -> bool:
        bus = self._bus
        if bus is None:
            log.warning("CAN 0x%03X not sent: the bus is down", msg.arbitration_id)
            return False
        try:
            bus.send(msg)
            return True
        except canbus.BUS_ERRORS as exc:
            log.warning("CAN 0x%03X not sent: %s", msg.arbitration_id, canbus.error_text(exc))
            return False

    def close(self) -> None:
        """Stop reopening; :meth:`run` returns once its session has ended."""
        self._closed.set()
        self._sender.shutdown(wait=False)
