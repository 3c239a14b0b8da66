"""OCPP-J 1.6 framing and the error codes corrected at our boundary."""
import asyncio
import json
import logging

import jsonschema
import pytest
from conftest import wait_for
from ocpp.exceptions import (
    FormatViolationError,
    NotImplementedError,
    NotSupportedError,
    OCPPError,
    TypeConstraintViolationError,
)
from ocpp.messages import Call, CallError, CallResult, _validate_payload
from ocpp.routing import after, on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action
from ocpp_helpers import now_iso
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from evsim.ocpp16 import endpoint as ocpp16
from evsim.ocpp16.endpoint import BadCall, Malformed


@pytest.mark.parametrize("raw, reason", [
    ("[2, \"1\", \"Heartbeat\"", "not JSON"),
    ("{\"a\": 1}", "not a JSON array"),
    ("[]", "not a JSON array"),
    ("[5, \"1\", \"Heartbeat\", {}]", "unknown message type 5"),
    ("[true, \"1\", \"Heartbeat\", {}]", "unknown message type"),
    ("[2, 17, \"Heartbeat\", {}]", "no readable message id"),
    ("[3, \"1\"]", "a CALLRESULT"),
    ("[4, \"1\", 5]", "a CALLERROR"),
    ("[2, \"1\", \"DataTransfer\", {\"vendorId\": \"v\", \"data\": NaN}]", "not JSON"),
    ("[2, \"1\", \"DataTransfer\", {\"vendorId\": \"v\", \"data\": -Infinity}]", "not JSON"),
    ("[3, \"1\", {\"value\": 1e400}]", "not JSON"),
    ("[2, \"1\", \"DataTransfer\", " + "[" * 100000 + "]" * 100000 + "]", "nested too deeply"),
])
def test_frames_that_are_ignored(raw, reason):
    with pytest.raises(Malformed, match=reason):
        ocpp16.parse(raw)


@pytest.mark.parametrize("raw", ["[2, \"m1\", \"Heartbeat\"]", "[2, \"m1\", \"Heartbeat\", []]",
                                 "[2, \"m1\", 7, {}]", "[2, \"m1\", \"Heartbeat\", {}, 1]"])
def test_bad_calls_with_a_readable_id_are_formation_violations(raw):
    with pytest.raises(BadCall) as caught:
        ocpp16.parse(raw)
    assert (caught.value.unique_id, caught.value.error.code) == ("m1", "FormationViolation")


def test_well_formed_frames():
    assert isinstance(ocpp16.parse('[2,"a","Heartbeat",{}]'), Call)
    assert ocpp16.parse('[3,"a",{"x":1}]').payload == {"x": 1}
    error = ocpp16.parse('[4,"a","GenericError","boom",{}]')
    assert isinstance(error, CallError) and error.error_code == "GenericError"
    assert isinstance(ocpp16.parse('[3,"a",{}]'), CallResult)


def test_unknown_action_is_not_implemented_and_known_one_not_supported():
    assert ocpp16.unknown_action("FooBar").code == "NotImplemented"
    assert ocpp16.unknown_action("Reset").code == "NotSupported"
    assert ocpp16.unknown_action("FooBar").description == "Requested Action is not known by receiver"


def test_library_codes_are_corrected():
    assert ocpp16.to_ocpp16(FormatViolationError(details={"cause": "x"})).code == \
        "FormationViolation"
    assert ocpp16.to_ocpp16(NotImplementedError()).code == "NotSupported"
    assert ocpp16.to_ocpp16(NotSupportedError()).code == "NotImplemented"
    kept = ocpp16.to_ocpp16(TypeConstraintViolationError(details={"cause": "y", "ocpp_message": 1}))
    assert (kept.code, kept.details) == ("TypeConstraintViolation", {"cause": "y"})


def library_error(action: str, payload: dict) -> OCPPError:
    """The error the ocpp library raises for an invalid CALL payload."""
    with pytest.raises(OCPPError) as caught:
        _validate_payload(Call("m1", action, payload), "1.6")
    return caught.value


def test_schema_failures_get_the_codes_1_6_names_for_them():
    bad_status = library_error("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                                      "status": "Dancing"})
    no_values = library_error("MeterValues", {"connectorId": 1, "meterValue": []})
    extra = library_error("Heartbeat", {"x": 1})
    assert ocpp16.to_ocpp16(bad_status).code == "PropertyConstraintViolation"
    assert "'Dancing' is not one of" in ocpp16.to_ocpp16(bad_status).details["cause"]
    assert ocpp16.to_ocpp16(no_values).code == "OccurenceConstraintViolation"
    assert ocpp16.to_ocpp16(extra).code == "FormationViolation"
    with pytest.raises(jsonschema.ValidationError) as schema_error:  # no 1.6 CALL has maxItems
        jsonschema.validate([1, 2], {"type": "array", "maxItems": 1})
    too_many = FormatViolationError(details={"cause": "too many"})
    too_many.__context__ = schema_error.value  # as the library raises it: while handling that
    assert ocpp16.to_ocpp16(too_many).code == "OccurenceConstraintViolation"


class Recording(ocpp16.Endpoint):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ignored: list[str] = []

    def on_ignored(self, raw, reason: str) -> None:
        self.ignored.append(reason)


async def test_a_call_that_timed_out_is_forgotten_and_its_late_answer_ignored():
    requests: asyncio.Queue = asyncio.Queue()

    async def slow_central(connection):
        async for raw in connection:
            await requests.put((connection, json.loads(raw)[1]))

    async with serve(slow_central, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/CP", subprotocols=["ocpp1.6"]) as connection:
            endpoint = Recording("CP", connection, response_timeout=0.2)
            reader = asyncio.create_task(endpoint.start())
            with pytest.raises(asyncio.TimeoutError):
                await endpoint.call(call.Heartbeat(), suppress=False)
            assert endpoint._sent_calls == {}
            central, unique_id = await requests.get()
            await central.send(json.dumps([3, unique_id, {"currentTime": now_iso()}]))
            await asyncio.to_thread(wait_for, lambda: endpoint.ignored, 5)
            assert endpoint.ignored == ["a response to no CALL of ours"]
            assert endpoint._response_queue.empty()
            reader.cancel()


def profile(limit: float) -> dict:
    return {"chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Relative", "chargingSchedule": {
                "chargingRateUnit": "A", "chargingSchedulePeriod": [
                    {"startPeriod": 0, "limit": limit}]}}


class Failing(ocpp16.Endpoint):
    """Handlers that succeed, raise, or raise once they have answered."""

    @on(Action.set_charging_profile)
    def on_set_charging_profile(self, connector_id, cs_charging_profiles):
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.remote_start_transaction)
    def on_remote_start(self, id_tag, **kwargs):
        return call_result.RemoteStartTransaction(status="Accepted")

    @on(Action.clear_cache)
    def on_clear_cache(self):
        raise RuntimeError("boom\n  and a second line")

    @on(Action.reset)
    def on_reset(self, type):
        return call_result.Reset(status="Accepted")

    @after(Action.reset)
    async def after_reset(self, type):
        raise KeyError(type)


async def test_any_failure_of_a_call_is_a_callerror_and_the_connection_serves_on(caplog):
    """1e300 makes the library's Decimal check of ``limit`` raise InvalidOperation, which no
    OCPPError handler caught: the connection died."""
    connected: asyncio.Future = asyncio.get_running_loop().create_future()

    async def central(connection):
        connected.set_result(connection)
        await connection.wait_closed()

    caplog.set_level(logging.INFO)
    async with serve(central, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/CP", subprotocols=["ocpp1.6"]) as connection:
            reader = asyncio.create_task(Failing("CP", connection).start())
            peer = await asyncio.wait_for(connected, 5)

            async def ask(action: str, payload: dict) -> list:
                await peer.send(json.dumps([2, action, action, payload]))
                return json.loads(await asyncio.wait_for(peer.recv(), 5))

            big = await ask("SetChargingProfile", {"connectorId": 1,
                                                   "csChargingProfiles": profile(1e300)})
            assert big[:3] == [4, "SetChargingProfile", "PropertyConstraintViolation"]
            big = await ask("RemoteStartTransaction", {"idTag": "T",
                                                       "chargingProfile": profile(1e300)})
            assert big[:3] == [4, "RemoteStartTransaction", "PropertyConstraintViolation"]
            assert (await ask("ClearCache", {}))[:3] == [4, "ClearCache", "InternalError"]
            assert await ask("Reset", {"type": "Soft"}) == [3, "Reset", {"status": "Accepted"}]
            fine = await ask("SetChargingProfile", {"connectorId": 1,
                                                    "csChargingProfiles": profile(16.0)})
            assert fine == [3, "SetChargingProfile", {"status": "Accepted"}]
            assert not reader.done()
            reader.cancel()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == [
        "CP: ClearCache ClearCache failed: RuntimeError: boom and a second line",
        "CP: Reset Reset failed after its answer: KeyError: 'Soft'"]
    assert all(r.exc_info is None for r in errors)
