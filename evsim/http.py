"""What the two control APIs (the central system's and the charge point's) share: one-line JSON
answers, reading a JSON body, and refusing web pages.

A control API has no password by default and listens on loopback, so the one client to keep out
is a web page in the user's own browser: a cross-site request (its ``Origin`` names another site)
and a DNS-rebound one (its ``Host`` is some domain that now points at 127.0.0.1) are refused.
curl, scripts and test tools send neither and are served.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Refusal(Exception):
    """An answer other than 200: HTTP status, the ``status`` word and its one-line reason."""

    def __init__(self, http_status: int, status: str, reason: str, **extra: Any) -> None:
        super().__init__(reason)
        self.http_status, self.status, self.reason, self.extra = http_status, status, reason, extra


def answer(body: dict[str, Any], http_status: int = 200) -> web.Response:
    return web.json_response(body, status=http_status)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(text: str) -> Any:
    """JSON as the standard says it: NaN and Infinity are not JSON. ValueError otherwise."""
    return json.loads(text, parse_constant=_no_constant)


async def read_json(request: web.Request, empty: Any = None) -> Any:
    """The JSON body; ``empty`` for none; a 400 Refusal for one that is not JSON."""
    text = await request.text()
    if not text.strip():
        return empty
    try:
        return loads(text)
    except ValueError as exc:
        raise Refusal(400, "bad-request", f"the body is not JSON: {exc}") from None


def http_reason(request: web.Request, exc: web.HTTPException, prefix: str) -> str:
    """aiohttp's own refusals (no such route, method, body too large) in one line."""
    if exc.status == 404:
        return f"no such route: {request.path} (see {prefix}/openapi.json)"
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    return exc.reason


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` (a name or an address) is this machine."""
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_not_a_web_page(request: web.Request, loopback_only: bool) -> None:
    """Refuse (403) a request a browser made for another site; with ``loopback_only`` (the API
    listens on loopback) also one whose Host is not a loopback name or address."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise Refusal(403, "forbidden", "a request from a web page of another site")
    if loopback_only and not is_loopback(urlsplit(f"//{request.host}").hostname):
        raise Refusal(403, "forbidden", f"Host {request.host!r} is not a loopback name")
