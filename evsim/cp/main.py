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
from evsim.charger.node import ChargerNode
from evsim.clock import Clock
from evsim.constants import CHARGER_PERIOD_S, DEFAULT_CSMS_URL
from evsim.cp import api, fleet, recording, store
from evsim.cp.config import usable_profile
from evsim.cp.connection import endpoint_url, keep_connected
from evsim.cp.security import PROFILES, Credentials, SecurityError, credentials, read_key
from evsim.cp.station import Station
from evsim.faults import kinds
from evsim.faults.labels import bank_recorder

log = logging.getLogger("cp")

SHUTDOWN_TIMEOUT_S = 3.0


async def amain(args: argparse.Namespace, supervisor: cli.Supervisor) -> None:
    ids = charge_point_ids(args)
    try:
        targets = {charge_point_id: endpoint_url(args.url, charge_point_id)
                   for charge_point_id in ids}
    except ValueError as exc:
        raise cli.UsageError(exc) from None
    on_can = ids[0] if args.count == 1 else args.can_id
    if len(ids) > 1:
        fleet.quiet(args.log_level)
    config = cli.can_config(args) if on_can is not None else None
    state_path = args.state or store.default_path(args.db)
    try:
        state = store.StateStore(state_path, grouped=True)
    except store.StateError as exc:
        raise cli.SimError(exc) from None
    clock = Clock(args.speed)
    try:
        writer = BankWriter(args.db, "cp", clock.now)
    except (MemoryBankError, OSError) as exc:
        state.close()
        raise cli.SimError(f"MemoryBank: {exc}") from None
    records = recording.recorder(writer, args.record)
    stations = [Station(charge_point_id, state, clock, writer=records, voltage=args.voltage,
                        default_limit=args.default_limit, charger_period=args.charger_period,
                        files=store.files_path(state_path, charge_point_id))
                for charge_point_id in ids]
    try:
        logins = {station.id: connect_credentials(args, station) for station in stations}
    except SecurityError as exc:
        writer.close()
        state.close()
        raise cli.UsageError(exc) from None
    inject(args, stations, writer)
    chargers: dict[str, ChargerNode] = {}
    link = None
    for station in stations:
        if station.id == on_can:
            link = CanLink(config, station.on_can_frame, station.on_bus_up, name="cp-can")
            station.charger.link = link
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, station.local_stop)
        else:
            chargers[station.id] = fleet.attach_charger(station, clock, args.charger_period)
    announced = ids[0] if len(ids) == 1 else f"{ids[0]}..{ids[-1]} ({len(ids)})"
    cli.announce(writer, f"cp {announced} started",
                 {"url": args.url, "speed": args.speed, "count": len(ids),
                  "can": canbus.describe(config) if config else None, "can_id": on_can,
                  "state": str(state_path), "inject": [str(spec) for spec in args.inject],
                  "seed": args.seed, "record": args.record}, ids[0] if len(ids) == 1 else None)
    log.info("charge point %s -> %s, CAN %s, speed %g, state %s", announced, args.url,
             f"{canbus.describe(config)} ({on_can})" if config else "in process", args.speed,
             state_path)
    for station in stations:
        station.recover()
        station.security_event("StartupOfTheDevice", f"cp.py {station.id} started")
    if len(stations) > 1:
        cli.tune_gc()  # the fleet built: thousands of objects that live as long as the process
    runner = await start_api(stations[0], args.api_port) if args.api_port is not None else None

    def start(station: Station) -> None:
        supervisor.start(keep_connected(station, targets[station.id], logins[station.id]),
                         f"{station.id} connection")
        for coroutine, name in fleet.station_tasks(station, chargers.get(station.id)):
            supervisor.start(coroutine, name)

    if link is not None:
        supervisor.start(link.run(), "CAN link")
    supervisor.start(fleet.boot_in_turn(stations, start, clock,
                                          fleet.STAGGER_S if args.stagger is None
                                          else args.stagger), "boot")
    if len(stations) > 1:
        supervisor.start(fleet.report(stations, clock), "fleet summary")
    try:
        await supervisor.stop.wait()
        await asyncio.gather(*(station.shut_down(timeout=SHUTDOWN_TIMEOUT_S)
                               for station in stations))
    finally:
        if runner is not None:
            await runner.cleanup()
        if link is not None:
            link.close()
        await supervisor.cancel()
        for station in stations:
            station.close_faults()
            writer.event("PROCESS_STOP", f"cp {station.id} stopped", None, station.id)
        state.close()
        cli.close_writer(writer)


def charge_point_ids(args: argparse.Namespace) -> list[str]:
    """``--id``, or the ``--count`` ids of a fleet; a ``--can-id`` that is not one of them, or
    ``--api-port`` with a fleet, is a usage error."""
    if args.count == 1:
        ignored = [name for name, value in (("--id-prefix", args.id_prefix),
                                            ("--stagger", args.stagger),
                                            ("--can-id", args.can_id)) if value is not None]
        if ignored:
            raise cli.UsageError(f"{', '.join(ignored)}: only with --count above 1")
        return [args.id]
    ids = fleet.fleet_ids(args.id_prefix or fleet.ID_PREFIX, args.count)
    if args.can_id is not None and args.can_id not in ids:
        raise cli.UsageError(f"--can-id {args.can_id} is not in the fleet "
                             f"({ids[0]}..{ids[-1]})")
    if args.api_port is not None:
        raise cli.UsageError("--api-port serves one charge point: not with --count")
    return ids


def inject(args: argparse.Namespace, stations: Sequence[Station], writer: BankWriter) -> None:
    """The faults of ``--inject`` into every station, their labels written through ``writer``;
    none: unchanged."""
    if not args.inject:
        return
    who = (f"charge point {stations[0].id}" if len(stations) == 1
           else f"each of {len(stations)} charge points")
    for spec in args.inject:
        log.warning("injecting %s (seed %d, %s)", spec, args.seed, who)
    for station in stations:
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
    fleet_options = parser.add_argument_group("fleet (many charge points in this process)")
    fleet_options.add_argument("--count", type=cli.positive_int, default=1, metavar="N",
                               help="run N charge points, each with its own connection and "
                                    "its own charger in process (default: 1, the one --id)")
    fleet_options.add_argument("--id-prefix", metavar="PREFIX",
                               help="with --count: ids PREFIX0001, PREFIX0002, ... "
                                    "(default: CP_)")
    fleet_options.add_argument("--stagger", type=cli.non_negative_float,
                               metavar="S", help="with --count: simulated seconds between two "
                                                 "boots; 0 connects all at once (default: 0.05)")
    fleet_options.add_argument("--can-id", metavar="ID",
                               help="with --count: the one charge point on the CAN bus, with "
                                    "charger_module.py (default: none, every charger in "
                                    "process)")
    parser.add_argument("--record", choices=recording.RECORD_CHOICES, default="all",
                        help="what to record in the MemoryBank: all (every OCPP message and "
                             "meter sample too) or state (connection, status, transactions, "
                             "faults: the central system records the traffic) (default: all)")
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
    return cli.run(lambda args: cli.run_async(amain, args, fast_loop=args.count > 1),
                   build_parser(), argv)
