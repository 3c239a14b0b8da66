"""TLS as the OCPP 1.6 Security Whitepaper wants it, for both sides: TLS 1.2 or newer, and for
TLS 1.2 only the cipher suites it names (ECDHE with AES-GCM, for ECDSA and RSA certificates).
Profile 2: the charge point checks the central system's certificate; profile 3: the central
system also checks the charge point's."""
from __future__ import annotations

import os
import ssl
from typing import Any

#: The whitepaper's TLS 1.2 suites; TLS 1.3 keeps OpenSSL's own (all AEAD).
CIPHERS = ":".join(("ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"))

Path = str | os.PathLike


class TlsError(ValueError):
    """A certificate or key that cannot be loaded: one line naming the file."""


def _load(what: str, load: Any, *paths: Path | None) -> None:
    try:
        load()
    except (OSError, ssl.SSLError) as exc:
        named = ", ".join(str(p) for p in paths if p)
        raise TlsError(f"cannot load the {what} ({named}): "
                       f"{getattr(exc, 'strerror', None) or exc}") from None


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    return context


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """The central system's: with ``client_ca`` it asks every charge point for a certificate,
    and one that does not chain to that CA ends the handshake (a charge point without one may
    still come in on profile 2)."""
    context = _harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    _load("server certificate and key", lambda: context.load_cert_chain(cert, key), cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
        _load("client CA", lambda: context.load_verify_locations(client_ca), client_ca)
    return context


def client_context(ca_cert: Path | None = None, client_cert: Path | None = None,
                   client_key: Path | None = None) -> ssl.SSLContext:
    """The charge point's: trusts ``ca_cert`` (else the system's CAs), checks the host name, and
    presents ``client_cert`` when given (profile 3)."""
    context = _harden(ssl.create_default_context())
    if ca_cert is not None:
        _load("CA certificate", lambda: context.load_verify_locations(ca_cert), ca_cert)
    if client_cert is not None:
        _load("client certificate and key",
              lambda: context.load_cert_chain(client_cert, client_key), client_cert, client_key)
    return context


def peer_common_name(transport: Any) -> str | None:
    """The common name of the verified certificate the peer presented, or None."""
    if transport is None:
        return None
    cert = transport.get_extra_info("peercert")
    for rdn in (cert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return value
    return None
