"""The charge point's connection to its central system: connect, boot, heartbeat, deliver the
outbox, and reconnect with a capped, jittered backoff when the connection is lost."""
from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import websockets
from ocpp.exceptions import OCPPError
from ocpp.v16 import call
from ocpp.v16.enums import RegistrationStatus
from websockets.asyncio.client import ClientConnection, connect
from websockets.uri import parse_uri

from evsim.cp import security
from evsim.cp.config import Configuration
from evsim.cp.endpoint import CpEndpoint
from evsim.cp.security import Credentials
from evsim.cp.station import Station
from evsim.ocpp16 import endpoint as ocpp16

log = logging.getLogger("cp")

#: Seconds before a BootNotification is sent again when the answer gave no interval.
BOOT_RETRY_S = 10


class Backoff:
    """Reconnect delays: exponential, capped, with jitter so a fleet does not reconnect in step."""

    def __init__(self, base: float = 1.0, cap: float = 30.0,
                 rng: Callable[[], float] = random.random) -> None:
        self.base, self.cap, self.rng = base, cap, rng
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2 ** self.failures)
        self.failures += 1
        return delay * (0.5 + 0.5 * self.rng())

    def reset(self) -> None:
        self.failures = 0


def endpoint_url(url: str, charge_point_id: str) -> str:
    """``url`` with the id as its last path segment. ValueError, in one line, for an id or a URL
    that cannot make one."""
    if not charge_point_id:
        raise ValueError("--id must not be empty")
    target = f"{url.rstrip('/')}/{quote(charge_point_id, safe='')}"
    try:
        parse_uri(target)
    except websockets.InvalidURI as exc:
        reason = exc.msg
    except ValueError as exc:
        reason = str(exc)
    else:
        return target
    raise ValueError(f"--url must be a ws:// or wss:// URL with a host, got {url!r} ({reason})")


def error_text(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


async def boot(station: Station, endpoint: Any) -> None:
    """BootNotification until Accepted, again after the interval the central system gives."""
    while True:
        try:
            result = await endpoint.call(call.BootNotification(**station.boot_payload()),
                                         suppress=False)
        except (TimeoutError, OCPPError) as exc:
            log.warning("BootNotification failed (%s)", error_text(exc))
            result = None
        interval = min(result.interval, Configuration.MAXIMUM["HeartbeatInterval"]) \
            if result is not None else 0
        if interval > 0:
            station.config.values["HeartbeatInterval"] = interval
        if result is not None and result.status == RegistrationStatus.accepted:
            station.booted = True
            return
        retry = interval if interval > 0 else BOOT_RETRY_S
        log.warning("not accepted; BootNotification again in %d s", retry)
        await station.clock.sleep(retry)


async def heartbeat(station: Station, endpoint: Any) -> None:
    while True:
        interval = station.config["HeartbeatInterval"]
        await station.clock.sleep(interval or 60)
        if interval:
            try:
                await endpoint.call(call.Heartbeat(), suppress=False)
            except (TimeoutError, OCPPError) as exc:
                log.warning("Heartbeat failed (%s)", error_text(exc))


async def online(station: Station, endpoint: Any) -> None:
    """Everything a connected charge point does, until the connection fails."""
    if not station.booted:
        await boot(station, endpoint)
    station.connected = True
    station.report_status(always=True)
    await asyncio.gather(heartbeat(station, endpoint), station.outbox.deliver(endpoint))


async def serve_connection(station: Station, connection: ClientConnection) -> None:
    endpoint = CpEndpoint(station.id, connection, station)
    tasks = {asyncio.create_task(endpoint.start()), asyncio.create_task(online(station, endpoint)),
             asyncio.create_task(station.restart.wait())}  # a Reset: close, boot again
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        station.connected = False
        station.outbox.went_offline()
        if station.restart.is_set():
            station.rebooted()


async def keep_connected(station: Station, target: str,
                         credentials: Credentials | None = None) -> None:
    """Connect to ``target``, serve, and reconnect with backoff (in simulated seconds), forever.
    ``credentials`` add the security profile's authentication and TLS."""
    backoff = Backoff()
    failures = 0
    reported = None
    while True:
        options = credentials.connect_options(station.id) if credentials else {}
        try:
            async with connect(target, subprotocols=[ocpp16.SUBPROTOCOL], open_timeout=10,
                               compression=None, **options) as connection:
                if connection.subprotocol != ocpp16.SUBPROTOCOL:
                    raise websockets.InvalidHandshake("the server did not agree on ocpp1.6")
                log.info("connected to %s", target)
                station.event("CONNECTED", f"{station.id} connected to {target}")
                backoff.reset()
                failures = 0
                reported = None
                try:
                    await serve_connection(station, connection)
                finally:
                    station.event("DISCONNECTED", f"{station.id} disconnected from {target}")
        except (TimeoutError, OSError, websockets.InvalidHandshake,
                websockets.ConnectionClosed) as exc:
            failures += 1
            delay = backoff.next()
            refused = security.refusal(exc)
            if refused is not None and refused != reported:  # once an outage, not each retry
                reported = refused
                reason, event_type = refused
                station.event("SECURITY", f"{station.id}: {reason}", {"type": event_type})
                station.security_event(event_type, reason)
            level = logging.WARNING if failures == 1 else logging.DEBUG
            log.log(level, "connection to %s %s (%s); retrying in %.2f s", target,
                    "lost" if station.booted else "failed",
                    refused[0] if refused else error_text(exc), station.clock.wall_seconds(delay))
            await station.clock.sleep(delay)
            continue
        await station.clock.sleep(backoff.next())
