"""The central system's control API: JSON over HTTP (aiohttp), in the central system's own event
loop, so a request reaches a charge point through the same connection the scenario uses.

Every call is recorded as an API_CALL event (method, path, status, the body and answer with
secret configuration values redacted; never a bearer token or an AuthorizationKey) and logged in
one line. A body is checked against its message's 1.6 schema before anything is sent. The routes
and their answers: :mod:`evsim.csms.openapi`, served at ``GET /api/v1/openapi.json``.
"""
from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Optional

import websockets
from aiohttp import web
from ocpp.messages import CallResult

from evsim.csms import actions, idtags
from evsim.csms.openapi import document
from evsim.http import Refusal, answer, check_not_a_web_page, http_reason, read_json
from evsim.ocpp16.endpoint import redact

if TYPE_CHECKING:
    from evsim.csms.registry import Station
    from evsim.csms.server import CentralSystem

log = logging.getLogger("csms")

PREFIX = "/api/v1"
SYSTEM = web.AppKey("system", Any)
TOKEN = web.AppKey("token", Any)
RECORD = web.RequestKey("record", dict)
LOOPBACK = web.AppKey("loopback", bool)
MAX_BODY = 256 * 1024
#: Seconds to wait for the MemoryBank to confirm an id-tag change.
BANK_TIMEOUT = 10.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(system: CentralSystem, token: Optional[str] = None,
               loopback_only: bool = True) -> web.Application:
    """The API of ``system``; with ``token``, every request needs ``Authorization: Bearer``;
    ``loopback_only``: it listens on loopback, so a Host that is not is a rebound web page."""
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[SYSTEM], app[TOKEN], app[LOOPBACK] = system, token or None, loopback_only
    cp = PREFIX + "/charge-points/{id}"
    app.router.add_get(PREFIX + "/openapi.json", openapi)
    app.router.add_get(PREFIX + "/charge-points", charge_points)
    app.router.add_get(cp, charge_point)
    app.router.add_put(cp + "/authorization-key", authorization_key)
    app.router.add_post(cp + "/scenario/{change:pause|resume}", scenario)
    app.router.add_post(cp + "/{action}", send)
    app.router.add_get(PREFIX + "/id-tags", id_tags)
    app.router.add_get(PREFIX + "/id-tags/{idTag}", id_tag)
    app.router.add_put(PREFIX + "/id-tags/{idTag}", put_id_tag)
    app.router.add_delete(PREFIX + "/id-tags/{idTag}", delete_id_tag)
    return app


# -- what every request goes through --------------------------------------------------------------

@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The token, the one-line errors, and the record of the call."""
    system: CentralSystem = request.app[SYSTEM]
    request[RECORD] = {}
    try:
        check_not_a_web_page(request, request.app[LOOPBACK])
        if not authorized(request):
            raise Refusal(401, "unauthorized", "a valid 'Authorization: Bearer <token>' header "
                                               "is required")
        response = await handler(request)
    except Refusal as refusal:
        response = answer({"status": refusal.status, "reason": refusal.reason, **refusal.extra},
                          refusal.http_status)
        request[RECORD]["reason"] = refusal.reason
    except web.HTTPException as exc:  # aiohttp's own: no such route, method, body too large
        reason = http_reason(request, exc, PREFIX)
        response = answer({"status": "error", "reason": reason}, exc.status)
        request[RECORD]["reason"] = reason
    except Exception as exc:  # noqa: BLE001 - one line to the client and the log, never a trace
        reason = f"internal error: {type(exc).__name__}: {exc}"
        log.error("api: %s %s failed: %s", request.method, request.path, reason)
        response = answer({"status": "error", "reason": reason}, 500)
        request[RECORD]["reason"] = reason
    if isinstance(response, web.Response) and response.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="csms"'
    log.info("api: %s %s -> %d", request.method, request.path, response.status)
    system.event("API_CALL", f"{request.method} {request.path} -> {response.status}",
                 {"method": request.method, "path": request.path, "status": response.status,
                  "peer": request.remote, **request[RECORD]},
                 request.match_info.get("id"))
    return response


def authorized(request: web.Request) -> bool:
    token = request.app[TOKEN]
    if token is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


# -- charge points --------------------------------------------------------------------------------

async def openapi(request: web.Request) -> web.Response:
    return answer(document())


def view(station: Station) -> dict[str, Any]:
    """What the API shows of a charge point."""
    link, runner = station.link, station.runner
    return {
        "id": station.id, "connected": link is not None, "booted": bool(link and link.booted),
        "boot": station.boot,
        "connectors": {str(number): status for number, status in sorted(station.connectors.items())},
        "transactionId": station.transaction_id, "lastMessage": station.last_message,
        "reports": station.reports,
        "scenario": {"name": runner.scenario if runner else "none", "paused": station.paused,
                     "running": bool(station.scenario_task and not station.scenario_task.done()),
                     "stepsDone": runner.steps_done if runner else 0}}


def station_of(request: web.Request, connected: bool = False) -> Station:
    charge_point_id = request.match_info["id"]
    station = request.app[SYSTEM].registry.get(charge_point_id)
    if station is None:
        raise Refusal(404, "not-found", f"no charge point {charge_point_id!r} is known")
    if connected and station.link is None:
        raise Refusal(404, "not-connected", f"charge point {charge_point_id!r} is not connected")
    return station


async def charge_points(request: web.Request) -> web.Response:
    return answer({"chargePoints": [view(station) for station in request.app[SYSTEM].registry]})


async def charge_point(request: web.Request) -> web.Response:
    return answer(view(station_of(request)))


async def scenario(request: web.Request) -> web.Response:
    """Pause the scenario on a charge point (the step in flight is sent again on resume), or
    resume it from the first step not done."""
    system, station = request.app[SYSTEM], station_of(request)
    station.paused = request.match_info["change"] == "pause"
    if station.paused:
        system.stop_scenario(station)
    elif station.link is not None and station.link.booted:
        system.start_scenario(station)
    return answer({"status": "paused" if station.paused else "resumed",
                   "chargePoint": view(station)})


async def send(request: web.Request) -> web.Response:
    """One CALL to a charge point, its body exactly as given; the answer as it came."""
    system: CentralSystem = request.app[SYSTEM]
    name = request.match_info["action"]
    action = actions.ACTIONS.get(name)
    if action is None:
        raise Refusal(404, "unknown-action", f"{name!r} is not a message the central system "
                                             f"sends (see {PREFIX}/openapi.json)")
    payload = await read_json(request, empty={})
    record = request[RECORD]
    record.update(action=action, request=redact(payload))
    try:
        await actions.check_request(action, payload)
    except actions.SchemaError as exc:
        raise Refusal(400, "bad-request", f"{action}: {exc}") from None
    station = station_of(request, connected=True)
    try:
        result = await station.link.send(action, payload, system.call_timeout)
    except TimeoutError:
        raise Refusal(504, "timeout", f"{station.id} did not answer {action} within "
                                      f"{system.call_timeout:g} s") from None
    except websockets.ConnectionClosed:
        raise Refusal(502, "disconnected", f"{station.id} disconnected before it answered "
                                           f"{action}") from None
    if not isinstance(result, CallResult):
        record["response"] = {"errorCode": result.error_code}
        raise Refusal(502, "callerror", f"{station.id} answered {action} with {result.error_code}"
                      f": {result.error_description}", errorCode=result.error_code,
                      errorDescription=result.error_description,
                      errorDetails=result.error_details)
    record["response"] = redact(result.payload)
    try:
        await actions.check_response(action, result.payload)
    except actions.SchemaError as exc:
        raise Refusal(502, "invalid-response", f"{station.id}'s answer to {action} breaks the "
                                               f"schema: {exc}", response=result.payload) from None
    system.profile_answered(station, action, payload, result.payload.get("status"))
    if (action == "ChangeConfiguration" and payload.get("key") == "AuthorizationKey"
            and result.payload.get("status") == "Accepted"):
        system.authorization_key_changed(station, payload.get("value"))
    return answer({"status": "accepted", "response": result.payload})


async def authorization_key(request: web.Request) -> web.Response:
    """Set the key the registry expects of a charge point from now on, without telling it (a
    test of what happens when the two disagree); the key is never recorded."""
    system: CentralSystem = request.app[SYSTEM]
    charge_point_id = request.match_info["id"]
    body = await read_json(request)
    if not isinstance(body, dict) or set(body) != {"authorizationKey"}:
        raise Refusal(400, "bad-request", 'the body is {"authorizationKey": "<key>"}')
    security = getattr(system, "security", None)
    if security is None:
        raise Refusal(404, "no-registry", "csms.py runs without --charge-points: there is no "
                                          "registry of keys to change")
    try:
        security.set_key(charge_point_id, body["authorizationKey"])
    except KeyError:
        raise Refusal(404, "not-found", f"charge point {charge_point_id!r} is not in the "
                                        f"registry") from None
    except ValueError as exc:
        raise Refusal(400, "bad-request", str(exc)) from None
    return answer({"status": "accepted", "chargePointId": charge_point_id})


# -- id tags --------------------------------------------------------------------------------------

async def id_tags(request: web.Request) -> web.Response:
    tags = request.app[SYSTEM].id_tags
    return answer({"enforced": tags.enforced, "idTags": [tag.to_json() for tag in tags]})


def _tag_or_404(request: web.Request) -> idtags.IdTag:
    name = request.match_info["idTag"]
    tag = request.app[SYSTEM].id_tags.get(name)
    if tag is None:
        raise Refusal(404, "not-found", f"no id tag {name!r}")
    return tag


async def id_tag(request: web.Request) -> web.Response:
    return answer(_tag_or_404(request).to_json())


async def put_id_tag(request: web.Request) -> web.Response:
    """Create or change a tag: stored in the MemoryBank first, then in force."""
    system: CentralSystem = request.app[SYSTEM]
    name = request.match_info["idTag"]
    body = await read_json(request, empty={})
    request[RECORD]["request"] = body
    current = system.id_tags.get(name)
    try:
        tag = idtags.changed(current, name, body)
    except ValueError as exc:
        raise Refusal(400, "bad-request", str(exc)) from None
    await persisted(system, lambda bank: bank.put_id_tag(**tag.to_row()))
    system.id_tags.put(tag)
    created = current is None
    return answer({"status": "created" if created else "updated", "idTag": tag.to_json()},
                  201 if created else 200)


async def delete_id_tag(request: web.Request) -> web.Response:
    system: CentralSystem = request.app[SYSTEM]
    tag = _tag_or_404(request)
    await persisted(system, lambda bank: bank.delete_id_tag(tag.id_tag))
    system.id_tags.delete(tag.id_tag)
    return answer({"status": "deleted", "idTag": tag.to_json()})


async def persisted(system: CentralSystem, write: Callable[[Any], Any]) -> None:
    """Run ``write(bank)`` in the MemoryBank's writer thread and wait until it has committed."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def settle(error: Optional[BaseException]) -> None:
        if not done.done():
            done.set_result(error)

    def run(bank: Any) -> None:
        try:
            write(bank)
        except Exception as exc:  # noqa: BLE001 - handed to the request, one line
            loop.call_soon_threadsafe(settle, exc)
        else:
            loop.call_soon_threadsafe(settle, None)

    system.writer.call(run)
    try:
        error = await asyncio.wait_for(done, BANK_TIMEOUT)
    except TimeoutError:
        raise Refusal(500, "error", "the MemoryBank did not confirm the change") from None
    if error is not None:
        raise Refusal(500, "error", f"the MemoryBank refused the change: {error}")
