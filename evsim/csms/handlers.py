"""The central system's answers to the charge point's notifications and to SignCertificate (the
messages :mod:`evsim.csms.server` does not answer itself), and what they leave on the charge
point's record for the control API: its boot data, each connector's status, the last report of
each kind.

SignCertificate (Security Whitepaper §3.2.3): with a CA (``--ca-cert``/``--ca-key``) the CSR is
signed at once, answered Accepted, and the certificate sent with CertificateSigned once the
answer is out; without one, or for a CSR that is not valid or names another charge point than
the one that sent it, the answer is Rejected. Private keys never leave :mod:`evsim.security.pki`.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Optional

import websockets
from ocpp.charge_point import snake_to_camel_case
from ocpp.messages import CallResult
from ocpp.v16 import call_result
from ocpp.v16.enums import Action, GenericStatus

from evsim.constants import security_event_level
from evsim.security import pki
from evsim.timefmt import ocpp_time

if TYPE_CHECKING:
    from cryptography import x509

    from evsim.csms.endpoint import CsmsEndpoint
    from evsim.csms.server import CentralSystem

log = logging.getLogger("csms")

#: Connectors a charge point may report; what it says of more is not kept.
MAX_CONNECTORS = 32


class Handlers:
    """``ca`` is (key, certificate) of the CA that signs charge points' CSRs, or None."""

    def __init__(self, system: CentralSystem,
                 ca: Optional[tuple[pki.Key, x509.Certificate]] = None) -> None:
        self.system = system
        self.ca = ca

    def _now(self) -> str:
        return ocpp_time(self.system.clock.now())

    def booted(self, endpoint: CsmsEndpoint, **boot: Any) -> None:
        endpoint.station.boot = {**snake_to_camel_case(boot), "at": self._now()}

    def status_notification(self, endpoint: CsmsEndpoint, connector_id: int, error_code: str,
                            status: str, **fields: Any) -> call_result.StatusNotification:
        """Connector 0 is the charge point as a whole (OCPP 1.6 §4.9); every one is kept, up
        to MAX_CONNECTORS of them (an id beyond is answered and logged, not kept)."""
        if not 0 <= connector_id <= MAX_CONNECTORS:
            log.warning("%s: StatusNotification for connector %s ignored: at most %d",
                        endpoint.id, connector_id, MAX_CONNECTORS)
            return call_result.StatusNotification()
        endpoint.station.connectors[connector_id] = {
            "status": status, "errorCode": error_code, **snake_to_camel_case(fields),
            "at": self._now()}
        if endpoint.station.analyser is not None:
            endpoint.station.analyser.status(connector_id, status, fields.get("timestamp"))
        return call_result.StatusNotification()

    def report(self, endpoint: CsmsEndpoint, action: str, fields: dict[str, Any]) -> None:
        """A status or security notification: kept as the last of its kind; a security event is
        also on the console (a warning, but for the routine ones of a boot)."""
        payload = snake_to_camel_case(fields)
        endpoint.station.reports[action] = {**payload, "at": self._now()}
        if action == Action.security_event_notification:
            log.log(security_event_level(payload.get("type")), "%s: security event %s%s",
                    endpoint.id, payload.get("type"),
                    f": {payload['techInfo']}" if payload.get("techInfo") else "")

    # -- SignCertificate --------------------------------------------------------------------------

    def sign_certificate(self, endpoint: CsmsEndpoint, csr: str) -> call_result.SignCertificate:
        endpoint.signed_certificate = None
        try:
            certificate = self._sign(endpoint.id, csr)
        except pki.PkiError as exc:
            log.warning("%s: SignCertificate rejected: %s", endpoint.id, exc)
            self.system.event("CERTIFICATE", f"{endpoint.id}: CSR rejected: {exc}",
                              {"status": "Rejected", "reason": str(exc)}, endpoint.id)
            return call_result.SignCertificate(status=GenericStatus.rejected)
        endpoint.signed_certificate = pki.pem(certificate).decode()
        return call_result.SignCertificate(status=GenericStatus.accepted)

    def _sign(self, charge_point_id: str, csr: str) -> x509.Certificate:
        if self.ca is None:
            raise pki.PkiError("no CA to sign with (csms.py --ca-cert and --ca-key)")
        certificate = pki.sign_csr(*self.ca, csr)
        name = pki.common_name(certificate)
        if name != charge_point_id:
            raise pki.PkiError(f"the CSR's common name {name!r} is not the charge point's id")
        return certificate

    def send_certificate(self, endpoint: CsmsEndpoint) -> None:
        """After an Accepted SignCertificate: CertificateSigned, in the background."""
        certificate, endpoint.signed_certificate = endpoint.signed_certificate, None
        if certificate is not None:
            self.system.supervisor.start(self._deliver(endpoint, certificate),
                                         f"CertificateSigned to {endpoint.id}")

    async def _deliver(self, endpoint: CsmsEndpoint, certificate: str) -> None:
        try:
            answer = await endpoint.send(Action.certificate_signed,
                                         {"certificateChain": certificate},
                                         self.system.call_timeout)
            outcome = (answer.payload.get("status") if isinstance(answer, CallResult)
                       else f"CALLERROR {answer.error_code}")
        except TimeoutError:
            outcome = "no answer"
        except websockets.ConnectionClosed:
            outcome = "connection closed"
        log.info("%s: CertificateSigned -> %s", endpoint.id, outcome)
        self.system.event("CERTIFICATE", f"{endpoint.id}: CertificateSigned -> {outcome}",
                          {"status": str(outcome)}, endpoint.id)
