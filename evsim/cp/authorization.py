"""Who may charge: the authorization cache, the local authorization list and the rules of OCPP
1.6 §3.5 that choose between them and the central system's Authorize.

The cache remembers every idTagInfo the central system gave (Authorize, StartTransaction,
StopTransaction); the local list is the one SendLocalList sends. Both live in the state file.
Local list entries take precedence over the cache; a valid local entry or cached entry
authorizes at once online with LocalPreAuthorize, and offline with LocalAuthorizeOffline; an
unknown idTag offline is accepted only with AllowOfflineTxForUnknownId.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ocpp.v16.enums import AuthorizationStatus, ClearCacheStatus, UpdateStatus

from evsim.cp.config import LOCAL_LIST_MAX, SEND_LOCAL_LIST_MAX
from evsim.cp.outbox import Message
from evsim.timefmt import ocpp_time, parse_ocpp_time

if TYPE_CHECKING:
    from evsim.cp.station import Station

CACHE_MAX = 1000
ACCEPTED = AuthorizationStatus.accepted


def info_of(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """An idTagInfo with snake_case keys (status, expiry_date, parent_id_tag), Nones left out."""
    data = dict(data or {})
    aliases = {"expiryDate": "expiry_date", "parentIdTag": "parent_id_tag"}
    return {aliases.get(k, k): v for k, v in data.items() if v is not None}


def effective_status(info: Mapping[str, Any], now: datetime) -> str:
    """The status, Expired once its expiry date has passed."""
    expiry = info.get("expiry_date")
    if info.get("status") == ACCEPTED and expiry:
        try:
            if parse_ocpp_time(expiry) <= now:
                return AuthorizationStatus.expired
        except ValueError:
            return AuthorizationStatus.invalid
    return info.get("status", AuthorizationStatus.invalid)


class LocalList:
    """The local authorization list: a version and idTag -> idTagInfo."""

    def __init__(self, version: int = 0, entries: Mapping[str, dict] | None = None) -> None:
        self.version = version
        self.entries: dict[str, dict] = dict(entries or {})

    def update(self, version: int, update_type: str, entries: Iterable[Mapping[str, Any]]
               ) -> str:
        """Apply a SendLocalList; its status."""
        entries = list(entries)
        if len(entries) > SEND_LOCAL_LIST_MAX:
            return UpdateStatus.failed
        if update_type == "Full":
            new = {e["id_tag"]: info_of(e["id_tag_info"]) for e in entries if e.get("id_tag_info")}
        else:
            if version <= self.version:
                return UpdateStatus.version_mismatch
            new = dict(self.entries)
            for entry in entries:
                if entry.get("id_tag_info"):
                    new[entry["id_tag"]] = info_of(entry["id_tag_info"])
                else:
                    new.pop(entry["id_tag"], None)
        if len(new) > LOCAL_LIST_MAX:
            return UpdateStatus.failed
        self.version, self.entries = version, new
        return UpdateStatus.accepted

    @property
    def reported_version(self) -> int:
        """GetLocalListVersion: 0 stands for an empty list."""
        return self.version if self.entries else 0


class Authorization:
    """The station's authorization: cache, local list and the decision."""

    def __init__(self, station: Station, settings: Mapping[str, Any]) -> None:
        self.station = station
        self.cache: dict[str, dict] = dict(settings.get("auth_cache") or {})
        stored = settings.get("local_list") or {}
        self.local = LocalList(stored.get("version", 0), stored.get("entries"))

    @property
    def config(self):
        return self.station.config

    def known(self, id_tag: str) -> dict | None:
        """What the local list (first) or the cache knows of ``id_tag``."""
        if self.config["LocalAuthListEnabled"] and id_tag in self.local.entries:
            return self.local.entries[id_tag]
        if self.config["AuthorizationCacheEnabled"]:
            return self.cache.get(id_tag)
        return None

    def parent_of(self, id_tag: str) -> str | None:
        return (self.known(id_tag) or {}).get("parent_id_tag")

    async def authorize(self, id_tag: str) -> dict[str, Any]:
        """The idTagInfo that decides whether ``id_tag`` may charge now."""
        now = self.station.clock.now()
        online = self.station.connected and self.station.booted
        known = self.known(id_tag)
        valid = known is not None and effective_status(known, now) == ACCEPTED
        if valid and online and self.config["LocalPreAuthorize"]:
            return known
        if online:
            result = await self.station.outbox.ask(Message("Authorize", {"id_tag": id_tag}))
            if result is not None:
                info = info_of(result.id_tag_info)
                self.remember(id_tag, info)
                return info
        if known is not None:
            if valid and self.config["LocalAuthorizeOffline"]:
                return known
            status = effective_status(known, now)
            return {**known, "status": status if status != ACCEPTED else
                    AuthorizationStatus.invalid}
        if self.config["AllowOfflineTxForUnknownId"]:
            return {"status": ACCEPTED}
        return {"status": AuthorizationStatus.invalid}

    def remember(self, id_tag: str, info: Mapping[str, Any] | None) -> None:
        """Keep an idTagInfo the central system gave (when the cache is enabled)."""
        if not info or not self.config["AuthorizationCacheEnabled"]:
            return
        self.cache.pop(id_tag, None)
        self.cache[id_tag] = info_of(info)
        while len(self.cache) > CACHE_MAX:
            self.cache.pop(next(iter(self.cache)))
        self.station.store.put(self.station.id, auth_cache=self.cache)

    def clear_cache(self) -> str:
        if not self.config["AuthorizationCacheEnabled"]:
            return ClearCacheStatus.rejected
        self.cache.clear()
        self.station.store.put(self.station.id, auth_cache=self.cache)
        return ClearCacheStatus.accepted

    def send_local_list(self, list_version: int, update_type: str,
                        entries: Iterable[Mapping[str, Any]] | None) -> str:
        status = self.local.update(list_version, update_type, entries or [])
        if status == UpdateStatus.accepted:
            self.station.store.put(self.station.id, local_list={
                "version": self.local.version, "entries": self.local.entries})
        return status

    def state(self) -> dict[str, Any]:
        return {"cache": len(self.cache), "local_list_version": self.local.reported_version,
                "local_list": len(self.local.entries), "checked_at": ocpp_time(
                    self.station.clock.now())}
