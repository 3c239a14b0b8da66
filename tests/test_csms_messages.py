"""Every message an OCPP 1.6J charge point may send, security extension included, answered by the
central system, recorded as an event of its own type and shown by memory_viewer.py --events
--type; SignCertificate signed with the central system's CA (then CertificateSigned) or Rejected;
StopTransaction's transactionData as metrics; an unknown connector or transaction answered and
recorded. The charge point is written with the ``ocpp`` library only."""
from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from ocpp.v16 import call
from ocpp_helpers import meter_value

from evsim import cli
from evsim.bank import MemoryBank
from evsim.csms import actions, control, journal
from evsim.csms.registry import Station
from evsim.security import pki
from evsim.timefmt import ocpp_time
from evsim.viewer import main as viewer

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return ocpp_time(T0 + timedelta(seconds=seconds))




async def test_every_charge_point_message_is_answered_recorded_and_shown(site, db_path, capsys):
    central = await site()
    cp = await central.connect("CP_1")  # BootNotification
    assert (await cp.call(call.Heartbeat())).current_time
    assert (await cp.call(call.Authorize(id_tag="TAG"))).id_tag_info == {"status": "Accepted"}
    transfer = await cp.call(call.DataTransfer(vendor_id="com.acme", message_id="ping", data="1"))
    assert transfer.status == "UnknownVendorId"
    await cp.call(call.DiagnosticsStatusNotification(status="Uploaded"))
    await cp.call(call.FirmwareStatusNotification(status="Installed"))
    await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                          status="Preparing"))
    started = await cp.call(call.StartTransaction(connector_id=1, id_tag="TAG", meter_start=1000,
                                                  timestamp=at(0)))
    tx = started.transaction_id
    await cp.call(call.MeterValues(connector_id=1, transaction_id=tx,
                                   meter_value=meter_value(16.0, 1000)))
    data = [{"timestamp": at(60), "sampledValue": [
                {"value": "1150", "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": "16.0", "measurand": "Current.Import", "unit": "A"}]},
            {"timestamp": "not a time", "sampledValue": [{"value": "1"}]}]
    stopped = await cp.call(call.StopTransaction(meter_stop=1200, timestamp=at(120),
                                                 transaction_id=tx, reason="EVDisconnected",
                                                 id_tag="TAG", transaction_data=data))
    assert stopped.id_tag_info == {"status": "Accepted"}
    await cp.call(call.LogStatusNotification(status="Uploaded", request_id=7))
    await cp.call(call.SecurityEventNotification(type="SettingSystemTime", timestamp=at(5),
                                                 tech_info="ntp"))
    _, csr = pki.make_csr("CP_1")
    signed = await cp.call(call.SignCertificate(csr=pki.pem(csr).decode()))
    assert signed.status == "Rejected"  # no CA configured
    await cp.call(call.SignedFirmwareStatusNotification(status="SignatureVerified",
                                                        request_id=1))

    expected = {
        "BootNotification": "BootNotification: V M: Accepted",
        "Heartbeat": "Heartbeat: heartbeat",
        "Authorize": "Authorize: idTag TAG: Accepted",
        "DataTransfer": "DataTransfer: vendor com.acme message ping: UnknownVendorId",
        "DiagnosticsStatusNotification": "DiagnosticsStatusNotification: diagnostics upload "
                                         "Uploaded",
        "FirmwareStatusNotification": "FirmwareStatusNotification: firmware Installed",
        "StatusNotification": "StatusNotification: connector 1 Preparing (NoError)",
        "StartTransaction": f"StartTransaction: connector 1, idTag TAG: transaction {tx} "
                            "Accepted",
        "MeterValues": f"MeterValues: connector 1, transaction {tx}: 4 sampled values",
        "StopTransaction": f"StopTransaction: transaction {tx} stopped (EVDisconnected), meter "
                           "1200 Wh",
        "LogStatusNotification": "LogStatusNotification: log upload Uploaded (request 7)",
        "SecurityEventNotification": "SecurityEventNotification: security event "
                                     "SettingSystemTime: ntp",
        "SignCertificate": "SignCertificate: certificate signing request: Rejected",
        "SignedFirmwareStatusNotification": "SignedFirmwareStatusNotification: signed firmware "
                                            "SignatureVerified (request 1)",
    }
    assert set(expected) == set(actions.CHARGE_POINT_MESSAGES)
    for action, description in expected.items():
        (event,) = await central.events(actions.event_type(action))
        assert (event["description"], event["charge_point_id"], event["source"]) == \
            (description, "CP_1", "csms"), action
    (meters,) = await central.events("METER_VALUES")
    assert meters["data"]["request"] == {"connectorId": 1, "transactionId": tx,
                                         "sampledValues": 4}
    (security,) = await central.events("SECURITY_EVENT_NOTIFICATION")
    assert security["data"] == {"request": {"type": "SettingSystemTime", "timestamp": at(5),
                                            "techInfo": "ntp"}, "response": {}}

    status, shown = await central.request("GET", "/charge-points/CP_1")
    assert status == 200
    assert shown["reports"]["FirmwareStatusNotification"]["status"] == "Installed"
    assert shown["reports"]["SecurityEventNotification"]["techInfo"] == "ntp"
    assert shown["connectors"]["1"]["status"] == "Preparing" and shown["transactionId"] is None

    await central.stop()
    with MemoryBank(db_path, readonly=True) as bank:
        energy = [(m["value"], m["transaction_id"]) for m in bank.get_metrics("energy")]
        assert (1150.0, tx) in energy  # the transactionData
        (session,) = bank.get_sessions()
        assert (session["meter_stop_wh"], session["stop_reason"]) == (1200, "EVDisconnected")
    capsys.readouterr()
    assert viewer.main(["--db", str(db_path), "--events", "5", "--type",
                        "SECURITY_EVENT_NOTIFICATION", "--json"]) == 0
    (shown_event,) = json.loads(capsys.readouterr().out)["events"]
    assert shown_event["description"] == expected["SecurityEventNotification"]


async def test_unknown_connectors_and_transactions_are_answered_and_recorded(site):
    central = await site()
    cp = await central.connect("CP_1")
    refused = await cp.call(call.StartTransaction(connector_id=0, id_tag="TAG", meter_start=0,
                                                  timestamp=at(0)))
    assert refused.id_tag_info == {"status": "Invalid"} and refused.transaction_id
    await cp.call(call.StatusNotification(connector_id=1, error_code="NoError",
                                          status="Available"))
    other = await cp.call(call.StartTransaction(connector_id=2, id_tag="TAG", meter_start=0,
                                                timestamp=at(0)))
    assert other.id_tag_info == {"status": "Invalid"}
    fine = await cp.call(call.StartTransaction(connector_id=1, id_tag="TAG", meter_start=0,
                                               timestamp=at(0)))
    assert fine.id_tag_info == {"status": "Accepted"}
    unknown = await cp.call(call.StopTransaction(meter_stop=5, timestamp=at(9),
                                                 transaction_id=987654))
    assert unknown.id_tag_info == {"status": "Accepted"}
    assert (await cp.call(call.Heartbeat())).current_time  # the handler carries on
    starts = await central.events("START_TRANSACTION", 3)
    assert [s["description"].rsplit(" ", 1)[-1] for s in starts] == ["Invalid", "Invalid",
                                                                     "Accepted"]
    (stop,) = await central.events("STOP_TRANSACTION")
    assert stop["description"] == "StopTransaction: transaction 987654 stopped (Local), meter 5 Wh"


# -- SignCertificate with a CA --------------------------------------------------------------------

async def test_sign_certificate_signs_with_the_ca_then_sends_certificate_signed(site):
    ca_key, ca_cert = pki.make_ca()
    central = await site(ca=(ca_key, ca_cert))
    cp = await central.connect("CP_1")
    key, csr = pki.make_csr("CP_1", "Fleet")
    assert (await cp.call(call.SignCertificate(csr=pki.pem(csr).decode()))).status == "Accepted"
    ((action, payload),) = await cp.requested(1)
    assert action == "CertificateSigned"
    certificate = x509.load_pem_x509_certificate(payload["certificateChain"].encode())
    certificate.verify_directly_issued_by(ca_cert)
    assert pki.common_name(certificate) == "CP_1"
    assert certificate.public_key().public_numbers() == key.public_key().public_numbers()
    (delivered,) = await central.events("CERTIFICATE")
    assert delivered["description"] == "CP_1: CertificateSigned -> Accepted"

    _, foreign = pki.make_csr("CP_2")
    assert (await cp.call(call.SignCertificate(csr=pki.pem(foreign).decode()))).status == \
        "Rejected"
    assert (await cp.call(call.SignCertificate(csr="not a CSR"))).status == "Rejected"
    refusals = (await central.events("CERTIFICATE", 3))[1:]
    assert refusals[0]["description"] == ("CP_1: CSR rejected: the CSR's common name 'CP_2' is "
                                          "not the charge point's id")
    assert refusals[1]["description"].startswith("CP_1: CSR rejected: not a PEM certificate "
                                                 "signing request")
    assert [action for action, _ in cp.received] == ["CertificateSigned"]
    with central.bank() as bank:
        assert "PRIVATE KEY" not in json.dumps(bank.get_recent_events(None))


def test_the_ca_comes_from_ca_cert_and_ca_key(tmp_path):
    key, cert = pki.make_ca()
    other_key, _ = pki.make_ca()
    paths = {name: str(tmp_path / f"{name}.pem") for name in ("cert", "key", "other")}
    pki.write(paths["cert"], cert)
    pki.write(paths["key"], key)
    pki.write(paths["other"], other_key)
    loaded_key, loaded_cert = control.certificate_authority(
        argparse.Namespace(ca_cert=paths["cert"], ca_key=paths["key"]))
    assert loaded_cert == cert
    assert loaded_key.public_key().public_numbers() == key.public_key().public_numbers()
    assert control.certificate_authority(argparse.Namespace(ca_cert=None, ca_key=None)) is None
    with pytest.raises(cli.UsageError, match="is not the key of --ca-cert"):
        control.certificate_authority(argparse.Namespace(ca_cert=paths["cert"],
                                                         ca_key=paths["other"]))
    with pytest.raises(cli.SimError, match="cannot read a PEM certificate"):
        control.certificate_authority(argparse.Namespace(ca_cert=paths["key"],
                                                         ca_key=paths["key"]))


# -- the pure parts -------------------------------------------------------------------------------

def test_every_charge_point_message_has_a_description_and_an_event_type():
    assert set(journal.DESCRIBE) == set(actions.CHARGE_POINT_MESSAGES)
    assert actions.event_type("SignedFirmwareStatusNotification") == \
        "SIGNED_FIRMWARE_STATUS_NOTIFICATION"
    assert actions.kebab("GetInstalledCertificateIds") == "get-installed-certificate-ids"
    assert sum(len(profile) for profile in actions.PROFILES.values()) == len(actions.ACTIONS)


def test_long_requests_are_summed_up_in_the_typed_event():
    assert journal.summary("SignCertificate", {"csr": "x" * 900}) == {"csr": "900 characters"}
    assert journal.summary("StopTransaction", {"transactionId": 1, "transactionData": [
        {"timestamp": "t", "sampledValue": [{"value": "1"}, {"value": "2"}]}]}) == \
        {"transactionId": 1, "transactionData": "2 sampled values"}
    assert journal.summary("Heartbeat", {}) == {}


def test_a_station_knows_the_connectors_it_reported():
    station = Station("CP", analyser=None)
    assert station.knows_connector(1) and station.knows_connector(7)
    assert not station.knows_connector(0) and not station.knows_connector(-1)
    station.connectors[0] = {"status": "Available"}
    assert station.knows_connector(3)  # connector 0 is the charge point itself
    station.connectors[1] = {"status": "Available"}
    assert station.knows_connector(1) and not station.knows_connector(2)
