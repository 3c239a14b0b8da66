"""The central system's security options (``--charge-points``, ``--tls-*``, ``--hash-key``,
the limits on connections): from flags to a registry and a TLS context, and the record of
every refusal."""
from __future__ import annotations

import argparse
import getpass
import logging
import ssl
import sys
from collections.abc import Sequence
from typing import Any

from evsim import cli
from evsim.csms.limits import MAX_CONNECTIONS, RETRY_AFTER_S
from evsim.csms.security import ChargePointRegistry, RegistryError, check_key, hash_key
from evsim.csms.server import MAX_FRAME_BYTES, OPEN_TIMEOUT_S
from evsim.security.tls import TlsError, server_context

log = logging.getLogger("csms")


class HashKey(argparse.Action):
    """--hash-key: read a key from standard input (never the command line, which ``ps``
    shows), print the salted hash a registry may keep, and exit."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        if sys.stdin.isatty():
            key = getpass.getpass("AuthorizationKey: ")
        else:
            key = sys.stdin.readline().rstrip("\r\n")
        try:
            check_key(key)
        except ValueError as exc:
            parser.exit(2, f"{parser.prog}: error: --hash-key: {exc}\n")
        print(hash_key(key))
        parser.exit(0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("security (OCPP 1.6 Security Whitepaper profiles 1-3)")
    group.add_argument("--charge-points", metavar="FILE",
                       help="TOML registry of the known charge points and their security "
                            "profiles; without it any charge point may connect")
    group.add_argument("--hash-key", action=HashKey,
                       help="read an AuthorizationKey from standard input, print the hash a "
                            "registry may keep instead of it, and exit")
    group.add_argument("--tls-cert", metavar="PEM", help="serve wss:// with this certificate")
    group.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    group.add_argument("--tls-client-ca", metavar="PEM",
                       help="ask charge points for a certificate issued by this CA (profile 3)")
    group.add_argument("--max-frame-bytes", type=cli.non_negative_int, default=MAX_FRAME_BYTES,
                       metavar="N", help="a frame above N bytes ends its connection with close "
                                         f"code 1009 and is not stored (default: {MAX_FRAME_BYTES})")
    group.add_argument("--refusal-delay", type=cli.non_negative_float, default=0.5, metavar="S",
                       help="wall seconds before the first refusal to an address is answered; "
                            "doubles with each further one, up to 8 s (default: 0.5)")
    group.add_argument("--max-connections", type=cli.non_negative_int, default=MAX_CONNECTIONS,
                       metavar="N", help="beyond N connections a new one gets HTTP 503 with "
                                         f"Retry-After: {RETRY_AFTER_S}, unless it replaces "
                                         "one of the same charge point; 0 = no limit "
                                         f"(default: {MAX_CONNECTIONS})")
    group.add_argument("--open-timeout", type=cli.positive_float, default=OPEN_TIMEOUT_S,
                       metavar="S", help="wall seconds a client has to finish its TCP, TLS and "
                                         "WebSocket handshakes before it is dropped "
                                         f"(default: {OPEN_TIMEOUT_S:g})")


def configure(args: argparse.Namespace) -> tuple[ChargePointRegistry | None,
                                                 ssl.SSLContext | None]:
    """The registry and the TLS context the flags ask for; one line for what does not fit."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise cli.UsageError("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        raise cli.UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    registry = None
    if args.charge_points:
        try:
            registry = ChargePointRegistry.load(args.charge_points)
        except RegistryError as exc:
            raise cli.SimError(exc) from None
        if registry.needs_tls and not args.tls_cert:
            raise cli.UsageError(f"{args.charge_points} has charge points on security profile "
                                 f"2 or 3, which need --tls-cert and --tls-key")
        if any(cp.security_profile == 3 for cp in registry.charge_points.values()) \
                and not args.tls_client_ca:
            raise cli.UsageError(f"{args.charge_points} has charge points on security profile "
                                 f"3, which needs --tls-client-ca")
    else:
        log.warning("no --charge-points registry: any charge point may connect, without "
                    "credentials")
    context = None
    if args.tls_cert:
        try:
            context = server_context(args.tls_cert, args.tls_key, args.tls_client_ca)
        except TlsError as exc:
            raise cli.SimError(exc) from None
    return registry, context


def refused(writer: Any, charge_point_id: str, peer: str, reason: str) -> None:
    """A refusal: one log line and a SECURITY event, the id shown escaped and cut short."""
    shown = ascii(charge_point_id[:64])
    log.warning("refused %s from %s: %s", shown, peer, reason)
    writer.event("SECURITY", f"refused {shown} from {peer}: {reason}",
                 {"charge_point_id": charge_point_id[:64], "peer": peer, "reason": reason},
                 charge_point_id[:64] or None)


def busy(writer: Any, charge_point_id: str, peer: str, limit: int) -> None:
    """The first refusal of a burst at the connection limit: one line and a SECURITY event
    (the rest of the burst is only counted, :mod:`evsim.csms.limits`)."""
    shown = ascii(charge_point_id[:64])
    log.warning("connection limit (%d) reached: refusing new connections with 503, the first "
                "%s from %s", limit, shown, peer)
    writer.event("SECURITY", f"connection limit ({limit}) reached: refused {shown} from {peer}",
                 {"charge_point_id": charge_point_id[:64], "peer": peer,
                  "reason": "connection limit", "max_connections": limit},
                 charge_point_id[:64] or None)
