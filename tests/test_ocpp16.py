"""OCPP-J 1.6 framing and the error codes corrected at our boundary."""
import pytest
from ocpp.exceptions import (FormatViolationError, NotImplementedError, NotSupportedError,
                             TypeConstraintViolationError)
from ocpp.messages import Call, CallError, CallResult

import ocpp16
from ocpp16 import BadCall, Malformed


@pytest.mark.parametrize("raw, reason", [
    ("[2, \"1\", \"Heartbeat\"", "not JSON"),
    ("{\"a\": 1}", "not a JSON array"),
    ("[]", "not a JSON array"),
    ("[5, \"1\", \"Heartbeat\", {}]", "unknown message type 5"),
    ("[true, \"1\", \"Heartbeat\", {}]", "unknown message type"),
    ("[2, 17, \"Heartbeat\", {}]", "no readable message id"),
    ("[3, \"1\"]", "a CALLRESULT"),
    ("[4, \"1\", 5]", "a CALLERROR"),
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
