"""How the charge point proves who it is to the central system (OCPP 1.6 Security Whitepaper):
profile 1, HTTP Basic authentication with its AuthorizationKey over ws://; profile 2, the same
over TLS, checking the central system's certificate; profile 3, TLS with a client certificate.

The key comes from ``--auth-key-file`` or ``$EV_SIM_AUTH_KEY`` (never the command line, which
``ps`` shows) until the central system sets another with ChangeConfiguration; the charge point
keeps that one in its state file.
"""
from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import websockets
from websockets.headers import build_authorization_basic

from evsim.security.tls import TlsError, client_context

log = logging.getLogger("cp")

PROFILES = (0, 1, 2, 3)


class SecurityError(ValueError):
    """Options that cannot make a secure connection: one line."""


@dataclass
class Credentials:
    """The profile in force and what it needs; ``key()`` gives the AuthorizationKey in force,
    ``signed()`` the (certificate, key) files the central system signed for it (profile 3), if
    any: from the next connection on they replace the ones it started with."""

    profile: int
    key: Callable[[], str | None]
    ssl: ssl.SSLContext | None = None
    ca_cert: str | None = None
    signed: Callable[[], tuple[Any, Any] | None] | None = None
    _signed_in_use: tuple[Any, Any] | None = None

    def connect_options(self, charge_point_id: str) -> dict[str, Any]:
        """Keyword arguments for ``websockets.connect``."""
        self._take_signed()
        options: dict[str, Any] = {}
        if self.profile in (1, 2):
            key = self.key()
            if not key:
                raise SecurityError(f"security profile {self.profile} needs an AuthorizationKey")
            options["additional_headers"] = {
                "Authorization": build_authorization_basic(charge_point_id, key)}
        if self.ssl is not None:
            options["ssl"] = self.ssl
        return options


    def _take_signed(self) -> None:
        paths = self.signed() if self.profile == 3 and self.signed is not None else None
        if not paths or paths == self._signed_in_use:
            return
        try:
            self.ssl = client_context(self.ca_cert, *paths)
        except TlsError as exc:
            log.warning("the signed client certificate is not used: %s", exc)
        self._signed_in_use = paths


def read_key(path: str | None) -> str | None:
    """The key from ``path`` (its first line) or ``$EV_SIM_AUTH_KEY``; SecurityError if the file
    cannot be read."""
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, UnicodeDecodeError, IndexError) as exc:
            reason = getattr(exc, "strerror", None) or "empty or not text"
            raise SecurityError(f"cannot read an AuthorizationKey from {path}: {reason}") \
                from None
    return os.environ.get("EV_SIM_AUTH_KEY") or None


def credentials(profile: int, url: str, key: Callable[[], str | None], ca_cert: str | None,
                client_cert: str | None, client_key: str | None,
                signed: Callable[[], tuple[Any, Any] | None] | None = None) -> Credentials:
    """Check that the options fit the profile, and make the TLS context it needs."""
    if profile not in PROFILES:
        raise SecurityError(f"--security-profile is 0, 1, 2 or 3, got {profile}")
    scheme = urlparse(url).scheme
    if profile >= 2 and scheme != "wss":
        raise SecurityError(f"security profile {profile} needs a wss:// URL, got {url!r}")
    if profile <= 1 and scheme == "wss":
        raise SecurityError(f"a wss:// URL needs security profile 2 or 3, got {profile}")
    if profile in (1, 2) and not key():
        raise SecurityError(f"security profile {profile} needs an AuthorizationKey: "
                            f"--auth-key-file FILE or $EV_SIM_AUTH_KEY")
    signed_pair = signed() if signed is not None else None
    if profile == 3 and not (client_cert and client_key) and not signed_pair:
        raise SecurityError("security profile 3 needs --client-cert and --client-key (or a "
                            "certificate the central system signed)")
    if profile < 3 and (client_cert or client_key):
        raise SecurityError("--client-cert and --client-key go with security profile 3")
    context = None
    if profile >= 2:
        try:
            cert, key_file = (client_cert, client_key) if client_cert else (signed_pair or
                                                                            (None, None))
            context = client_context(ca_cert, cert if profile == 3 else None,
                                     key_file if profile == 3 else None)
        except TlsError as exc:
            raise SecurityError(str(exc)) from None
    return Credentials(profile, key, context, ca_cert, signed)


def refusal(exc: BaseException) -> tuple[str, str] | None:
    """(a one-line reason, the whitepaper's security event type) when ``exc`` is the central
    system refusing this charge point or its certificate; None for any other failure."""
    if isinstance(exc, websockets.InvalidStatus):
        status = exc.response.status_code
        if status == 401:
            return ("the central system refused the credentials (HTTP 401)",
                    "FailedToAuthenticateAtCentralSystem")
        if status == 404:
            return ("the central system does not know this charge point id (HTTP 404)",
                    "FailedToAuthenticateAtCentralSystem")
        return None
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (f"the central system's certificate is not trusted ({exc.verify_message})",
                "InvalidCentralSystemCertificate")
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})", "InvalidTLSVersion" \
            if "VERSION" in str(exc.reason or "").upper() else "CentralSystemFailedToAuthenticate"
    return None
