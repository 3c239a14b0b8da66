"""The frame table: encoding, decoding, bad frames, and agreement with the DBC file."""
import can
import cantools
import pytest

from evsim.canbus import frames


def test_ids_are_the_seed_protocols():
    assert (frames.START, frames.STOP, frames.SET_LIMIT, frames.MEASURED_CURRENT) == \
        (0x200, 0x201, 0x210, 0x300)


@pytest.mark.parametrize("amps", [0.0, 0.1, 32.0, 36.0, 100.0, 125.0, 6553.5])
def test_current_round_trips(amps):
    for encode in (frames.set_limit, frames.measured_current):
        msg = encode(amps)
        assert msg.dlc == 2 and not msg.is_extended_id
        assert frames.decode(msg).amps == amps


def test_layout_is_uint16_little_endian_tenths_of_an_amp():
    assert bytes(frames.set_limit(100).data) == b"\xe8\x03"
    assert bytes(frames.measured_current(12.3).data) == (123).to_bytes(2, "little")
    assert bytes(frames.measured_current(0.04).data) == b"\x00\x00"


def test_commands_are_empty():
    assert frames.decode(frames.start()) == frames.Frame(0x200, "ChargerStart")
    assert frames.decode(frames.stop()) == frames.Frame(0x201, "ChargerStop")
    assert frames.start().dlc == frames.stop().dlc == 0


@pytest.mark.parametrize("amps", [-0.1, 6553.6, float("nan"), None])
def test_out_of_range_current_is_refused(amps):
    with pytest.raises(frames.FrameError):
        frames.set_limit(amps)


@pytest.mark.parametrize("frame_id,data", [(0x210, b"\x01"), (0x300, b"\x01\x02\x03"),
                                           (0x200, b"\x00"), (0x201, b"\x00" * 8)])
def test_known_id_with_wrong_length_raises(frame_id, data):
    with pytest.raises(frames.FrameError, match="data bytes"):
        frames.decode(can.Message(arbitration_id=frame_id, data=data, is_extended_id=False))


def test_unknown_and_extended_ids_are_not_ours():
    assert frames.decode(can.Message(arbitration_id=0x123, data=b"\x01\x02",
                                     is_extended_id=False)) is None
    assert frames.decode(can.Message(arbitration_id=0x300, data=b"\x01\x02",
                                     is_extended_id=True)) is None


def test_cantools_decodes_what_the_module_encodes():
    dbc = cantools.database.load_file(str(frames.DBC_PATH))
    for amps in (0.0, 17.5, 100.0):
        assert dbc.decode_message(0x210, frames.set_limit(amps).data) == \
            {"CurrentLimit": pytest.approx(amps)}
        assert dbc.decode_message(0x300, frames.measured_current(amps).data) == \
            {"Current": pytest.approx(amps)}


def test_module_decodes_what_cantools_encodes():
    dbc = cantools.database.load_file(str(frames.DBC_PATH))
    for name, signal, frame_id in (("SetCurrentLimit", "CurrentLimit", 0x210),
                                   ("MeasuredCurrent", "Current", 0x300)):
        data = dbc.encode_message(name, {signal: 42.7})
        assert frames.decode(can.Message(arbitration_id=frame_id, data=data,
                                         is_extended_id=False)).amps == 42.7
    for name, frame_id in (("ChargerStart", 0x200), ("ChargerStop", 0x201)):
        data = dbc.encode_message(name, {})
        assert frames.decode(can.Message(arbitration_id=frame_id, data=data,
                                         is_extended_id=False)).name == name


def test_dbc_has_exactly_the_table():
    dbc = cantools.database.load_file(str(frames.DBC_PATH))
    assert {(m.frame_id, m.length) for m in dbc.messages} == \
        {(0x200, 0), (0x201, 0), (0x210, 2), (0x300, 2)}
    for name in ("SetCurrentLimit", "MeasuredCurrent"):
        (signal,) = dbc.get_message_by_name(name).signals
        assert (signal.start, signal.length, signal.byte_order, signal.is_signed,
                signal.scale, signal.unit) == (0, 16, "little_endian", False, 0.1, "A")
