"""The OCPP 1.6J charge point: one connector, bridged to the charger module over CAN.

Answers every message of OCPP 1.6J's six feature profiles and the security extension, drives
the charger with CAN 0x200/0x201/0x210 and meters the current it publishes on 0x300; with
--api-port a person or a script plugs in, presents idTags and puts in faults over HTTP. Transaction messages survive a lost connection and a restart of
the charge point itself (OCPP 1.6 §3.7): they are kept in a state file beside the MemoryBank.
``--inject KIND[:key=value,...]`` (repeatable) with ``--seed N`` makes it misreport on cue
(meter-freeze, meter-backwards, energy-drift, clock-skew, meter-gap, status-flap: see
evsim.faults), and records the ground truth of each fault as a label.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence

from aiohttp import web

from evsim import cli
from evsim.bank import MemoryBankError
from evsim.bank.writer import BankWriter
from evsim.canbus import bus as canbus
from evsim.canbus.link import CanLink
from evsim.clock import Clock
from evsim.constants import CHARGER_PERIOD_S, DEFAULT_CSMS_URL
from evsim.cp import api, metering, store
from evsim.cp.config import usable_profile
from evsim.cp.connection import endpoint_url, keep_connected
from evsim.cp.security import PROFILES, Credentials, SecurityError, credentials, read_key
from evsim.cp.station import Station
from evsim.faults import kinds
from evsim.faults.labels import bank_recorder

log = logging.getLogger("cp")

SHUTDOWN_TIMEOUT_S = 3.0


async def amain(args: argparse.Namespace, supervisor: cli.Supervisor) -> None:
    try:
        target = endpoint_url(args.url, args.id)
    except ValueError as exc:
        raise cli.UsageError(exc) from None
    config = cli.can_config(args)
    state_path = args.state or store.default_path(args.db)
    try:
        state = store.StateStore(state_path)
    except store.StateError as exc:
        raise cli.SimError(exc) from None
    clock = Clock(args.speed)
    try:
        writer = BankWriter(args.db, "cp", clock.now)
    except (MemoryBankError, OSError) as exc:
        state.close()
        raise cli.SimError(f"MemoryBank: {exc}") from None
    loop = asyncio.get_running_loop()
    station = Station(args.id, state, clock, writer=writer, voltage=args.voltage,
                      default_limit=args.default_limit, charger_period=args.charger_period,
                      files=store.files_path(state_path, args.id))
    try:
        credentials = connect_credentials(args, station)
    except SecurityError as exc:
        writer.close()
        state.close()
        raise cli.UsageError(exc) from None
    inject(args, station, writer)
    link = CanLink(config, station.on_can_frame, station.on_bus_up, name="cp-can")
    station.charger.link = link
    loop.add_signal_handler(signal.SIGUSR1, station.local_stop)
    cli.announce(writer, f"cp {args.id} started",
                 {"url": args.url, "speed": args.speed, "can": canbus.describe(config),
                  "state": str(state_path), "inject": [str(spec) for spec in args.inject],
                  "seed": args.seed}, args.id)
    log.info("charge point %s -> %s, CAN %s, speed %g, state %s", args.id, args.url,
             canbus.describe(config), args.speed, state_path)
    station.recover()
    station.security_event("StartupOfTheDevice", f"cp.py {args.id} started")
    runner = await start_api(station, args.api_port) if args.api_port is not None else None
    supervisor.start(link.run(), "CAN link")
    supervisor.start(keep_connected(station, target, credentials), "connection")
    supervisor.start(metering.run_meter(station), "meter")
    supervisor.start(metering.run_watchdog(station), "watchdog")
    supervisor.start(station.charger.keep_alive(), "CAN keep-alive")
    supervisor.start(metering.run_aligned(station), "clock-aligned meter")
    if station.status_faults is not None and station.status_faults.windows:
        supervisor.start(metering.run_status_faults(station), "injected status")
    try:
        await supervisor.stop.wait()
        await station.shut_down(timeout=SHUTDOWN_TIMEOUT_S)
    finally:
        if runner is not None:
            await runner.cleanup()
        link.close()
        await supervisor.cancel()
        station.close_faults()
        writer.event("PROCESS_STOP", f"cp {args.id} stopped", None, args.id)
        state.close()
        cli.close_writer(writer)


def inject(args: argparse.Namespace, station: Station, writer: BankWriter) -> None:
    """The faults of ``--inject``, their labels written through ``writer``; none: unchanged."""
    if not args.inject:
        return
    for spec in args.inject:
        log.warning("injecting %s (seed %d, charge point %s)", spec, args.seed, args.id)
    station.inject(args.inject, bank_recorder(writer, log), args.seed)


def inject_argument(text: str) -> kinds.FaultSpec:
    """``--inject``: a fault of this process, or a one-line error listing the valid ones."""
    try:
        return kinds.parse_inject(text, kinds.CHARGE_POINT)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def start_api(station: Station, port: int) -> web.AppRunner:
    """The control API on 127.0.0.1:``port``; a port in use is one line (cli.SimError)."""
    try:
        runner = await api.serve_api(station, port)
    except OSError as exc:
        raise cli.SimError(f"control API: cannot listen on 127.0.0.1:{port}: "
                           f"{exc.strerror or exc}") from None
    log.info("control API on http://127.0.0.1:%d%s", api.bound_port(runner), api.PREFIX)
    station.event("API_LISTENING", f"control API on 127.0.0.1:{api.bound_port(runner)}",
                  {"port": api.bound_port(runner)})
    return runner


def connect_credentials(args: argparse.Namespace, station: Station) -> Credentials:
    """The security profile in force: the one asked for, or a higher one the charge point was
    raised to before (a profile is never lowered), with the key it keeps or the one given."""
    initial_key = read_key(args.auth_key_file)
    station.config.highest_profile = lambda: usable_profile(  # no raise it cannot connect with
        args.url, station.config.values.get("AuthorizationKey") or initial_key,
        bool(args.client_cert and args.client_key) or bool(station.certificates.client_paths()))
    kept_profile = int(station.config.values.get("SecurityProfile", 0) or 0)
    profile = max(args.security_profile, kept_profile)
    if profile != args.security_profile:
        log.warning("security profile %d kept from before, not %d: a profile is only raised",
                    profile, args.security_profile)
    return credentials(profile, args.url,
                       lambda: station.config.values.get("AuthorizationKey") or initial_key,
                       args.ca_cert, args.client_cert, args.client_key,
                       station.certificates.client_paths)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("cp.py", __doc__.splitlines()[0], can_bus=True)
    parser.add_argument("--url", default=DEFAULT_CSMS_URL,
                        help=f"central system URL; the id is appended (default: {DEFAULT_CSMS_URL})")
    parser.add_argument("--id", default="CP_1", help="charge point id (default: CP_1)")
    parser.add_argument("--state", metavar="PATH",
                        help=f"the charge point's own state file (default: $EV_SIM_CP_STATE, "
                             f"else {store.DEFAULT_NAME} beside the MemoryBank)")
    parser.add_argument("--voltage", type=cli.positive_float, default=230.0, metavar="V",
                        help="nominal voltage for power, energy and W limits (default: 230)")
    parser.add_argument("--default-limit", type=cli.positive_float, default=32.0, metavar="A",
                        help="current limit without a charging profile (default: 32)")
    parser.add_argument("--charger-period", type=cli.positive_float, default=CHARGER_PERIOD_S,
                        metavar="S", help="the charger's 0x300 period before --speed; silent "
                                          "for 3 periods means Faulted (default: 1.0)")
    parser.add_argument("--api-port", type=cli.port_number, metavar="PORT",
                        help="serve the control API (plug in, present an idTag, ...) on "
                             "127.0.0.1:PORT, 0 for any free one (default: off)")
    parser.add_argument("--inject", type=inject_argument, action="append", default=[],
                        metavar="KIND[:key=value,...]",
                        help=kinds.inject_help(kinds.CHARGE_POINT))
    parser.add_argument("--seed", type=cli.non_negative_int, default=0, metavar="N",
                        help="seed of the injected faults (default: 0)")
    secure = parser.add_argument_group("security (OCPP 1.6 Security Whitepaper profiles 1-3)")
    secure.add_argument("--security-profile", type=int, choices=PROFILES, default=0,
                        help="0: none; 1: HTTP Basic auth; 2: Basic auth over TLS; 3: TLS with "
                             "a client certificate (default: 0)")
    secure.add_argument("--auth-key-file", metavar="FILE",
                        help="the AuthorizationKey for profiles 1 and 2, on the file's first "
                             "line (default: $EV_SIM_AUTH_KEY)")
    secure.add_argument("--ca-cert", metavar="PEM",
                        help="trust the central system's certificate if this CA issued it "
                             "(default: the system's CAs)")
    secure.add_argument("--client-cert", metavar="PEM", help="profile 3: this charge point's "
                                                             "certificate")
    secure.add_argument("--client-key", metavar="PEM", help="profile 3: its private key")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return cli.run(lambda args: cli.run_async(amain, args), build_parser(), argv)
