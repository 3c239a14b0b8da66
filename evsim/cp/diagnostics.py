"""GetDiagnostics (OCPP 1.6 §5.9) and the security extension's GetLog: a real archive of the
charge point's state and its recent log, uploaded to the location the central system gives,
with DiagnosticsStatusNotification (LogStatusNotification) before and after, and retries.

Uploads go to a new file in a local folder (``/dir``, ``file:///dir/``; an existing file is never
written over) or to an http(s) URL on loopback (an HTTP PUT); the simulator reaches no other
host, so any other location fails as a real charge point without that network would
(UploadFailed; NotSupportedOperation for another scheme). Any failure of an upload ends in
UploadFailed (UploadFailure), never in an upload left Uploading.
"""
from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import logging
import zipfile
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from ocpp.exceptions import TypeConstraintViolationError
from ocpp.v16.enums import DiagnosticsStatus, LogStatus, UploadLogStatus

from evsim.constants import security_event_level
from evsim.cp.outbox import Message
from evsim.ocpp16.endpoint import one_line
from evsim.timefmt import ocpp_time, parse_ocpp_time

if TYPE_CHECKING:
    from evsim.cp.station import Station

log = logging.getLogger("cp")

LOG_LINES = 5000
SECURITY_LOG_MAX = 500
UPLOAD_TIMEOUT_S = 30


class UploadError(Exception):
    """An upload that failed; ``status`` is the LogStatusNotification status it means."""

    def __init__(self, reason: str, status: str = UploadLogStatus.upload_failure) -> None:
        super().__init__(reason)
        self.status = status


class LogBuffer(logging.Handler):
    """The latest log lines of the charge point, for the archives."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[tuple[datetime, str]] = deque(maxlen=LOG_LINES)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        moment = datetime.fromtimestamp(record.created, UTC)
        self.lines.append((moment, f"{moment.isoformat()} {self.format(record)}"))


_BUFFER: LogBuffer | None = None


def log_buffer() -> LogBuffer:
    global _BUFFER
    if _BUFFER is None:
        _BUFFER = LogBuffer()
        logging.getLogger("cp").addHandler(_BUFFER)
    return _BUFFER


def loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def write_new(path: Path, data: bytes) -> None:
    """Write a file that does not exist yet (never over one, nor through a symlink)."""
    with path.open("xb") as target:
        try:
            target.write(data)
        except OSError:
            path.unlink(missing_ok=True)  # ours, half written: a retry makes it anew
            raise


async def upload(location: str, filename: str, data: bytes) -> str:
    """Put ``data`` at ``location``: a new file ``filename`` in a local folder, or a PUT to a
    loopback URL (a URL ending in / gets ``filename`` appended); where it went."""
    parts = urlsplit(location)
    if parts.scheme in ("", "file"):
        path = Path(parts.path if parts.scheme else location) / filename
        try:
            await asyncio.to_thread(write_new, path, data)
        except PermissionError as exc:
            raise UploadError(f"{path}: {exc.strerror}", UploadLogStatus.permission_denied) from None
        except OSError as exc:
            raise UploadError(f"{path}: {exc.strerror or exc}") from None
        return str(path)
    if parts.scheme not in ("http", "https"):
        raise UploadError(f"{parts.scheme}:// uploads are not supported",
                          UploadLogStatus.not_supported_operation)
    if not loopback(parts.hostname):
        raise UploadError(f"{parts.hostname} is not reachable from the simulator (loopback only)")
    url = location + filename if location.endswith("/") else location
    try:
        timeout = aiohttp.ClientTimeout(total=UPLOAD_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.put(url, data=data) as response:
            if response.status >= 300:
                raise UploadError(f"PUT {url}: HTTP {response.status}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UploadError(f"PUT {url}: {str(exc) or type(exc).__name__}") from None
    return url


def archive(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, text in files.items():
            zipped.writestr(name, text)
    return buffer.getvalue()


def check_dates(**dates: str | None) -> str | None:
    """None when each given date is an OCPP date-time, else why not (for the answer)."""
    for name, text in dates.items():
        if text is None:
            continue
        try:
            parse_ocpp_time(text)
        except (ValueError, OverflowError):
            return f"{name} is not a date-time: {text[:50]!r}"
    return None


def _between(moment: datetime, start: str | None, stop: str | None) -> bool:
    return ((start is None or moment >= parse_ocpp_time(start))
            and (stop is None or moment <= parse_ocpp_time(stop)))


class Diagnostics:
    def __init__(self, station: Station) -> None:
        self.station = station
        self.status = DiagnosticsStatus.idle
        self.log_status = UploadLogStatus.idle
        self.log_request_id: int | None = None
        self._log_task: asyncio.Task | None = None
        self.security_events: list[dict] = list(
            station.store.settings(station.id).get("security_log") or [])
        log_buffer()

    def security_event(self, event_type: str, tech_info: str | None = None) -> None:
        """A SecurityEventNotification, kept in the state file until delivered (also across a
        lost connection and a restart), and in the security log GetLog uploads."""
        station = self.station
        now = ocpp_time(station.sent_time())
        payload = {"type": event_type, "timestamp": now}
        if tech_info:
            payload["tech_info"] = tech_info[:255]
        log.log(security_event_level(event_type), "security event %s%s", event_type,
                f": {tech_info}" if tech_info else "")
        self.security_events = [*self.security_events, {"type": event_type, "timestamp": now,
                                                        "techInfo": tech_info}]
        self.security_events = self.security_events[-SECURITY_LOG_MAX:]
        stored_id = station.store.queue(station.id, "SecurityEventNotification", payload, None,
                                        security_log=self.security_events)
        station.outbox.put(Message("SecurityEventNotification", payload, None, stored_id))
        station.event("SECURITY_EVENT", event_type, payload)

    def _stamp(self) -> str:
        return self.station.clock.now().strftime("%Y%m%dT%H%M%SZ")

    def _contents(self, start: str | None, stop: str | None, security: bool) -> dict[str, str]:
        from evsim.cp.state import snapshot
        if security:
            events = [e for e in self.security_events
                      if _between(parse_ocpp_time(e["timestamp"]), start, stop)]
            return {"security.log": "\n".join(json.dumps(e) for e in events) + "\n"}
        lines = [text for moment, text in log_buffer().lines if _between(moment, start, stop)]
        return {"state.json": json.dumps(snapshot(self.station), indent=2, default=str),
                "cp.log": "\n".join(lines) + "\n"}

    # -- GetDiagnostics -------------------------------------------------------------------------

    def get_diagnostics(self, location: str, retries: int | None = None,
                        retry_interval: int | None = None, start_time: str | None = None,
                        stop_time: str | None = None) -> str:
        """Start the upload; the name of the file it makes. A start or stop time that is not a
        date-time is a TypeConstraintViolation (GetDiagnostics.conf has no status to refuse)."""
        wrong = check_dates(startTime=start_time, stopTime=stop_time)
        if wrong is not None:
            raise TypeConstraintViolationError(details={"cause": wrong})
        name = f"diagnostics-{self.station.id}-{self._stamp()}.zip"
        self.station.spawn(self._upload(location, name, start_time, stop_time, False,
                                        retries or 0, retry_interval or 0, self._notify))
        return name

    def _notify(self, status: str) -> None:
        final = {UploadLogStatus.uploaded: DiagnosticsStatus.uploaded,
                 UploadLogStatus.uploading: DiagnosticsStatus.uploading}
        status = final.get(status, DiagnosticsStatus.upload_failed)
        self.status = DiagnosticsStatus.uploading if status == DiagnosticsStatus.uploading \
            else DiagnosticsStatus.idle
        self.station.send("DiagnosticsStatusNotification", status=status)

    async def _upload(self, location: str, name: str, start: str | None, stop: str | None,
                      security: bool, retries: int, interval: int,
                      notify: Callable[[str], None]) -> None:
        notify(UploadLogStatus.uploading)
        failure = UploadError("not attempted")
        for attempt in range(retries + 1):
            try:
                data = archive(self._contents(start, stop, security))
                where = await upload(location, name, data)
            except Exception as exc:  # noqa: BLE001 - whatever it is, the upload failed
                failure = exc if isinstance(exc, UploadError) else UploadError(one_line(exc))
                log.warning("upload of %s failed (%s)%s", name, failure,
                            f"; retry in {interval} s" if attempt < retries else "")
                if attempt < retries:
                    await self.station.clock.sleep(interval)
                continue
            self.station.event("UPLOADED", f"{name} uploaded to {where}",
                               {"file": name, "location": where, "bytes": len(data)})
            notify(UploadLogStatus.uploaded)
            return
        notify(failure.status)

    # -- GetLog ---------------------------------------------------------------------------------

    def get_log(self, log_spec: dict[str, Any], log_type: str, request_id: int,
                retries: int | None = None, retry_interval: int | None = None
                ) -> dict[str, Any]:
        wrong = check_dates(oldestTimestamp=log_spec.get("oldest_timestamp"),
                            latestTimestamp=log_spec.get("latest_timestamp"))
        if wrong is not None:
            log.warning("GetLog rejected: %s", wrong)
            return {"status": LogStatus.rejected}
        status = LogStatus.accepted
        if self._log_task is not None and not self._log_task.done():
            self._log_task.cancel()
            status = LogStatus.accepted_canceled
        security = log_type == "SecurityLog"
        name = f"{'security' if security else 'diagnostics'}-log-{self.station.id}-" \
               f"{self._stamp()}.zip"
        self.log_request_id = request_id
        self._log_task = self.station.spawn(self._upload(
            log_spec["remote_location"], name, log_spec.get("oldest_timestamp"),
            log_spec.get("latest_timestamp"), security, retries or 0, retry_interval or 0,
            self._notify_log))
        return {"status": status, "filename": name}

    def _notify_log(self, status: str) -> None:
        self.log_status = status if status == UploadLogStatus.uploading else UploadLogStatus.idle
        self.station.send("LogStatusNotification", status=status, request_id=self.log_request_id)

    def notify_log(self) -> None:
        """The LogStatusNotification an ExtendedTriggerMessage asks for."""
        self.station.send("LogStatusNotification", status=self.log_status,
                          request_id=self.log_request_id if self.log_status != "Idle" else None)

