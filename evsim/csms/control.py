"""The central system's control options (``--api-port``, ``--api-token``, ``--id-tags``,
``--ca-cert``/``--ca-key``): from flags to a running control API, the id-tag list in force, and
the CA that signs charge points' certificates. Each problem is one line (cli.SimError)."""
from __future__ import annotations

import argparse
import errno
import logging
import os
from typing import TYPE_CHECKING, Any, Optional

from aiohttp import web

from evsim import cli
from evsim.bank import MemoryBank
from evsim.csms import api, idtags
from evsim.http import is_loopback
from evsim.security import pki

if TYPE_CHECKING:
    from cryptography import x509

    from evsim.csms.server import CentralSystem

log = logging.getLogger("csms")

DEFAULT_API_PORT = 9001
OFF = "off"
#: Wall seconds a stopping central system gives API requests still waiting on a charge point.
API_SHUTDOWN_S = 2.0
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def api_port(text: str) -> int | str:
    """``--api-port``: a port, 0 for any free one, or :data:`OFF`."""
    if text.strip().lower() == OFF:
        return OFF
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port 0 to 65535 or 'off', got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, got {text!r}")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("control API, id tags and certificates")
    group.add_argument("--api-port", type=api_port, default=None, metavar="PORT",
                       help=f"port of the HTTP control API on --host, 0 for any free one, 'off' "
                            f"for none (default: {DEFAULT_API_PORT}, or none with a warning "
                            f"when that is taken)")
    group.add_argument("--api-token", default=os.environ.get("EV_SIM_API_TOKEN") or None,
                       metavar="TOKEN",
                       help="require 'Authorization: Bearer TOKEN' on every API request "
                            "(default: $EV_SIM_API_TOKEN; better there than on the command "
                            "line, which ps shows)")
    group.add_argument("--id-tags", metavar="CSV",
                       help="answer Authorize and StartTransaction from this list "
                            "(idTag,status,expiryDate,parentIdTag); it replaces the list kept "
                            "in the MemoryBank, which the API changes")
    group.add_argument("--ca-cert", metavar="PEM",
                       help="CA certificate that signs charge points' CSRs (SignCertificate)")
    group.add_argument("--ca-key", metavar="PEM", help="the private key of --ca-cert")


def certificate_authority(args: Any) -> Optional[tuple[pki.Key, x509.Certificate]]:
    """The CA of ``--ca-cert``/``--ca-key``, or None (SignCertificate is then Rejected)."""
    cert_path, key_path = getattr(args, "ca_cert", None), getattr(args, "ca_key", None)
    if bool(cert_path) != bool(key_path):
        raise cli.UsageError("--ca-cert and --ca-key go together")
    if not cert_path:
        return None
    try:
        certificate, key = pki.load_certificate(cert_path), pki.load_key(key_path)
    except pki.PkiError as exc:
        raise cli.SimError(exc) from None
    if certificate.public_key().public_numbers() != key.public_key().public_numbers():
        raise cli.UsageError(f"--ca-key {key_path} is not the key of --ca-cert {cert_path}")
    return key, certificate


def load_id_tags(db: Optional[str], path: Optional[str],
                 scenario_tag: Optional[str] = None) -> idtags.IdTagList:
    """The id-tag list in force: the file's, which then replaces the MemoryBank's; else the
    MemoryBank's (in force once it holds a tag); else none, and every tag is Accepted.
    ``scenario_tag``: the tag the scenario starts its transactions with, which the list had
    better accept (a warning if it does not)."""
    tags = None
    if path:
        try:
            tags = idtags.load_csv(path)
        except ValueError as exc:
            raise cli.UsageError(f"--id-tags: {exc}") from None
    with MemoryBank(db) as bank:
        if tags is not None:
            bank.replace_id_tags(tag.to_row() for tag in tags)
            log.info("id tags: %d from %s, in force", len(tags), path)
            stored = idtags.IdTagList(tags, forced=True)
        else:
            stored = idtags.IdTagList(idtags.IdTag.from_row(row) for row in bank.get_id_tags())
            if stored.enforced:
                log.info("id tags: %d kept in the MemoryBank, in force", len(stored))
    if scenario_tag and stored.enforced and stored.get(scenario_tag) is None:
        log.warning("id tags: the scenario's tag %s is not in the list: its transactions will "
                    "be answered Invalid", scenario_tag)
    return stored


async def start_api(system: CentralSystem, host: str, port: int | str | None,
                    token: Optional[str]) -> Optional[web.AppRunner]:
    """Serve the control API in this event loop; None when it is off. ``port`` None is the
    default port, which, when another program has it, leaves the API off with a warning
    instead of stopping the central system (a second site on other ports still starts); a port
    asked for that is taken is a one-line error."""
    if port == OFF:
        return None
    try:
        runner = await _serve_api(system, host, DEFAULT_API_PORT if port is None else port, token)
    except PortTaken as exc:
        if port is not None:
            raise cli.SimError(f"{exc} (--api-port chooses another, 'off' none)") from None
        log.warning("%s: the control API is off (--api-port chooses another port)", exc)
        return None
    if token is None and host not in LOOPBACK:
        log.warning("the control API listens on %s without --api-token: anyone who reaches "
                    "it drives the charge points", host)
    return runner


class PortTaken(Exception):
    """The API's port is in use."""


async def _serve_api(system: CentralSystem, host: str, port: int,
                     token: Optional[str]) -> web.AppRunner:
    runner = web.AppRunner(api.create_app(system, token, loopback_only=is_loopback(host)), access_log=None,
                           shutdown_timeout=API_SHUTDOWN_S)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise PortTaken(f"API port {port} on {host} is in use") from None
        raise cli.SimError(f"cannot listen on {host}:{port} for the API: "
                           f"{exc.strerror or exc}") from None
    return runner


def bound_port(runner: Optional[web.AppRunner]) -> Optional[int]:
    """The port the API listens on (None: off)."""
    if runner is None or not runner.addresses:
        return None
    return runner.addresses[0][1]
