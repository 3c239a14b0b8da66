"""Core profile, message by message, against a central system written with the ocpp library in
the test (cp_fakes.LibraryCentral) over a real loopback WebSocket: the answer, the status
notifications that follow, and what is kept in the state file."""
from __future__ import annotations

import pytest
from conftest import wait_for_async as until
from cp_fakes import FakeLink, FakeRecorder, site
from ocpp.v16 import call

from evsim.canbus import frames
from evsim.clock import FakeClock
from evsim.cp import main
from evsim.cp.certificates import CERT_NAME
from evsim.cp.config import usable_profile
from evsim.cp.station import Station
from evsim.cp.store import StateStore

KEY = "0123456789abcdef0123"  # 20 characters


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def new_station(path, clock, **kwargs) -> Station:
    return Station("CP_W", StateStore(path), clock, writer=FakeRecorder(), link=FakeLink(),
                   **kwargs)


async def charging(s, id_tag="TAG"):
    assert (await s.call(call.RemoteStartTransaction(id_tag=id_tag))).status == "Accepted"
    await until(lambda: s.station.transaction and s.station.transaction.transaction_id,
                message="transaction id")
    await until(lambda: "Charging" in s.central.statuses(), message="Charging")


async def test_configuration_keys_are_typed_persisted_and_the_key_never_shown(tmp_path, clock):
    path = tmp_path / "state.db"
    station = new_station(path, clock)
    async with site(station) as s:
        everything = await s.call(call.GetConfiguration())
        keys = {k["key"]: k for k in everything.configuration_key}
        for core in ("AllowOfflineTxForUnknownId", "AuthorizationCacheEnabled",
                     "AuthorizeRemoteTxRequests", "ClockAlignedDataInterval", "ConnectionTimeOut",
                     "GetConfigurationMaxKeys", "HeartbeatInterval", "LocalAuthorizeOffline",
                     "LocalPreAuthorize", "MeterValuesAlignedData", "MeterValuesSampledData",
                     "MeterValueSampleInterval", "NumberOfConnectors", "ResetRetries",
                     "StopTransactionOnEVSideDisconnect", "StopTransactionOnInvalidId",
                     "StopTxnAlignedData", "StopTxnSampledData", "SupportedFeatureProfiles",
                     "TransactionMessageAttempts", "TransactionMessageRetryInterval",
                     "UnlockConnectorOnEVSideDisconnect", "LocalAuthListEnabled",
                     "LocalAuthListMaxLength", "SendLocalListMaxLength",
                     "ReserveConnectorZeroSupported", "ChargeProfileMaxStackLevel",
                     "AuthorizationKey", "SecurityProfile", "CpoName"):
            assert core in keys, core
        assert "value" not in keys["AuthorizationKey"]
        assert keys["SupportedFeatureProfiles"]["value"].split(",") == [
            "Core", "FirmwareManagement", "LocalAuthListManagement", "Reservation",
            "SmartCharging", "RemoteTrigger"]
        changes = [("AuthorizationKey", "short", "Rejected"), ("AuthorizationKey", "g" * 32,
                                                                "Rejected"),
                   ("AuthorizationKey", KEY, "Accepted"), ("AuthorizationKey", "ab" * 20,
                                                           "Accepted"),
                   ("SecurityProfile", "1", "Accepted"), ("SecurityProfile", "0", "Rejected"),
                   ("SecurityProfile", "4", "Rejected"),
                   ("MeterValuesSampledData", "Current.Import,Foo", "Rejected"),
                   ("MeterValuesSampledData", "Current.Import,Current.Offered", "Accepted"),
                   ("LocalPreAuthorize", "maybe", "Rejected"), ("LocalPreAuthorize", "TRUE",
                                                                 "Accepted"),
                   ("ConnectionTimeOut", "0", "Rejected"), ("ConnectionTimeOut", "30", "Accepted"),
                   ("NumberOfConnectors", "2", "Rejected"), ("Bogus", "1", "NotSupported")]
        for key, value, expected in changes:
            assert (await s.call(call.ChangeConfiguration(key=key, value=value))).status == \
                expected, (key, value)
        shown = await s.call(call.GetConfiguration(key=["AuthorizationKey", "LocalPreAuthorize"]))
        assert shown.configuration_key == [
            {"key": "AuthorizationKey", "readonly": False},
            {"key": "LocalPreAuthorize", "readonly": False, "value": "true"}]
        await until(lambda: len(s.central.of("SecurityEventNotification")) >= 3,
                    message="security events")
        assert {e["type"] for e in s.central.of("SecurityEventNotification")} == \
            {"ReconfigurationOfSecurityParameters"}
    records = repr(station.writer.events)
    assert KEY not in records and "ab" * 20 not in records and "***" in records
    again = new_station(path, clock)
    assert again.config["AuthorizationKey"] == "ab" * 20
    assert again.config["SecurityProfile"] == 1
    assert again.config["MeterValuesSampledData"] == "Current.Import,Current.Offered"
    assert again.config["LocalPreAuthorize"] is True and again.config["ConnectionTimeOut"] == 30


async def test_change_availability_now_scheduled_and_for_the_whole_charge_point(tmp_path, clock):
    path = tmp_path / "state.db"
    async with site(new_station(path, clock)) as s:
        change = call.ChangeAvailability
        assert (await s.call(change(connector_id=2, type="Inoperative"))).status == "Rejected"
        assert (await s.call(change(connector_id=1, type="Inoperative"))).status == "Accepted"
        await until(lambda: s.central.statuses()[-1] == "Unavailable", message="Unavailable")
        assert (await s.call(call.RemoteStartTransaction(id_tag="T"))).status == "Rejected"
        assert (await s.call(change(connector_id=1, type="Operative"))).status == "Accepted"
        await until(lambda: s.central.statuses()[-1] == "Available", message="Available")
        await charging(s)
        assert (await s.call(change(connector_id=0, type="Inoperative"))).status == "Scheduled"
        assert s.station.connector.status == "Charging"
        stop = call.RemoteStopTransaction(transaction_id=s.station.transaction.transaction_id)
        assert (await s.call(stop)).status == "Accepted"
        await until(lambda: s.central.statuses()[-1] == "Unavailable", message="applied")
        assert s.central.statuses(0) == ["Unavailable"]
    again = new_station(path, clock)
    assert again.connector.status == "Unavailable" and again.availability.wanted[0] == \
        "Inoperative"
    async with site(again) as s:  # told at boot
        assert s.central.statuses(0) == ["Unavailable"] and s.central.statuses() == \
            ["Unavailable"]


async def test_authorization_cache_remote_authorization_and_clear_cache(tmp_path, clock):
    async with site(new_station(tmp_path / "state.db", clock)) as s:
        s.central.id_tags["BAD"] = "Blocked"
        for key in ("AuthorizeRemoteTxRequests", "LocalPreAuthorize"):
            assert (await s.call(call.ChangeConfiguration(key=key, value="true"))).status == \
                "Accepted"
        assert (await s.call(call.RemoteStartTransaction(id_tag="BAD"))).status == "Accepted"
        await until(lambda: s.central.of("Authorize"), message="Authorize")
        await until(lambda: s.central.statuses()[-1] == "Available", message="back to Available")
        assert s.central.of("StartTransaction") == []
        assert s.station.auth.cache["BAD"]["status"] == "Blocked"
        await charging(s, "GOOD")
        assert [a["id_tag"] for a in s.central.of("Authorize")] == ["BAD", "GOOD"]
        await s.call(call.RemoteStopTransaction(
            transaction_id=s.station.transaction.transaction_id))
        await until(lambda: s.central.of("StopTransaction"), message="stopped")
        await until(lambda: s.central.statuses()[-1] == "Available", message="Available")
        await charging(s, "GOOD")  # cached and LocalPreAuthorize: no second Authorize
        assert len(s.central.of("Authorize")) == 2
        assert (await s.call(call.ClearCache())).status == "Accepted"
        assert s.station.auth.cache == {}
        assert (await s.call(call.ChangeConfiguration(key="AuthorizationCacheEnabled",
                                                      value="false"))).status == "Accepted"
        assert (await s.call(call.ClearCache())).status == "Rejected"


@pytest.mark.parametrize("kind", ["Soft", "Hard"])
async def test_reset_stops_the_transaction_and_boots_again(tmp_path, clock, kind):
    async with site(new_station(tmp_path / "state.db", clock)) as s:
        await charging(s)
        first = s.central
        assert (await s.call(call.Reset(type=kind))).status == "Accepted"
        await until(lambda: len(s.centrals) == 2 or clock.sleepers, message="disconnected")
        while len(s.centrals) < 2 or not s.central.of("BootNotification"):
            await clock.advance(1)  # the reconnection's backoff
            await until(lambda: True)
        await until(lambda: s.station.booted and s.central.statuses(), message="boot again")
        stops = first.of("StopTransaction") + s.central.of("StopTransaction")
        await until(lambda: first.of("StopTransaction") + s.central.of("StopTransaction"),
                    message="StopTransaction")
        stops = first.of("StopTransaction") + s.central.of("StopTransaction")
        assert [stop["reason"] for stop in stops] == [f"{kind}Reset"]
        if kind == "Soft":  # delivered before the connection closed
            assert first.of("StopTransaction")
        assert s.central.statuses() == ["Available"]
        assert (frames.STOP, None) in s.station.charger.link.frames
        await until(lambda: any(e["type"] == "ResetOrReboot" for c in s.centrals
                                for e in c.of("SecurityEventNotification")),
                    message="ResetOrReboot security event")


async def test_unlock_connector_stops_the_transaction(tmp_path, clock):
    async with site(new_station(tmp_path / "state.db", clock)) as s:
        assert (await s.call(call.UnlockConnector(connector_id=3))).status == "UnlockFailed"
        await charging(s)
        assert (await s.call(call.UnlockConnector(connector_id=1))).status == "Unlocked"
        await until(lambda: s.central.of("StopTransaction"), message="stop")
        assert s.central.of("StopTransaction")[0]["reason"] == "UnlockCommand"
        await until(lambda: s.central.statuses()[-2:] == ["Finishing", "Available"],
                    message="Finishing, Available")


def test_a_security_profile_the_charge_point_cannot_connect_with_is_rejected(tmp_path, clock,
                                                                              monkeypatch):
    """SecurityProfile 2 was Accepted over ws://, and the next start of cp.py failed."""
    monkeypatch.delenv("EV_SIM_AUTH_KEY", raising=False)
    assert [usable_profile("ws://h", None, True), usable_profile("ws://h", KEY, True),
            usable_profile("wss://h", KEY, False), usable_profile("wss://h", None, True)] == \
        [0, 1, 2, 3]
    path = tmp_path / "state.db"
    station = new_station(path, clock)
    args = main.build_parser().parse_args(["--url", "ws://127.0.0.1:9"])
    main.connect_credentials(args, station)
    assert station.change_configuration("SecurityProfile", "1") == "Rejected"  # no key
    assert station.change_configuration("AuthorizationKey", KEY) == "Accepted"
    assert station.change_configuration("SecurityProfile", "2") == "Rejected"  # ws://
    assert station.change_configuration("SecurityProfile", "1") == "Accepted"
    assert main.connect_credentials(args, new_station(path, clock)).profile == 1  # starts again

    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    files = tmp_path / "files"
    secure = new_station(tmp_path / "secure.db", clock, files=files)
    main.connect_credentials(main.build_parser().parse_args([
        "--url", "wss://127.0.0.1:9", "--security-profile", "2", "--auth-key-file",
        str(key_file)]), secure)
    assert secure.change_configuration("SecurityProfile", "3") == "Rejected"  # no certificate
    files.mkdir()
    (files / CERT_NAME).write_text("signed by the central system")
    assert secure.change_configuration("SecurityProfile", "3") == "Accepted"
