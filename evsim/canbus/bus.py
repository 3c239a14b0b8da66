"""Opens the CAN bus every process shares (shared/ARCHITECTURE.md, "The CAN bus across processes").

The bus is chosen, first match wins: ``--can-interface``/``--can-channel``; python-can's own
configuration (``CAN_INTERFACE``, ``CAN_CHANNEL``, ``~/can.conf`` ...); else the python-can-remote
server on loopback, because python-can's ``virtual`` bus does not cross process boundaries.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, Optional

import can
from can_remote.websocket import WebsocketClosed

DEFAULT_REMOTE_HOST = "127.0.0.1"
DEFAULT_REMOTE_PORT = 54701
DEFAULT_REMOTE_URL = f"ws://{DEFAULT_REMOTE_HOST}:{DEFAULT_REMOTE_PORT}/"

#: What a bus raises when it cannot be reached or was lost; a process reconnects on these.
BUS_ERRORS: tuple[type[BaseException], ...] = (can.CanError, OSError, WebsocketClosed)

log = logging.getLogger("canbus")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--can-interface", metavar="NAME",
                        help="python-can interface (remote, socketcan, virtual, ...); "
                             "default: python-can's configuration, else remote")
    parser.add_argument("--can-channel", metavar="CHANNEL",
                        help=f"channel of that interface (default for remote: {DEFAULT_REMOTE_URL})")


def server_command(port: int = DEFAULT_REMOTE_PORT, host: str = DEFAULT_REMOTE_HOST) -> list[str]:
    """The command that starts the default bus server."""
    return [sys.executable, "-m", "can_remote", "--interface", "virtual", "--channel", "0",
            "--host", host, "--port", str(port)]


def bus_config(interface: Optional[str] = None, channel: Optional[str] = None) -> dict[str, Any]:
    """Resolve the bus to open, as keyword arguments for :class:`can.Bus`.

    Raises ValueError for an interface python-can does not know.
    """
    given = {key: value for key, value in (("interface", interface), ("channel", channel)) if value}
    try:
        config = dict(can.util.load_config(config=given))
    except can.CanInterfaceNotImplementedError:
        if interface:
            raise ValueError(f"unknown CAN interface {interface!r}; python-can knows: "
                             f"{', '.join(sorted(can.VALID_INTERFACES))}") from None
        name = _configured_interface()
        if name:
            raise ValueError(f"unknown CAN interface {name!r} in python-can's configuration") from None
        config = {"interface": "remote", "channel": channel}
    if config["interface"] == "remote":
        config["channel"] = config.get("channel") or DEFAULT_REMOTE_URL
        _remote_address(str(config["channel"]))
    return config


def _remote_address(channel: str) -> tuple[str, int]:
    """Host and port of a python-can-remote channel; ValueError for one that cannot be."""
    from urllib.parse import urlparse
    url = urlparse(channel if "://" in channel else "ws://" + channel)
    try:
        port = url.port or DEFAULT_REMOTE_PORT
    except ValueError:
        port = -1
    if url.scheme not in ("ws", "wss") or not url.hostname or port < 0:
        raise ValueError(f"not a python-can-remote channel: {channel!r} "
                         f"(expected ws://HOST:PORT/)")
    return url.hostname, port


def _configured_interface() -> Optional[str]:
    config: dict[str, Any] = {}
    for source in (can.util.load_environment_config(), can.util.load_file_config()):
        for key in ("interface", "bustype"):
            config.setdefault("interface", source.get(key))
    return config.get("interface")


def describe(config: dict[str, Any]) -> str:
    return f"{config.get('interface')} {config.get('channel')}"


def hint(config: dict[str, Any]) -> str:
    """What to do when this bus is not reachable."""
    if config.get("interface") == "remote":
        host, port = _remote_address(str(config["channel"]))
        return "start it with: " + " ".join(server_command(port, host))
    if config.get("interface") == "socketcan":
        return (f"create it with: sudo ip link add dev {config.get('channel')} type vcan && "
                f"sudo ip link set up {config.get('channel')}")
    return "check the adapter and python-can's configuration"


def open_bus(config: dict[str, Any], stop: Optional[threading.Event] = None,
             retry_interval: float = 1.0) -> Optional[can.BusABC]:
    """Open the bus, retrying every ``retry_interval`` s; None if ``stop`` is set first.

    The first failure is reported in one line with the bus tried and how to start it; the
    retries after it are quiet, so a process waiting for the bus server does not flood its tab.
    """
    stop = stop or threading.Event()
    attempts = 0
    while not stop.is_set():
        attempts += 1
        try:
            bus = can.Bus(**config)
        except BUS_ERRORS as exc:
            if attempts == 1:
                log.warning("CAN bus %s not reachable (%s); %s; retrying every %gs",
                            describe(config), error_text(exc), hint(config), retry_interval)
            else:
                log.debug("CAN bus attempt %d failed: %s", attempts, error_text(exc))
            stop.wait(retry_interval)
            continue
        if attempts > 1:
            log.info("CAN bus %s connected", describe(config))
        return bus
    return None


def keep_open(config: dict[str, Any], session: Callable[[can.BusABC], None],
              stop: Optional[threading.Event] = None) -> None:
    """Run ``session(bus)`` on an open bus, and again on a reopened one whenever the bus is
    lost (``session`` raises one of BUS_ERRORS), until ``stop`` is set."""
    stop = stop or threading.Event()
    while not stop.is_set():
        bus = open_bus(config, stop)
        if bus is None:
            return
        try:
            session(bus)
        except BUS_ERRORS as exc:
            log.warning("CAN bus %s lost (%s); reconnecting", describe(config), error_text(exc))
        finally:
            shutdown_quietly(bus)


def shutdown_quietly(bus: can.BusABC) -> None:
    """Shut a bus down that may already be gone, without a second attempt from ``__del__``."""
    try:
        bus.shutdown()
    except Exception:  # noqa: BLE001 - the bus is gone either way
        bus._is_shutdown = True  # python-can's flag: BusABC.__del__ would try (and fail) again


def error_text(exc: BaseException) -> str:
    """An exception as a short phrase for a one-line message."""
    return str(exc).strip() or type(exc).__name__
