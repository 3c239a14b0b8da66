"""The check at the WebSocket upgrade (websockets' ``process_request``): is this a known charge
point, and has it proved who it is? See :mod:`evsim.csms.security` for the rules."""
from __future__ import annotations

import asyncio
import http
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeader
from websockets.headers import parse_authorization_basic
from websockets.http11 import Request, Response

from evsim.csms.limits import ConnectionLimit
from evsim.csms.security import ChargePointRegistry, Throttle
from evsim.security.tls import peer_common_name

log = logging.getLogger("csms")

#: (charge point id, peer address, reason): a refusal to record.
OnRefused = Callable[[str, str, str], None]


def charge_point_id_of(path: str) -> str:
    """The charge point id: the last segment of the URL path (OCPP-J 1.6 §3.1.1)."""
    return unquote(path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])


def peer_of(connection: ServerConnection) -> str:
    address = connection.remote_address
    return "{}:{}".format(*address[:2]) if address else "?"


MAX_ID_LENGTH = 48


def bad_id(charge_point_id: str) -> tuple[http.HTTPStatus, str] | None:
    """A charge point id the central system will not take: empty, longer than 48 characters,
    or with a character that is not printable (a newline would forge log lines)."""
    if not charge_point_id:
        return http.HTTPStatus.BAD_REQUEST, "no charge point id at the end of the URL"
    if len(charge_point_id) > MAX_ID_LENGTH:
        return http.HTTPStatus.BAD_REQUEST, f"a charge point id longer than {MAX_ID_LENGTH}"
    if not charge_point_id.isprintable() or "/" in charge_point_id:
        return http.HTTPStatus.BAD_REQUEST, "a charge point id with a character not allowed"
    return None


def _basic_key(headers: Headers) -> str | None:
    try:
        return parse_authorization_basic(headers["Authorization"])[1]
    except (KeyError, InvalidHeader):
        return None


class Gate:
    """Lets a charge point in (None) or answers 400 (an id it will not take), 404 or 401 with
    nothing else, after a delay that grows with the refusals its address has had. Without a
    registry only the id is checked. Beyond ``limit`` it answers 503 at once, before any key
    is hashed (:mod:`evsim.csms.limits`)."""

    def __init__(self, registry: ChargePointRegistry | None, on_refused: OnRefused,
                 throttle: Throttle | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 limit: ConnectionLimit | None = None) -> None:
        self.registry = registry
        self.on_refused = on_refused
        self.throttle = throttle or Throttle()
        self.limit = limit
        self.sleep = sleep
        self._hashing = asyncio.Semaphore(2)

    async def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        charge_point_id = charge_point_id_of(request.path)
        peer = peer_of(connection)
        host = peer.rsplit(":", 1)[0]
        refusal = bad_id(charge_point_id)
        if refusal is None and self._full_for(charge_point_id):
            return self.limit.refuse(connection, charge_point_id, peer)
        if refusal is None and self.registry is not None:
            await self._hash_off_the_loop(charge_point_id, request.headers, host)
            refusal = self.check(charge_point_id, request.headers,
                                 peer_common_name(connection.transport))
        if refusal is None:
            return self._admit(connection, charge_point_id, peer, host)
        status, reason = refusal
        delay = self.throttle.failed(host)
        self.on_refused(charge_point_id, peer, reason)
        await self.sleep(delay)
        response = connection.respond(status, f"{status.phrase}\n")
        if status == http.HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Basic realm="OCPP", charset="UTF-8"'
        return response

    def _full_for(self, charge_point_id: str) -> bool:
        return self.limit is not None and self.limit.full_for(charge_point_id)

    def _admit(self, connection: ServerConnection, charge_point_id: str, peer: str,
               host: str) -> Response | None:
        """Let the connection in, unless the limit was reached while its key was checked."""
        if self._full_for(charge_point_id):
            return self.limit.refuse(connection, charge_point_id, peer)
        self.throttle.succeeded(host)
        if self.limit is not None:
            self.limit.admit(charge_point_id, connection)
        return None

    async def _hash_off_the_loop(self, charge_point_id: str, headers: Headers, host: str) -> None:
        """A key's PBKDF2 costs some 20 ms of CPU: run it in a thread, two at a time, after the
        wait this address has earned, so that wrong keys cannot stall the event loop (the
        outcome is remembered, and :meth:`check` then reads it)."""
        key = _basic_key(headers)
        if key is None or not self.registry.needs_hashing(charge_point_id, key):
            return
        await self.sleep(self.throttle.current(host))
        async with self._hashing:
            await asyncio.to_thread(self.registry.check_key, charge_point_id, key)

    def check(self, charge_point_id: str, headers: Headers, certificate_name: str | None
              ) -> tuple[http.HTTPStatus, str] | None:
        """None to let the charge point in, else (status, reason)."""
        known = self.registry.get(charge_point_id) if charge_point_id else None
        if known is None:
            return http.HTTPStatus.NOT_FOUND, "unknown charge point"
        if known.security_profile == 3:
            if certificate_name is None:
                return http.HTTPStatus.UNAUTHORIZED, "no client certificate (profile 3)"
            if certificate_name != charge_point_id:
                return (http.HTTPStatus.UNAUTHORIZED,
                        f"client certificate is for {certificate_name!r}")
            return None
        if known.security_profile == 0:
            return None
        header = headers.get("Authorization")
        if header is None:
            return http.HTTPStatus.UNAUTHORIZED, "no credentials"
        try:
            username, key = parse_authorization_basic(header)
        except InvalidHeader:
            return http.HTTPStatus.UNAUTHORIZED, "credentials that are not HTTP Basic"
        if username != charge_point_id:
            return http.HTTPStatus.UNAUTHORIZED, "username is not the charge point id"
        if not self.registry.check_key(charge_point_id, key):
            return http.HTTPStatus.UNAUTHORIZED, "wrong authorization key"
        return None
