"""The CAN frame table, read from ev_charging.dbc so that the code and the DBC cannot drift.

The DBC also holds the bus's safety rule: the commands are repeated every ``COMMAND_CYCLE_S``
(``GenMsgCycleTime``), and the charger stops after ``WATCHDOG_TIMEOUT_S`` without one
(``WatchdogTimeout``), both in simulated seconds.

| ID    | name            | data                                  |
|-------|-----------------|---------------------------------------|
| 0x200 | ChargerStart    | empty                                 |
| 0x201 | ChargerStop     | empty                                 |
| 0x210 | SetCurrentLimit | uint16 little-endian, 0.1 A per bit   |
| 0x300 | MeasuredCurrent | uint16 little-endian, 0.1 A per bit   |
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import can
import cantools

DBC_PATH = Path(__file__).with_name("ev_charging.dbc")
DATABASE = cantools.database.load_file(str(DBC_PATH))

START = DATABASE.get_message_by_name("ChargerStart").frame_id
STOP = DATABASE.get_message_by_name("ChargerStop").frame_id
SET_LIMIT = DATABASE.get_message_by_name("SetCurrentLimit").frame_id
MEASURED_CURRENT = DATABASE.get_message_by_name("MeasuredCurrent").frame_id

COMMAND_CYCLE_S = DATABASE.get_message_by_frame_id(START).cycle_time / 1000
WATCHDOG_TIMEOUT_S = next(node.dbc.attributes["WatchdogTimeout"].value for node in DATABASE.nodes
                          if node.name == "Charger") / 1000

AMPS_PER_BIT = 0.1
MAX_AMPS = 0xFFFF * AMPS_PER_BIT
#: Distinct frames whose bytes or decoding are remembered (0.1 A steps of the usual currents).
_REMEMBERED = 8192


class FrameError(ValueError):
    """A frame with a known ID that cannot be decoded, or a value that cannot be encoded."""


@dataclass(frozen=True)
class Frame:
    """A decoded frame: its ID, its DBC name and the current it carries (A), if any."""

    arbitration_id: int
    name: str
    amps: Optional[float] = None


def _encode(frame_id: int, amps: Optional[float] = None) -> can.Message:
    if amps is not None and 0 <= amps <= MAX_AMPS:
        amps = round(amps, 1)
    return can.Message(arbitration_id=frame_id, data=_data(frame_id, amps), is_extended_id=False)


@functools.lru_cache(maxsize=_REMEMBERED)
def _data(frame_id: int, amps: Optional[float]) -> bytes:
    """The frame's data bytes, by cantools once for each value (a fleet sends the same few)."""
    message = DATABASE.get_message_by_frame_id(frame_id)
    values = {}
    if message.signals:
        if amps is None or not 0 <= amps <= MAX_AMPS:
            raise FrameError(f"{message.name}: current must be 0 to {MAX_AMPS:.1f} A, got {amps}")
        values[message.signals[0].name] = amps
    return bytes(message.encode(values, strict=True))


def start() -> can.Message:
    return _encode(START)


def stop() -> can.Message:
    return _encode(STOP)


def set_limit(amps: float) -> can.Message:
    return _encode(SET_LIMIT, amps)


def measured_current(amps: float) -> can.Message:
    return _encode(MEASURED_CURRENT, amps)


def decode(msg: can.Message) -> Optional[Frame]:
    """Decode a frame of the table; None for an ID the table does not have.

    Raises FrameError for a known ID with the wrong data length.
    """
    if msg.is_extended_id or msg.is_error_frame or msg.is_remote_frame:
        return None
    return _decode(msg.arbitration_id, bytes(msg.data))


@functools.lru_cache(maxsize=_REMEMBERED)
def _decode(frame_id: int, data: bytes) -> Optional[Frame]:
    """:func:`decode` of an ID and its data, by cantools once for each (a Frame is frozen)."""
    try:
        message = DATABASE.get_message_by_frame_id(frame_id)
    except KeyError:
        return None
    if len(data) != message.length:
        raise FrameError(f"{message.name} (0x{frame_id:03X}) needs {message.length} "
                         f"data bytes, got {len(data)}")
    amps = None
    if message.signals:
        amps = round(message.decode(data)[message.signals[0].name], 1)
    return Frame(frame_id, message.name, amps)


def decode_or_log(msg: can.Message, log: logging.Logger) -> Optional[Frame]:
    """:func:`decode`, but a known ID with the wrong length is logged and dropped: a bad frame
    must not stop a node."""
    try:
        return decode(msg)
    except FrameError as exc:
        log.warning("CAN frame ignored: %s", exc)
        return None
