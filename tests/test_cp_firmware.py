"""Firmware management and the security extension, message by message, against a central system
written with the ocpp library (cp_fakes.LibraryCentral) over a real loopback WebSocket: updates
(plain and signed), diagnostics and logs uploaded to a folder or a loopback HTTP server,
certificates, the charge point's own CSR, and security events kept across a restart."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import time
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from conftest import wait_for_async as until
from cp_fakes import FakeLink, FakeRecorder, site
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from ocpp.exceptions import TypeConstraintViolationError
from ocpp.v16 import call

from evsim.clock import FakeClock
from evsim.cp import certificates, diagnostics, firmware
from evsim.cp.state import snapshot
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


def self_signed(key, algorithm) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "root")])
    start = datetime(2025, 1, 1, tzinfo=UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + timedelta(days=3650))
            .sign(key, algorithm))


def test_a_root_certificate_of_any_key_type_is_listed_deleted_and_shown(clock):
    """An Ed25519 root made installed_ids, delete, the state and the archive raise for good."""
    keys = {"ed25519": (ed25519.Ed25519PrivateKey.generate(), None),
            "ec": (ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()),
            "rsa": (rsa.generate_private_key(public_exponent=65537, key_size=2048),
                    hashes.SHA256())}
    roots = {kind: self_signed(*key) for kind, key in keys.items()}
    for cert in roots.values():  # the subjectPublicKey bits, as SubjectKeyIdentifier hashes them
        assert hashlib.sha1(certificates._key_bits(cert.public_key())).digest() == \
            x509.SubjectKeyIdentifier.from_public_key(cert.public_key()).digest
    assert certificates._key_bits(roots["ec"].public_key()) == roots["ec"].public_key(
        ).public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    assert certificates._key_bits(roots["rsa"].public_key()) == roots["rsa"].public_key(
        ).public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    station = new_station(":memory:", clock)
    kind = "CentralSystemRootCertificate"
    for cert in roots.values():
        assert station.certificates.install(kind, pki.pem(cert).decode()) == "Accepted"
    listed = station.certificates.installed_ids(kind)["certificate_hash_data"]
    ed = roots["ed25519"]
    raw = ed.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert listed[0]["issuer_key_hash"] == hashlib.sha256(raw).hexdigest()
    assert len(json.loads(station.diagnostics._contents(None, None, False)["state.json"])[
        "certificates"]["installed"]) == 3
    assert snapshot(station)["certificates"]["installed"][0]["serialNumber"] == \
        format(ed.serial_number, "x")
    assert station.certificates.delete(listed[0]) == "Accepted"
    assert [e["pem"] for e in station.certificates.installed] == \
        [pki.pem(roots[k]).decode() for k in ("ec", "rsa")]


async def test_a_download_is_a_regular_file_or_a_loopback_body_and_has_a_size_cap(tmp_path,
                                                                                  monkeypatch):
    """/dev/zero was read without end (and so was any HTTP body): now a local path must be a
    regular file and both are read in chunks up to FIRMWARE_MAX_BYTES."""
    monkeypatch.setattr(firmware, "FIRMWARE_MAX_BYTES", 1000)
    (tmp_path / "small.bin").write_bytes(b"s" * 1000)
    (tmp_path / "big.bin").write_bytes(b"b" * 1001)

    async def body(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no length to go by
        await response.prepare(request)
        for _ in range(int(request.match_info["kb"])):
            await response.write(b"h" * 1000)
        return response
    app = web.Application()
    app.router.add_get("/{kb}", body)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        assert await firmware.download(str(tmp_path / "small.bin")) == b"s" * 1000
        assert await firmware.download(f"{url}/1") == b"h" * 1000
        for location, reason in [("/dev/null", "not a regular file"),
                                 (str(tmp_path), "Is a directory"),
                                 ((tmp_path / "big.bin").as_uri(), "larger than 1000 bytes"),
                                 (f"{url}/3", "larger than 1000 bytes")]:
            with pytest.raises(firmware.DownloadError, match=reason):
                await asyncio.wait_for(firmware.download(location), 5)
    finally:
        await runner.cleanup()


async def test_dates_that_are_not_dates_are_refused_when_the_request_arrives(tmp_path, clock):
    """"garbage" killed the upload task later, leaving the status Uploading for ever."""
    async with site(new_station(tmp_path / "state.db", clock)) as s:
        for times in ({"start_time": "garbage"}, {"stop_time": "0001-01-01T00:00:00+01:00"}):
            with pytest.raises(TypeConstraintViolationError):
                await s.call(call.GetDiagnostics(location=str(tmp_path), **times))
        spec = {"remoteLocation": str(tmp_path), "oldestTimestamp": "garbage"}
        assert (await s.call(call.GetLog(log=spec, log_type="DiagnosticsLog",
                                         request_id=1))).status == "Rejected"
        assert s.station.diagnostics.status == "Idle"
        assert s.station.diagnostics.log_status == "Idle"
    assert list(tmp_path.glob("*.zip")) == []


def sent(station, action: str) -> list[str]:
    return [m.payload["status"] for m in station.outbox.queue if m.action == action]


async def test_any_failure_of_an_upload_ends_in_upload_failed(clock, tmp_path, monkeypatch):
    def broken(files):
        raise RuntimeError("zip broke")
    monkeypatch.setattr(diagnostics, "archive", broken)
    station = new_station(":memory:", clock)
    station.connected = True
    station.diagnostics.get_diagnostics(str(tmp_path), retries=1, retry_interval=5)
    station.diagnostics.get_log({"remote_location": str(tmp_path)}, "DiagnosticsLog", 9)
    await clock.advance(10)
    assert sent(station, "DiagnosticsStatusNotification") == ["Uploading", "UploadFailed"]
    assert sent(station, "LogStatusNotification") == ["Uploading", "UploadFailure"]
    assert station.diagnostics.status == station.diagnostics.log_status == "Idle"


async def test_an_upload_to_a_local_path_makes_a_new_file_in_that_folder(clock, tmp_path):
    """A location naming a file was written over with the archive."""
    station = new_station(":memory:", clock)
    station.connected = True

    def ended() -> list[str]:
        return [s for s in sent(station, "DiagnosticsStatusNotification") if s != "Uploading"]

    async def outcome(upload: int) -> str:
        await until(lambda: len(ended()) >= upload, message=f"the outcome of upload {upload}")
        return ended()[upload - 1]
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    station.diagnostics.get_diagnostics(str(victim))
    assert await outcome(1) == "UploadFailed"
    name = station.diagnostics.get_diagnostics(str(tmp_path))  # a folder, without a slash
    (tmp_path / name).write_text("there first")
    assert await outcome(2) == "UploadFailed"
    await clock.advance(1)
    name = station.diagnostics.get_diagnostics(tmp_path.as_uri())
    assert await outcome(3) == "Uploaded"
    assert zipfile.is_zipfile(tmp_path / name)
    assert victim.read_text() == "keep me" and len(list(tmp_path.iterdir())) == 3


async def test_a_background_task_that_dies_is_logged_in_one_line(clock, caplog):
    station = new_station(":memory:", clock)

    async def doomed():
        raise ValueError("no such\nthing")
    station.spawn(doomed())
    await clock.advance(0)
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == \
        "test_a_background_task_that_dies_is_logged_in_one_line.<locals>.doomed failed: " \
        "ValueError: no such thing"
    assert record.exc_info is None
