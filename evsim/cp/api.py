"""The charge point's control API (``cp.py --api-port PORT``): JSON over HTTP (aiohttp) in the
charge point's own event loop, for a person or a script to do what a driver does at the charge
point: plug a cable in or out, present an idTag, set the EV's limit, and put in a fault.

Answers as the central system's API does: 200 with the outcome; 400, 404 and 409 (the action
does not fit the connector's state) with ``{"status": word, "reason": one line}``. Every call is
an API_CALL event in the MemoryBank and one log line.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from evsim.constants import CONNECTOR_ID
from evsim.cp.local import Conflict
from evsim.cp.state import snapshot
from evsim.http import Refusal, answer, check_not_a_web_page, http_reason, read_json

if TYPE_CHECKING:
    from evsim.cp.station import Station

log = logging.getLogger("cp")

PREFIX = "/api/v1"
STATION = web.AppKey("station", Any)
RECORD = web.RequestKey("record", dict)
MAX_BODY = 16 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(station: Station) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[STATION] = station
    connector = PREFIX + "/connectors/{n}"
    app.router.add_get(PREFIX + "/state", state)
    app.router.add_post(connector + "/plug-in", action(lambda s, body: s.local.plug_in()))
    app.router.add_post(connector + "/unplug", action(lambda s, body: s.local.unplug()))
    app.router.add_post(connector + "/present-id-tag",
                        action(lambda s, body: s.local.present_id_tag(field(body, "idTag"))))
    app.router.add_put(connector + "/ev",
                       action(lambda s, body: s.local.set_ev_limit(field(body, "maxCurrent"))))
    app.router.add_post(connector + "/fault", action(
        lambda s, body: s.local.fault(field(body, "errorCode"), body.get("info"))))
    app.router.add_post(connector + "/clear-fault", action(lambda s, body: s.local.clear_fault()))
    return app


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one-line errors and the record of the call."""
    station: Station = request.app[STATION]
    record: dict[str, Any] = {}
    request[RECORD] = record
    try:
        check_not_a_web_page(request, loopback_only=True)
        response = await handler(request)
    except Refusal as refusal:
        response = answer({"status": refusal.status, "reason": refusal.reason},
                          refusal.http_status)
        record["reason"] = refusal.reason
    except web.HTTPException as exc:  # aiohttp's own: no such route, method, body too large
        reason = http_reason(request, exc, PREFIX)
        response = answer({"status": "error", "reason": reason}, exc.status)
        record["reason"] = reason
    except Exception as exc:  # noqa: BLE001 - one line to the client and the log, never a trace
        reason = f"internal error: {type(exc).__name__}: {exc}"
        log.error("api: %s %s failed: %s", request.method, request.path, reason)
        response = answer({"status": "error", "reason": reason}, 500)
        record["reason"] = reason
    log.info("api: %s %s -> %d", request.method, request.path, response.status)
    if request.method != "GET":
        station.event("API_CALL", f"{request.method} {request.path} -> {response.status}",
                      {"method": request.method, "path": request.path,
                       "status": response.status, "peer": request.remote, **record})
    return response


async def state(request: web.Request) -> web.Response:
    return answer(snapshot(request.app[STATION]))


def field(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise Refusal(400, "bad-request", f"the body needs {name!r}")
    return body[name]


async def body_of(request: web.Request) -> dict[str, Any]:
    body = await read_json(request, empty={})
    if not isinstance(body, dict):
        raise Refusal(400, "bad-request", "the body must be a JSON object")
    return body


def action(run: Callable[[Station, dict[str, Any]], Awaitable[dict[str, Any]]]) -> Handler:
    """A route that checks the connector and the body, then does ``run(station, body)``."""
    async def handle(request: web.Request) -> web.Response:
        station: Station = request.app[STATION]
        number = request.match_info["n"]
        if number != str(CONNECTOR_ID):
            raise Refusal(404, "not-found", f"no connector {number} (this charge point has "
                                            f"connector {CONNECTOR_ID})")
        body = await body_of(request)
        request[RECORD]["body"] = body
        try:
            outcome = await run(station, body)
        except Conflict as exc:
            raise Refusal(409, "conflict", str(exc)) from None
        except ValueError as exc:
            raise Refusal(400, "bad-request", str(exc)) from None
        return answer({"status": "ok", **outcome})
    return handle


async def serve_api(station: Station, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    """Listen on ``host:port`` (0: any free port); the runner, to clean up. OSError when the
    port cannot be bound."""
    runner = web.AppRunner(create_app(station), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: web.AppRunner) -> int:
    return runner.addresses[0][1]
