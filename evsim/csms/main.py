#!/usr/bin/env python3
"""The OCPP 1.6J central system: serves charge points, drives the scenario, records everything.

Serves ws://HOST:PORT/<charge_point_id>, answers the charge point's messages, drives the chosen
scenario on every accepted charge point, analyses what each one sends (and the limits set on it)
for anomalies of every kind (evsim/csms/analysis.py), and records messages, metrics, sessions and
anomalies in the MemoryBank.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable, Sequence
from functools import partial
from ssl import SSLContext
from typing import Any, Optional

from evsim import cli
from evsim.bank import MemoryBank, MemoryBankError
from evsim.bank.writer import BankWriter
from evsim.clock import Clock
from evsim.constants import DEFAULT_CSMS_PORT
from evsim.csms import access, control, recovery
from evsim.csms.gate import Gate
from evsim.csms.limits import ConnectionLimit, raise_open_files_limit
from evsim.csms.mix import parse_mix
from evsim.csms.scenario import ID_TAG, SCENARIOS
from evsim.csms.security import ChargePointRegistry, Throttle
from evsim.csms.server import MAX_FRAME_BYTES, OPEN_TIMEOUT_S, CentralSystem, serve

log = logging.getLogger("csms")

CLOSE_TIMEOUT_S = 2.0


def first_transaction_id(path: Optional[str]) -> int:
    """One past the highest transaction id in the MemoryBank: unique across restarts."""
    with MemoryBank(path) as bank:
        return (bank.max_transaction_id() or 0) + 1


async def serve_forever(args: Any, writer: BankWriter, supervisor: cli.Supervisor,
                        ready: Optional[Callable[[int], None]] = None,
                        clock: Optional[Clock] = None, registry: ChargePointRegistry | None = None,
                        tls: SSLContext | None = None, gate: Gate | None = None) -> None:
    """Serve until ``supervisor.stop`` is set, then close every open episode; ``ready(port)`` is
    called once listening. ``registry``, ``tls`` and ``gate``: see :mod:`evsim.csms.access`."""
    clock = clock or Clock(args.speed)
    mix = getattr(args, "scenario_mix", None)
    system = CentralSystem(writer, supervisor, clock, scenario=args.scenario, cycles=args.cycles,
                           mix=mix,
                           heartbeat_interval=args.heartbeat_interval,
                           first_transaction_id=first_transaction_id(args.db),
                           id_tags=control.load_id_tags(
                               args.db, getattr(args, "id_tags", None),
                               None if args.scenario == "none" and mix is None else ID_TAG),
                           ca=control.certificate_authority(args))
    system.security = registry
    recovery.end_left_open(args.db, system.registry)
    server = await serve(system.handle, args.host, args.port, ssl=tls, process_request=gate,
                         max_frame_bytes=getattr(args, "max_frame_bytes", MAX_FRAME_BYTES),
                         open_timeout=getattr(args, "open_timeout", OPEN_TIMEOUT_S))
    port = server.sockets[0].getsockname()[1]
    try:
        api = await control.start_api(system, args.host, getattr(args, "api_port", "off"),
                                      getattr(args, "api_token", None))
    except cli.SimError:
        server.close()
        raise
    if api is not None:
        log.info("control API on http://%s:%d%s", args.host, control.bound_port(api),
                 control.api.PREFIX)
    scheme = "wss" if tls else "ws"
    scenario = f"mix {mix} (seed {mix.seed})" if mix else args.scenario
    log.info("central system on %s://%s:%d/<charge_point_id>, scenario %s, cycles %s, speed %g",
             scheme, args.host, port, scenario, args.cycles or "forever", clock.speed)
    cli.announce(writer, f"csms listening on {scheme}://{args.host}:{port}",
                 {"host": args.host, "port": port, "scenario": args.scenario if not mix else None,
                  "scenario_mix": str(mix) if mix else None, "seed": mix.seed if mix else None,
                  "cycles": args.cycles, "speed": clock.speed, "tls": tls is not None,
                  "registry": registry is not None, "api_port": control.bound_port(api)})
    if ready:
        ready(port)
    try:
        await supervisor.stop.wait()
    finally:
        if api is not None:
            await api.cleanup()
        for station in system.registry:
            system.stop_scenario(station)
        server.close()
        try:  # a client stalled in its handshake must not hold the stop for its whole timeout
            await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT_S)
        except TimeoutError:
            log.warning("stopped without waiting for connections still opening")
        system.shutdown()
        writer.event("PROCESS_STOP", "csms stopped")


async def amain(args: Any, supervisor: cli.Supervisor) -> None:
    cli.tune_gc()
    clock = Clock(args.speed)
    registry, tls = access.configure(args)
    raise_open_files_limit(args.max_connections)
    try:
        writer = BankWriter(args.db, "csms", clock.now)
    except (MemoryBankError, OSError) as exc:
        raise cli.SimError(f"MemoryBank: {exc}") from None
    gate = Gate(registry, partial(access.refused, writer), Throttle(base=args.refusal_delay),
                limit=ConnectionLimit(args.max_connections, partial(access.busy, writer)))
    try:
        await serve_forever(args, writer, supervisor, clock=clock, registry=registry, tls=tls,
                            gate=gate)
    finally:
        cli.close_writer(writer)


class ListScenarios(argparse.Action):
    """--list-scenarios: print the scenario names, one a line, and exit 0 (for run_all.sh)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: Optional[str] = None) -> None:
        print("\n".join(SCENARIOS))
        parser.exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.make_parser("csms.py", __doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=cli.port_number, default=DEFAULT_CSMS_PORT,
                        help=f"port to bind, 0 for any free one (default: {DEFAULT_CSMS_PORT})")
    driven = parser.add_mutually_exclusive_group()
    driven.add_argument("--scenario", choices=SCENARIOS, default="fluctuation",
                        help="what to drive on every charge point (default: fluctuation)")
    driven.add_argument("--scenario-mix", metavar="NAME=WEIGHT,...",
                        help="a scenario per charge point, drawn from its id and --seed with "
                             "these weights, e.g. fluctuation=0.1,normal=0.9")
    parser.add_argument("--seed", type=cli.non_negative_int, metavar="N",
                        help="seed of --scenario-mix (default: 0)")
    parser.add_argument("--list-scenarios", action=ListScenarios,
                        help="print the scenario names, one a line, and exit")
    parser.add_argument("--cycles", type=cli.non_negative_int, default=0, metavar="N",
                        help="stop the scenario after N cycles, 0 = forever (default: 0)")
    parser.add_argument("--heartbeat-interval", type=cli.non_negative_int, default=60,
                        metavar="S", help="heartbeat interval given at boot, seconds before "
                                          "--speed (default: 60)")
    access.add_arguments(parser)
    control.add_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.run(lambda args: cli.run_async(amain, with_mix(args), fast_loop=True),
                   build_parser(), argv)


def with_mix(args: argparse.Namespace) -> argparse.Namespace:
    """``--scenario-mix`` parsed with ``--seed`` (a one-line usage error if it is bad, or if
    ``--seed`` comes without it)."""
    if args.scenario_mix is None and args.seed is not None:
        raise cli.UsageError("--seed is the seed of --scenario-mix, which is not given")
    if args.scenario_mix is not None:
        try:
            args.scenario_mix = parse_mix(args.scenario_mix, args.seed or 0)
        except ValueError as exc:
            raise cli.UsageError(f"--scenario-mix: {exc}") from None
    return args


if __name__ == "__main__":
    raise SystemExit(main())
