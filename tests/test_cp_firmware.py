"""Firmware management and the security extension, message by message, against a central system
written with the ocpp library (cp_fakes.LibraryCentral) over a real loopback WebSocket: updates
(plain and signed), diagnostics and logs uploaded to a folder or a loopback HTTP server,
certificates, the charge point's own CSR, and security events kept across a restart."""
from __future__ import annotations

import asyncio
import base64
import os
import time
import zipfile
from datetime import timedelta

import pytest
from aiohttp import web
from conftest import wait_for_async as until
from cp_fakes import FakeLink, FakeRecorder, site
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from ocpp.v16 import call

from evsim.clock import FakeClock
from evsim.cp.station import Station
from evsim.cp.store import StateStore
from evsim.security import pki
from evsim.timefmt import ocpp_time


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def new_station(path, clock, files=None) -> Station:
    return Station("CP_W", StateStore(path), clock, writer=FakeRecorder(), link=FakeLink(),
                   files=files)


async def advance_until(clock: FakeClock, condition, message: str, limit: int = 600) -> None:
    """Move the fake clock a second at a time (letting the socket work in between) until
    ``condition()``; fail after ``limit`` simulated seconds or 10 s of wall time."""
    deadline = time.monotonic() + 10
    for _ in range(limit):
        if condition():
            return
        await clock.advance(1)
        await asyncio.sleep(0.005)
        if time.monotonic() > deadline:
            break
    pytest.fail(f"no {message} within {limit} simulated seconds")


def statuses(central, action="FirmwareStatusNotification"):
    return [p["status"] for c in central for p in c.of(action)]


async def test_update_firmware_downloads_installs_and_reboots(tmp_path, clock):
    image = tmp_path / "firmware-2.0.bin"
    image.write_bytes(b"new firmware")
    async with site(new_station(tmp_path / "state.db", clock)) as s:
        missing = call.UpdateFirmware(location=str(tmp_path / "nothing.bin"), retries=1,
                                      retry_interval=30, retrieve_date=ocpp_time(clock.now()))
        await s.call(missing)
        await advance_until(clock, lambda: statuses(s.centrals).count("DownloadFailed") == 2,
                            "two failed downloads")
        assert statuses(s.centrals) == ["Downloading", "DownloadFailed"] * 2
        retrieve = clock.now() + timedelta(seconds=100)
        await s.call(call.UpdateFirmware(location=image.as_uri(), retrieve_date=ocpp_time(
            retrieve)))
        await clock.advance(99)
        assert statuses(s.centrals) == ["Downloading", "DownloadFailed"] * 2
        await advance_until(clock, lambda: len(s.centrals) == 2 and s.station.booted,
                            "the reboot")
        assert statuses(s.centrals)[4:] == ["Downloading", "Downloaded", "Installing",
                                            "Installed"]
        assert s.central.of("BootNotification")[0]["firmware_version"] == "firmware-2.0.bin"
        await until(lambda: any(e["type"] == "FirmwareUpdated" for e in
                                s.central.of("SecurityEventNotification")),
                    message="FirmwareUpdated")


def signed_firmware(tmp_path, data: bytes):
    ca_key, ca = pki.make_ca("Manufacturer root")
    signer_key, signer = pki.issue(ca_key, ca, "Firmware signer")
    signature = base64.b64encode(signer_key.sign(data, ec.ECDSA(hashes.SHA256()))).decode()
    return ca, signer, signature


async def test_signed_update_firmware_checks_certificate_and_signature(tmp_path, clock):
    image = tmp_path / "fw-3.bin"
    image.write_bytes(b"signed firmware")
    ca, signer, signature = signed_firmware(tmp_path, image.read_bytes())
    now = ocpp_time(clock.now())
    firmware = {"location": str(image), "retrieveDateTime": now,
                "signingCertificate": pki.pem(signer).decode(), "signature": signature}
    async with site(new_station(tmp_path / "state.db", clock)) as s:
        update = call.SignedUpdateFirmware
        assert (await s.call(update(request_id=1, firmware=firmware))).status == \
            "InvalidCertificate"  # no ManufacturerRootCertificate yet
        result = await s.call(call.InstallCertificate(
            certificate_type="ManufacturerRootCertificate", certificate=pki.pem(ca).decode()))
        assert result.status == "Accepted"
        bad = {**firmware, "signature": base64.b64encode(b"x" * 64).decode()}
        assert (await s.call(update(request_id=2, firmware=bad))).status == "Accepted"
        await advance_until(clock, lambda: "InvalidSignature" in statuses(
            s.centrals, "SignedFirmwareStatusNotification"), "InvalidSignature")
        assert (await s.call(update(request_id=3, firmware=firmware))).status == "Accepted"
        await advance_until(clock, lambda: len(s.centrals) == 2 and s.central.of(
            "SignedFirmwareStatusNotification"), "Installed after the reboot")
        notes = [(p["request_id"], p["status"]) for c in s.centrals
                 for p in c.of("SignedFirmwareStatusNotification")]
        assert notes == [(2, "Downloading"), (2, "Downloaded"), (2, "InvalidSignature"),
                         (3, "Downloading"), (3, "Downloaded"), (3, "SignatureVerified"),
                         (3, "Installing"), (3, "InstallRebooting"), (3, "Installed")]
        await until(lambda: {"InvalidFirmwareSigningCertificate", "InvalidFirmwareSignature",
                             "FirmwareUpdated"} <= {e["type"] for c in s.centrals
                                                    for e in c.of("SecurityEventNotification")},
                    message="the security events")


async def test_get_diagnostics_uploads_an_archive_to_a_folder_or_loopback_http(tmp_path, clock):
    received: list[bytes] = []

    async def put(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response(status=201)
    app = web.Application()
    app.router.add_put("/upload/{name}", put)
    runner = web.AppRunner(app)
    await runner.setup()
    http = web.TCPSite(runner, "127.0.0.1", 0)
    await http.start()
    port = runner.addresses[0][1]
    folder = tmp_path / "uploads"
    folder.mkdir()
    try:
        station = new_station(tmp_path / "state.db", clock)
        station.change_configuration("AuthorizationKey", "secret-key-0123456")
        async with site(station) as s:
            result = await s.call(call.GetDiagnostics(location=str(folder) + "/"))
            await until(lambda: statuses(s.centrals, "DiagnosticsStatusNotification") ==
                        ["Uploading", "Uploaded"], message="Uploaded")
            archive = folder / result.file_name
            with zipfile.ZipFile(archive) as zipped:
                assert set(zipped.namelist()) == {"state.json", "cp.log"}
                state = zipped.read("state.json").decode()
            assert '"chargePointId": "CP_W"' in state and "secret-key" not in state
            result = await s.call(call.GetDiagnostics(
                location=f"http://127.0.0.1:{port}/upload/"))
            await until(lambda: len(received) == 1, message="the PUT")
            assert zipfile.is_zipfile(__import__("io").BytesIO(received[0]))
            await s.call(call.GetDiagnostics(location="ftp://example.com/x", retries=1,
                                             retry_interval=5))
            await advance_until(clock, lambda: statuses(
                s.centrals, "DiagnosticsStatusNotification")[-1] == "UploadFailed",
                "UploadFailed")
            log = await s.call(call.GetLog(log={"remoteLocation": folder.as_uri() + "/"},
                                           log_type="SecurityLog", request_id=7))
            assert log.status == "Accepted"
            await until(lambda: [p["status"] for p in s.central.of("LogStatusNotification")]
                        == ["Uploading", "Uploaded"], message="the security log")
            assert {p["request_id"] for p in s.central.of("LogStatusNotification")} == {7}
            with zipfile.ZipFile(folder / log.filename) as zipped:
                assert "ReconfigurationOfSecurityParameters" in zipped.read(
                    "security.log").decode()
    finally:
        await runner.cleanup()


async def test_certificates_install_list_delete_and_the_charge_points_own(tmp_path, clock):
    files = tmp_path / "files"
    ca_key, ca = pki.make_ca("CSMS root")
    async with site(new_station(tmp_path / "state.db", clock, files)) as s:
        kind = "CentralSystemRootCertificate"
        assert (await s.call(call.GetInstalledCertificateIds(certificate_type=kind))).status \
            == "NotFound"
        assert (await s.call(call.InstallCertificate(certificate_type=kind,
                                                     certificate="not a PEM"))).status == \
            "Rejected"
        assert (await s.call(call.InstallCertificate(
            certificate_type=kind, certificate=pki.pem(ca).decode()))).status == "Accepted"
        ids = await s.call(call.GetInstalledCertificateIds(certificate_type=kind))
        (hash_data,) = ids.certificate_hash_data
        assert hash_data["serial_number"] == format(ca.serial_number, "x")
        assert (await s.call(call.DeleteCertificate(certificate_hash_data={
            "hashAlgorithm": "SHA256", "issuerNameHash": hash_data["issuer_name_hash"],
            "issuerKeyHash": hash_data["issuer_key_hash"],
            "serialNumber": hash_data["serial_number"]}))).status == "Accepted"
        again = {"hashAlgorithm": "SHA256", "issuerNameHash": "00", "issuerKeyHash": "00",
                 "serialNumber": "1"}
        assert (await s.call(call.DeleteCertificate(certificate_hash_data=again))).status == \
            "NotFound"
        # the charge point's own certificate: a CSR on request, then CertificateSigned
        assert (await s.call(call.ExtendedTriggerMessage(
            requested_message="SignChargePointCertificate"))).status == "Accepted"
        await until(lambda: s.central.csr, message="SignCertificate")
        csr = x509.load_pem_x509_csr(s.central.csr.encode())
        assert csr.is_signature_valid and pki.common_name(csr) == "CP_W"
        _, stranger = pki.issue(ca_key, ca, "CP_W", client=True)
        assert (await s.call(call.CertificateSigned(certificate_chain=pki.pem(
            stranger).decode()))).status == "Rejected"
        cert = pki.sign_csr(ca_key, ca, s.central.csr, now=clock.now())
        assert (await s.call(call.CertificateSigned(certificate_chain=pki.pem(
            cert).decode()))).status == "Accepted"
        cert_path, key_path = s.station.certificates.client_paths()
        assert pki.load_certificate(cert_path).serial_number == cert.serial_number
        assert os.stat(key_path).st_mode & 0o777 == 0o600
        assert pki.load_key(key_path).public_key().public_numbers() == \
            cert.public_key().public_numbers()
        await until(lambda: "InvalidChargePointCertificate" in
                    [e["type"] for e in s.central.of("SecurityEventNotification")],
                    message="InvalidChargePointCertificate")
    secret = pki.pem(pki.load_key(key_path)).decode()
    assert secret not in repr(s.station.writer.events)


async def test_a_security_event_is_kept_until_delivered_across_a_restart(tmp_path, clock):
    path = tmp_path / "state.db"
    offline = new_station(path, clock)
    offline.security_event("TamperDetectionActivated", "lid opened")
    async with site(new_station(path, clock)) as s:
        s.station.recover()
        await until(lambda: s.central.of("SecurityEventNotification"), message="delivered")
        (event,) = s.central.of("SecurityEventNotification")
        assert (event["type"], event["tech_info"]) == ("TamperDetectionActivated", "lid opened")
        await until(lambda: not s.station.store.messages("CP_W"), message="forgotten")
