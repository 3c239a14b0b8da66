"""The CALLs a charge point owes its central system, sent one at a time in order.

Transaction messages (StartTransaction, StopTransaction and MeterValues of a transaction) are
stored before they are queued and deleted once answered, so they survive a lost connection and a
restart of cp.py (OCPP 1.6 §3.7). A CALLERROR or no answer to one is retried after
TransactionMessageRetryInterval x attempts, up to TransactionMessageAttempts (§3.7.1). Other
messages are only worth sending now: going offline drops them. At most MAX_KEPT stored messages
are kept: over a long outage the oldest MeterValues make room for the newest.
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ocpp.exceptions import OCPPError
from ocpp.v16 import call

from evsim.cp.config import Configuration
from evsim.cp.store import StateStore

log = logging.getLogger("cp")


#: CALLERROR codes that say the central system does not handle the message at all.
UNSUPPORTED = ("NotImplemented", "NotSupported")
#: The most stored messages kept (in memory and in the state file): past it the oldest
#: MeterValues are dropped, never a StartTransaction or a StopTransaction.
MAX_KEPT = 100_000


class Caller(Protocol):
    async def call(self, payload: Any, suppress: bool = ...) -> Any: ...


class Sleeper(Protocol):
    async def sleep(self, sim_seconds: float) -> None: ...


@dataclass
class Message:
    """One CALL as data: ``payload`` holds the ocpp library's keyword names. A message of a
    transaction names it by ``tx_ref`` and gets its transactionId when it is sent, so one queued
    before the StartTransaction was answered carries the id given in the meantime."""

    action: str
    payload: dict[str, Any]
    tx_ref: int | None = None
    stored_id: int | None = None
    attempts: int = 0
    reply: asyncio.Future | None = None  # gets the CALLRESULT, or None when there is none

    def resolve(self, result: Any) -> None:
        if self.reply is not None and not self.reply.done():
            self.reply.set_result(result)

    @property
    def transactional(self) -> bool:
        return self.stored_id is not None


class Outbox:
    """The queue and its delivery over one connection at a time.

    ``transaction_id(ref)`` gives the central system's id of a transaction (None: not known, and
    the messages that need it are dropped); ``answered(message, result)`` gets each CALLRESULT.
    """

    def __init__(self, charge_point_id: str, store: StateStore, config: Configuration,
                 clock: Sleeper, transaction_id: Callable[[int], int | None],
                 answered: Callable[[Message, Any], None],
                 event: Callable[[str, str, Any], None] | None = None) -> None:
        self.charge_point_id = charge_point_id
        self.store = store
        self.config = config
        self.clock = clock
        self.transaction_id = transaction_id
        self.answered = answered
        self.event = event
        self.queue: deque[Message] = deque()
        self.kept = 0  # stored messages in the queue
        self.dropped = 0  # MeterValues dropped since the last connection began to deliver
        self._changed = asyncio.Event()
        self._emptied = asyncio.Event()
        self._emptied.set()

    def __len__(self) -> int:
        return len(self.queue)

    def put(self, message: Message) -> None:
        self.queue.append(message)
        if message.transactional:
            self.kept += 1
            if self.kept > MAX_KEPT:
                self._drop_oldest_meter_values()
        self._changed.set()
        self._emptied.clear()

    def _drop_oldest_meter_values(self) -> None:
        """Make room: forget the oldest stored MeterValues (not the head: it may be in flight)."""
        index = next((i for i, m in enumerate(self.queue)
                      if i and m.transactional and m.action == "MeterValues"), None)
        if index is None:
            return
        message = self.queue[index]
        del self.queue[index]
        self.kept -= 1
        self.store.done(message.stored_id)
        self.dropped += 1
        if self.dropped == 1:
            log.warning("outbox full (%d messages kept): dropping the oldest MeterValues until "
                        "the connection is back", MAX_KEPT)
            if self.event is not None:
                self.event("OUTBOX_FULL", f"outbox full: oldest MeterValues dropped (at most "
                                          f"{MAX_KEPT} messages kept)", {"limit": MAX_KEPT})

    async def empty(self) -> None:
        """Return once every queued message is delivered or given up on."""
        await self._emptied.wait()

    def restore(self) -> int:
        """Queue the stored messages of an earlier run, in their order; returns how many."""
        stored = self.store.messages(self.charge_point_id)
        for row in stored:
            self.put(Message(row.action, row.payload, row.tx_ref, row.id, row.attempts))
        return len(stored)

    async def ask(self, message: Message) -> Any:
        """Queue ``message`` and wait for its CALLRESULT; None when it failed or was dropped."""
        message.reply = asyncio.get_running_loop().create_future()
        self.put(message)
        return await message.reply

    def went_offline(self) -> None:
        """Keep the transaction messages; the rest is stale once the connection is back."""
        for message in self.queue:
            if not message.transactional:
                message.resolve(None)
        self.queue = deque(message for message in self.queue if message.transactional)
        if not self.queue:
            self._emptied.set()

    def request(self, message: Message) -> Any:
        """The ocpp library's request for ``message``; None when its transaction has no id."""
        payload = dict(message.payload)
        if message.tx_ref is not None and message.action != "StartTransaction":
            transaction_id = self.transaction_id(message.tx_ref)
            if transaction_id is None:
                return None
            payload["transaction_id"] = transaction_id
        return getattr(call, message.action)(**payload)

    async def deliver(self, caller: Caller) -> None:
        """Send the queue in order, forever. A lost connection raises and keeps the message at
        the head for the next one."""
        if self.dropped and self.event is not None:
            self.event("OUTBOX_DROPPED", f"{self.dropped} MeterValues dropped while the outbox "
                                         f"was full", {"dropped": self.dropped, "limit": MAX_KEPT})
        self.dropped = 0
        while True:
            while not self.queue:
                self._changed.clear()
                await self._changed.wait()
            message = self.queue[0]
            request = self.request(message)
            if request is None:
                log.warning("%s dropped: its transaction was never given an id", message.action)
                self._finish(message)
                message.resolve(None)
                continue
            try:
                result = await caller.call(request, suppress=False)
            except (TimeoutError, OCPPError) as exc:
                await self._failed(message, exc)
                continue
            self._finish(message)
            message.resolve(result)
            self.answered(message, result)

    async def _failed(self, message: Message, exc: BaseException) -> None:
        message.attempts += 1
        reason = str(exc).strip() or type(exc).__name__
        unsupported = getattr(exc, "code", None) in UNSUPPORTED  # retrying will not change it
        if message.transactional and not unsupported and \
                message.attempts < self.config["TransactionMessageAttempts"]:
            self.store.attempted(message.stored_id, message.attempts)
            delay = self.config["TransactionMessageRetryInterval"] * message.attempts
            log.warning("%s failed (%s); attempt %d in %g s", message.action, reason,
                        message.attempts + 1, delay)
            await self.clock.sleep(delay)
            return
        log.error("%s failed (%s); dropped after %d attempt(s)", message.action, reason,
                  message.attempts)
        self._finish(message)
        message.resolve(None)
        self.answered(message, None)

    def _finish(self, message: Message) -> None:
        if self.queue and self.queue[0] is message:
            self.queue.popleft()
            if message.transactional:
                self.kept -= 1
        if not self.queue:
            self._emptied.set()
        if message.stored_id is not None:
            self.store.done(message.stored_id)
