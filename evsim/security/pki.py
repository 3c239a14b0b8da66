"""Keys, certificates and signing requests for the security profiles (OCPP 1.6 Security
Whitepaper, edition 3), made with the ``cryptography`` package.

Keys are ECDSA on P-256 (the whitepaper's secp256r1), certificates X.509 v3. ``run_all.sh
--secure`` makes a throwaway CA, a server certificate for the central system and one per charge
point; the central system signs a charge point's CSR (SignCertificate) with its CA; the charge
point makes the CSR. Private keys are written with mode 0600 and never logged.
"""
from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey


class PkiError(ValueError):
    """A certificate, key or request that cannot be used: one line."""


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int,
             now: datetime | None) -> x509.CertificateBuilder:
    start = (now or datetime.now(UTC)) - timedelta(minutes=5)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + timedelta(days=days)))


def make_ca(common_name: str = "EV simulator test CA", days: int = 365,
            now: datetime | None = None) -> tuple[Key, x509.Certificate]:
    key = new_key()
    name = _name(common_name, "EV Charging Anomaly Simulator")
    cert = (_builder(name, name, key.public_key(), days, now)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca_key: Key, ca_cert: x509.Certificate, common_name: str, public_key=None, *,
          hosts: Iterable[str] = (), client: bool = False, organization: str | None = None,
          days: int = 365, now: datetime | None = None) -> tuple[Key | None, x509.Certificate]:
    """A certificate signed by the CA: for a server when ``hosts`` are given (names and IP
    addresses), for a TLS client with ``client``. Without ``public_key`` a new key is made and
    returned with it."""
    key = None
    if public_key is None:
        key = new_key()
        public_key = key.public_key()
    usage = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
    builder = (_builder(_name(common_name, organization), ca_cert.subject, public_key, days, now)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                   ca_key.public_key()), critical=False))
    names = [_general_name(host) for host in hosts]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_csr(common_name: str, organization: str | None = None
             ) -> tuple[Key, x509.CertificateSigningRequest]:
    """A new key and a request for its certificate, as a charge point makes for SignCertificate."""
    key = new_key()
    csr = (x509.CertificateSigningRequestBuilder().subject_name(_name(common_name, organization))
           .sign(key, hashes.SHA256()))
    return key, csr


def sign_csr(ca_key: Key, ca_cert: x509.Certificate, csr_pem: str | bytes, days: int = 365,
             now: datetime | None = None) -> x509.Certificate:
    """The client certificate for a charge point's CSR; PkiError for one that is not a valid,
    self-signed request with a common name."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode() if isinstance(csr_pem, str) else csr_pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate signing request: {exc}") from None
    if not csr.is_signature_valid:
        raise PkiError("the signing request's signature is not valid")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise PkiError("the signing request has no common name")
    organization = csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return issue(ca_key, ca_cert, str(names[0].value), csr.public_key(), client=True,
                 organization=str(organization[0].value) if organization else None, days=days,
                 now=now)[1]


def common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def pem(obj) -> bytes:
    """A certificate, a signing request or a private key (unencrypted PKCS#8) as PEM."""
    if isinstance(obj, ec.EllipticCurvePrivateKey):
        return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    return obj.public_bytes(serialization.Encoding.PEM)


def write(path: str | os.PathLike, obj) -> Path:
    """Write ``obj`` as PEM; a private key readable by its owner only."""
    path = Path(path)
    private = isinstance(obj, ec.EllipticCurvePrivateKey)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(pem(obj))
    return path


def load_certificate(path: str | os.PathLike) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read a PEM certificate from {path}: {exc}") from None


def load_key(path: str | os.PathLike) -> Key:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"cannot read an unencrypted PEM private key from {path}: "
                       f"{type(exc).__name__}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path}: only ECDSA keys are supported")
    return key
