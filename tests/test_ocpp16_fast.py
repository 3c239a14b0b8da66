"""The fast paths of an OCPP endpoint give what the libraries they stand in for give."""
from __future__ import annotations

import json
import uuid

import pytest
from ocpp.charge_point import (
    camel_to_snake_case,
    remove_nones,
    serialize_as_dict,
    snake_to_camel_case,
)
from ocpp.messages import Call, CallResult
from ocpp.v16 import call
from ocpp.v16.enums import ChargePointErrorCode, ChargePointStatus

from evsim.bank.values import _ENCODER, to_json
from evsim.ocpp16 import fast
from evsim.ocpp16.endpoint import Malformed, parse, redact, redact_frame


@pytest.mark.parametrize("raw", ['[2,"1","Heartbeat",{}]', '[3,"1",{"a":1.5e-7}]',
                                 '[2,"1","X",{"n":123456789012345678901234567890}]',
                                 '[2,"1","X",{"n":-9223372036854775809}]', b'[3,"1",{}]'])
def test_frames_read_as_json_reads_them(raw):
    assert fast.loads(raw, json.loads) == json.loads(raw)
    assert type(fast.loads(raw, json.loads)[-1].get("n", 0)) is int


@pytest.mark.parametrize("raw", ["[NaN]", "[1e400]", '["\\ud800"', "\ufeff[1]", "{"])
def test_what_orjson_refuses_is_judged_as_before(raw):
    with pytest.raises(Malformed):
        parse(raw)


def test_keys_convert_as_the_library_converts_them():
    payload = {"connectorId": 1, "meterValue": [{"sampledValue": [{"measurand": "SoC"}]}],
               "chargingProfileKind": "Absolute", "ocppCSMSURL": "x"}
    assert fast.snake_case(payload) == camel_to_snake_case(payload)
    assert fast._snake_key.cache_info().maxsize == fast._KEYS_REMEMBERED  # bounded


@pytest.mark.parametrize("payload, ok", [
    ({"connectorId": 1, "meterValue": [{"timestamp": "2024-01-01T00:00:00Z",
                                        "sampledValue": [{"value": "1"}]}]}, True),
    ({"connectorId": "1", "meterValue": []}, False),
    ({"connectorId": 1}, False),
    ({"connectorId": True, "meterValue": []}, False),
])
def test_a_schema_accepts_only_what_jsonschema_accepts(payload, ok):
    assert fast.valid(Call("1", "MeterValues", payload), "1.6") is ok


def test_decimal_schemas_and_unknown_actions_are_left_to_the_library():
    assert not fast.valid(Call("1", "SetChargingProfile", {}), "1.6")
    assert not fast.valid(Call("1", "NoSuchAction", {}), "1.6")
    assert fast.valid(CallResult("1", {}, "MeterValues"), "1.6")


@pytest.mark.parametrize("raw", ['{"key":"AuthorizationKey","value":"s"}',
                                 '{"key":"Authorization\\u004bey","value":"s"}'])
def test_a_secret_is_redacted_however_it_is_spelled(raw):
    assert redact_frame(json.loads(raw), raw) == redact(json.loads(raw))
    assert redact_frame(json.loads(raw), raw)["value"] == "***"


@pytest.mark.parametrize("value", [{"a": [1, 2.5e-05, None]}, {"x": 1e-7}, {"s": "é\n"},
                                   [2**70], {1: "a"}])
def test_json_columns_hold_the_standard_encoders_text(value):
    assert to_json(value, "data") == _ENCODER.encode(value)


@pytest.mark.parametrize("request_", [
    call.MeterValues(connector_id=1, transaction_id=None, meter_value=[
        {"timestamp": "2026-01-01T00:00:00.000Z",
         "sampledValue": [{"value": "1.0", "measurand": "Current.Import", "unit": "A"}]}]),
    call.StopTransaction(meter_stop=5, timestamp="t", transaction_id=7, reason=None,
                         transaction_data=[{"timestamp": "t", "sampled_value": [None, {}]}]),
    call.BootNotification(charge_point_model="M", charge_point_vendor="V",
                          firmware_version="1.0", meter_serial_number=None),
    call.StatusNotification(connector_id=1, error_code=ChargePointErrorCode.no_error,
                            status=ChargePointStatus.available),
    call.SignCertificate(csr="x"),
    call.Heartbeat(),
])
def test_a_call_payload_is_the_librarys(request_):
    made = fast.request_payload(request_)
    assert made == remove_nones(snake_to_camel_case(serialize_as_dict(request_)))
    assert json.dumps(made) == json.dumps(
        remove_nones(snake_to_camel_case(serialize_as_dict(request_))))


def test_message_ids_are_version_4_uuids_and_differ():
    ids = {fast.message_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(uuid.UUID(str(i)).version == 4 for i in ids)
