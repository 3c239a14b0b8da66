"""The security extension's certificate management (OCPP 1.6 Security Whitepaper):
InstallCertificate, GetInstalledCertificateIds, DeleteCertificate for the root certificates, and
the charge point's own certificate: SignCertificate with a real CSR and key (``evsim.security.pki``), then
CertificateSigned.

Installed root certificates are kept in the state file. The charge point's key is written with
mode 0600 beside its certificate in its files folder (with none, it stays in memory) and is never
logged.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from ocpp.v16.enums import (
    CertificateSignedStatus,
    CertificateStatus,
    DeleteCertificateStatus,
    GetInstalledCertificateStatus,
)

from evsim.cp.config import CERTIFICATE_CHAIN_MAX, CERTIFICATE_STORE_MAX
from evsim.cp.outbox import Message
from evsim.security import pki

if TYPE_CHECKING:
    from evsim.cp.station import Station

log = logging.getLogger("cp")

HASHES = {"SHA256": hashlib.sha256, "SHA384": hashlib.sha384, "SHA512": hashlib.sha512}
CERT_NAME, KEY_NAME = "charge_point.pem", "charge_point.key"


def hash_data(cert: x509.Certificate, algorithm: str = "SHA256") -> dict[str, str]:
    """CertificateHashData (snake_case): the issuer's name and key hashed as OCSP does; the
    installed certificates are roots, their own issuers."""
    digest = HASHES[algorithm]
    return {"hash_algorithm": algorithm,
            "issuer_name_hash": digest(cert.issuer.public_bytes()).hexdigest(),
            "issuer_key_hash": digest(_key_bits(cert.public_key())).hexdigest(),
            "serial_number": format(cert.serial_number, "x")}


def _key_bits(key: Any) -> bytes:
    """The subjectPublicKey bits of a key of any type (what OCSP's issuerKeyHash hashes): the
    BIT STRING after the AlgorithmIdentifier in its DER SubjectPublicKeyInfo."""
    spki = _spki(key)
    _, body = _der(spki, 0)  # SEQUENCE { AlgorithmIdentifier, BIT STRING }
    algorithm_end, _ = _der(spki, body)
    bits_end, bits = _der(spki, algorithm_end)
    return spki[bits + 1:bits_end]  # the first byte counts the unused bits: 0 for a key


def _der(data: bytes, at: int) -> tuple[int, int]:
    """(where the element at ``at`` ends, where its contents start) in DER ``data``."""
    length, start = data[at + 1], at + 2
    if length & 0x80:
        size = length & 0x7F
        length, start = int.from_bytes(data[start:start + size], "big"), start + size
    return start + length, start


class Certificates:
    def __init__(self, station: Station, settings: Mapping[str, Any], files: Path | None) -> None:
        self.station = station
        self.files = files
        self.installed: list[dict[str, str]] = list(settings.get("certificates") or [])
        self.pending_key: pki.Key | None = None
        self.client_certificate: str | None = settings.get("client_certificate")

    def _load(self, entry: Mapping[str, str]) -> x509.Certificate:
        return x509.load_pem_x509_certificate(entry["pem"].encode())

    def _persist(self) -> None:
        self.station.store.put(self.station.id, certificates=self.installed)

    def install(self, certificate_type: str, certificate: str) -> str:
        try:
            cert = x509.load_pem_x509_certificate(certificate.encode())
        except ValueError as exc:
            log.warning("InstallCertificate rejected: %s", exc)
            return CertificateStatus.rejected
        pem = pki.pem(cert).decode()
        if any(e["pem"] == pem and e["type"] == certificate_type for e in self.installed):
            return CertificateStatus.accepted
        if len(self.installed) >= CERTIFICATE_STORE_MAX:
            return CertificateStatus.rejected
        self.installed.append({"type": certificate_type, "pem": pem})
        self._persist()
        self.station.event("CERTIFICATE_INSTALLED", f"{certificate_type} installed",
                           {"type": certificate_type, "subject": cert.subject.rfc4514_string()})
        return CertificateStatus.accepted

    def installed_ids(self, certificate_type: str) -> dict[str, Any]:
        found = [hash_data(self._load(e)) for e in self.installed if e["type"] == certificate_type]
        if not found:
            return {"status": GetInstalledCertificateStatus.not_found}
        return {"status": GetInstalledCertificateStatus.accepted, "certificate_hash_data": found}

    def delete(self, wanted: Mapping[str, str]) -> str:
        algorithm = wanted.get("hash_algorithm", "SHA256")
        if algorithm not in HASHES:
            return DeleteCertificateStatus.failed
        keep = [e for e in self.installed if not _same(hash_data(self._load(e), algorithm),
                                                       wanted)]
        if len(keep) == len(self.installed):
            return DeleteCertificateStatus.not_found
        self.installed = keep
        self._persist()
        return DeleteCertificateStatus.accepted

    def verify_signing(self, certificate: str) -> x509.Certificate | None:
        """A firmware signing certificate issued by an installed ManufacturerRootCertificate."""
        try:
            cert = x509.load_pem_x509_certificate(certificate.encode())
        except ValueError:
            return None
        for entry in self.installed:
            if entry["type"] != "ManufacturerRootCertificate":
                continue
            try:
                cert.verify_directly_issued_by(self._load(entry))
                return cert
            except (ValueError, TypeError, InvalidSignature):
                continue
        return None

    # -- the charge point's own certificate -----------------------------------------------------

    async def sign(self) -> str | None:
        """Make a key and a CSR and send SignCertificate; the central system's answer."""
        key, csr = pki.make_csr(self.station.id, self.station.config["CpoName"])
        self.pending_key = key
        result = await self.station.outbox.ask(
            Message("SignCertificate", {"csr": pki.pem(csr).decode()}))
        status = result.status if result is not None else None
        log.info("SignCertificate answered %s", status or "nothing")
        return status

    def signed(self, certificate_chain: str) -> str:
        """CertificateSigned: accept a chain whose first certificate is for the pending key."""
        if len(certificate_chain) > CERTIFICATE_CHAIN_MAX:
            return self._invalid("the chain is longer than CertificateSignedMaxChainSize")
        try:
            chain = x509.load_pem_x509_certificates(certificate_chain.encode())
        except ValueError as exc:
            return self._invalid(f"not a PEM certificate chain ({exc})")
        leaf = chain[0]
        if self.pending_key is None or _spki(leaf.public_key()) != \
                _spki(self.pending_key.public_key()):
            return self._invalid("the certificate is not for the key of the last signing request")
        now = self.station.clock.now()
        if not leaf.not_valid_before_utc <= now.astimezone(UTC) <= leaf.not_valid_after_utc:
            return self._invalid("the certificate is not valid now")
        if self.files is not None:
            self.files.mkdir(parents=True, exist_ok=True)
            pki.write(self.files / KEY_NAME, self.pending_key)
            (self.files / CERT_NAME).write_text(certificate_chain)
        self.client_certificate = pki.pem(leaf).decode()
        self.station.store.put(self.station.id, client_certificate=self.client_certificate)
        self.pending_key = None
        self.station.event("CERTIFICATE_SIGNED", "charge point certificate installed",
                           {"subject": leaf.subject.rfc4514_string()})
        return CertificateSignedStatus.accepted

    def _invalid(self, reason: str) -> str:
        log.warning("CertificateSigned rejected: %s", reason)
        self.station.security_event("InvalidChargePointCertificate", reason)
        return CertificateSignedStatus.rejected

    def client_paths(self) -> tuple[Path, Path] | None:
        """(certificate chain, key) files for a TLS client certificate, once there are any."""
        if self.files is None or not (self.files / CERT_NAME).exists():
            return None
        return self.files / CERT_NAME, self.files / KEY_NAME

    def state(self) -> dict[str, Any]:
        return {"installed": [{"type": e["type"], "serialNumber": hash_data(
            self._load(e))["serial_number"]} for e in self.installed],
                "chargePointCertificate": self.client_certificate is not None}


def _spki(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _same(have: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(str(have[k]).lower().lstrip("0") == str(wanted.get(k, "")).lower().lstrip("0")
               for k in ("issuer_name_hash", "issuer_key_hash", "serial_number"))

