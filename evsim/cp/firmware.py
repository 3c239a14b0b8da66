"""Firmware management (OCPP 1.6 §5.19, §4.5) and the security extension's SignedUpdateFirmware:
download at the retrieve date with retries, install once no transaction runs, reboot; every step
a FirmwareStatusNotification (SignedFirmwareStatusNotification with its requestId).

A location that is a local path, a file:// URL or an http(s) URL on loopback is really read, so
a missing file fails the download (DownloadFailed, then the retries), and so do a local path
that is not a regular file and an image over FIRMWARE_MAX_BYTES. The simulator reaches no
other host: a download from elsewhere is simulated and succeeds without contacting it. A signed
update checks its signing certificate against the installed ManufacturerRootCertificates and the
signature (base64, SHA-256 with ECDSA or RSA) over the downloaded bytes.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from ocpp.v16.enums import FirmwareStatus, UpdateFirmwareStatus

from evsim.cp.diagnostics import loopback
from evsim.cp.outbox import Message
from evsim.timefmt import parse_ocpp_time

if TYPE_CHECKING:
    from evsim.cp.station import Station

log = logging.getLogger("cp")

#: Simulated seconds a download and an installation take.
DOWNLOAD_S = 2
INSTALL_S = 2
DOWNLOAD_TIMEOUT_S = 30
#: The largest firmware image downloaded (a bigger one fails: DownloadFailed), and the size of
#: the chunks it is read in.
FIRMWARE_MAX_BYTES = 64 * 2**20
CHUNK_BYTES = 2**16


class DownloadError(Exception):
    """The firmware could not be fetched: one line."""


class Image:
    """The bytes of a download as they come, in chunks, up to FIRMWARE_MAX_BYTES."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > FIRMWARE_MAX_BYTES:
            raise DownloadError(f"{self.source}: larger than {FIRMWARE_MAX_BYTES} bytes")
        self.chunks.append(chunk)

    def data(self) -> bytes:
        return b"".join(self.chunks)


def read_file(path: Path) -> bytes:
    """A regular file's bytes (not a device, a FIFO or a folder), up to FIRMWARE_MAX_BYTES."""
    image = Image(str(path))
    # O_NONBLOCK: opening a FIFO does not wait for a writer (a regular file ignores it)
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as source:
        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
            raise DownloadError(f"{path}: not a regular file")
        while chunk := source.read(CHUNK_BYTES):
            image.add(chunk)
    return image.data()


async def download(location: str) -> bytes:
    parts = urlsplit(location)
    if parts.scheme in ("", "file"):
        path = Path(parts.path if parts.scheme else location)
        try:
            return await asyncio.to_thread(read_file, path)
        except OSError as exc:
            raise DownloadError(f"{path}: {exc.strerror or exc}") from None
    if parts.scheme in ("http", "https") and loopback(parts.hostname):
        try:
            timeout = aiohttp.ClientTimeout(total=DOWNLOAD_TIMEOUT_S)
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.get(location) as response:
                if response.status >= 300:
                    raise DownloadError(f"GET {location}: HTTP {response.status}")
                image = Image(f"GET {location}")
                async for chunk in response.content.iter_chunked(CHUNK_BYTES):
                    image.add(chunk)
                return image.data()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DownloadError(f"GET {location}: {str(exc) or type(exc).__name__}") from None
    log.info("firmware at %s: simulated download (the simulator reaches loopback only)",
             location)
    return b""


def signature_valid(certificate: x509.Certificate, signature: str, data: bytes) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key = certificate.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(raw, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(raw, data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


class Firmware:
    def __init__(self, station: Station) -> None:
        self.station = station
        self.status = FirmwareStatus.idle
        self.request_id: int | None = None  # of a signed update
        self.installed_pending = False  # Installed is told after the reboot
        self._task: asyncio.Task | None = None

    def notify(self, extended: bool = False) -> None:
        """The (Signed)FirmwareStatusNotification of the current status."""
        if self.request_id is not None or extended:
            self.station.send("SignedFirmwareStatusNotification", status=self.status,
                              request_id=self.request_id)
        else:
            self.station.send("FirmwareStatusNotification", status=self.status)

    def _set(self, status: str) -> None:
        self.status = status
        self.station.event("FIRMWARE", f"firmware {status}", {"status": status,
                                                               "request_id": self.request_id})
        self.notify()

    def update(self, location: str, retrieve_date: str, retries: int | None = None,
               retry_interval: int | None = None) -> None:
        """UpdateFirmware: carried out in the background (its answer has no status)."""
        self._start(None, location, retrieve_date, None, None, retries, retry_interval)

    def signed_update(self, request_id: int, firmware: dict[str, Any], retries: int | None = None,
                      retry_interval: int | None = None) -> str:
        certificate = self.station.certificates.verify_signing(firmware["signing_certificate"])
        if certificate is None:
            self.station.security_event("InvalidFirmwareSigningCertificate",
                                        f"request {request_id}: not signed by an installed "
                                        "ManufacturerRootCertificate")
            return UpdateFirmwareStatus.invalid_certificate
        canceled = self._task is not None and not self._task.done()
        self._start(request_id, firmware["location"], firmware["retrieve_date_time"],
                    firmware.get("install_date_time"), (certificate, firmware["signature"]),
                    retries, retry_interval)
        return UpdateFirmwareStatus.accepted_canceled if canceled else UpdateFirmwareStatus.accepted

    def _start(self, request_id: int | None, location: str, retrieve: str, install: str | None,
               signed: tuple[x509.Certificate, str] | None, retries: int | None,
               interval: int | None) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.request_id = request_id
        self._task = self.station.spawn(self._run(location, retrieve, install, signed,
                                                  retries or 0, interval or 0))

    async def _until(self, moment: str | None) -> bool:
        """Wait until a wall-clock instant; True when there was something to wait for."""
        if moment is None:
            return False
        wait = (parse_ocpp_time(moment) - self.station.clock.now()).total_seconds()
        if wait > 0:
            await self.station.clock.sleep(wait * self.station.clock.speed)
        return wait > 0

    async def _run(self, location: str, retrieve: str, install: str | None,
                   signed: tuple[x509.Certificate, str] | None, retries: int,
                   interval: int) -> None:
        clock = self.station.clock
        if signed and parse_ocpp_time(retrieve) > clock.now():
            self._set(FirmwareStatus.download_scheduled)
        await self._until(retrieve)
        for attempt in range(retries + 1):
            self._set(FirmwareStatus.downloading)
            await clock.sleep(DOWNLOAD_S)
            try:
                data = await download(location)
                break
            except DownloadError as exc:
                log.warning("firmware download failed (%s)", exc)
                self._set(FirmwareStatus.download_failed)
                if attempt < retries:
                    await clock.sleep(interval)
        else:
            self._finish()
            return
        self._set(FirmwareStatus.downloaded)
        if signed is not None:
            if not signature_valid(signed[0], signed[1], data):
                self._set(FirmwareStatus.invalid_signature)
                self.station.security_event("InvalidFirmwareSignature",
                                            f"request {self.request_id}: {location}")
                self._finish()
                return
            self._set(FirmwareStatus.signature_verified)
            if install and parse_ocpp_time(install) > clock.now():
                self._set(FirmwareStatus.install_scheduled)
                await self._until(install)
        while self.station.transaction is not None:  # never during a transaction
            await clock.sleep(1)
        self._set(FirmwareStatus.installing)
        await clock.sleep(INSTALL_S)
        version = (Path(urlsplit(location).path).name or "update")[:50]
        self.station.firmware_version = version
        self.station.store.put(self.station.id, firmware_version=version)
        if signed is not None:
            self._set(FirmwareStatus.install_rebooting)
        else:
            self._set(FirmwareStatus.installed)
        self.installed_pending = True
        await self.station.availability.deliver_then_reboot()

    def _finish(self) -> None:
        self.status = FirmwareStatus.idle

    def rebooted(self) -> None:
        """After the reboot an install asked for: Installed (signed) and FirmwareUpdated."""
        if not self.installed_pending:
            return
        self.installed_pending = False
        if self.request_id is not None:
            self.status = FirmwareStatus.installed
            self.station.outbox.put(Message("SignedFirmwareStatusNotification", {
                "status": self.status, "request_id": self.request_id}))
        self.station.security_event("FirmwareUpdated", f"firmware {self.station.firmware_version}")
        self._finish()
