"""Who may connect to the central system, and how they prove it (OCPP 1.6 Security Whitepaper,
edition 3; OCPP-J 1.6 §3.1).

- The registry (``--charge-points FILE``, TOML) lists the known charge points, each with its
  security profile: 1, HTTP Basic authentication over ws://; 2, the same over TLS; 3, a TLS
  client certificate whose common name is the charge point id. An id not in it gets HTTP 404
  at the upgrade; bad or missing credentials get HTTP 401, and nothing else.
- Keys are kept as salted PBKDF2 hashes (``csms.py --hash-key`` makes one) and compared in
  constant time; a key set later (rotation) is kept, hashed, beside the registry, so that it
  survives a restart. No key is ever logged or recorded.
- Repeated refusals from one address are answered ever more slowly.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import tomllib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evsim.security.keys import KEY_RULE, valid_key

HASH_SCHEME = "pbkdf2_sha256"
HASH_ITERATIONS = 100_000
PROFILES = (0, 1, 2, 3)


class RegistryError(ValueError):
    """A registry the central system cannot start with: one line naming the file."""


def check_key(key: str) -> None:
    """ValueError unless ``key`` is an AuthorizationKey (:func:`evsim.security.keys.valid_key`)."""
    if not valid_key(key):
        raise ValueError(KEY_RULE)


def hash_key(key: str, salt: bytes | None = None, iterations: int = HASH_ITERATIONS) -> str:
    """``pbkdf2_sha256$ITERATIONS$SALT$HASH`` (base64): what the registry may keep instead of
    the key itself."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", key.encode(), salt, iterations)
    return "$".join((HASH_SCHEME, str(iterations), base64.b64encode(salt).decode(),
                     base64.b64encode(digest).decode()))


def verify_key(key: str, stored: str) -> bool:
    """Whether ``key`` matches a :func:`hash_key` value, in constant time."""
    try:
        scheme, iterations, salt, digest = stored.split("$")
        expected = base64.b64decode(digest, validate=True)
        salt_bytes = base64.b64decode(salt, validate=True)
        rounds = int(iterations)
    except ValueError:
        return False
    if scheme != HASH_SCHEME or not 0 < rounds <= 10_000_000:
        return False
    actual = hashlib.pbkdf2_hmac("sha256", key.encode(errors="surrogateescape"), salt_bytes,
                                 rounds)
    return hmac.compare_digest(actual, expected)


def _valid_hash(stored: str) -> bool:
    parts = stored.split("$")
    return len(parts) == 4 and parts[0] == HASH_SCHEME and parts[1].isdigit()


@dataclass
class KnownChargePoint:
    id: str
    security_profile: int
    key_hash: str | None = None


class ChargePointRegistry:
    """The known charge points; see the module docstring."""

    def __init__(self, charge_points: dict[str, KnownChargePoint],
                 keys_path: Path | None = None) -> None:
        self.charge_points = charge_points
        self.keys_path = keys_path
        self._verified: OrderedDict[tuple[str, bytes], bool] = OrderedDict()

    @classmethod
    def load(cls, path: str | os.PathLike) -> ChargePointRegistry:
        """Read a registry; RegistryError (one line) for anything it cannot use."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RegistryError(f"cannot read {path}: {exc.strerror or exc}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{path} is not valid TOML: {exc}") from None
        tables = data.get("charge_points")
        if not isinstance(tables, dict):
            raise RegistryError(f"{path}: no [charge_points.<id>] tables")
        charge_points = {}
        for charge_point_id, entry in tables.items():
            try:
                charge_points[charge_point_id] = _entry(charge_point_id, entry)
            except ValueError as exc:
                raise RegistryError(f"{path}: charge point {charge_point_id!r}: {exc}") from None
        registry = cls(charge_points, path.with_name(path.name + ".keys"))
        registry._load_rotated()
        return registry

    def _load_rotated(self) -> None:
        if self.keys_path is None or not self.keys_path.exists():
            return
        try:
            rotated = json.loads(self.keys_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RegistryError(f"cannot read the rotated keys in {self.keys_path}: {exc}") \
                from None
        for charge_point_id, key_hash in rotated.items():
            known = self.charge_points.get(charge_point_id)
            if known is not None and isinstance(key_hash, str) and _valid_hash(key_hash):
                known.key_hash = key_hash

    def get(self, charge_point_id: str) -> KnownChargePoint | None:
        return self.charge_points.get(charge_point_id)

    @property
    def needs_tls(self) -> bool:
        return any(cp.security_profile >= 2 for cp in self.charge_points.values())

    def _memo(self, charge_point_id: str, key: str) -> tuple[str, bytes] | None:
        known = self.charge_points.get(charge_point_id)
        if known is None or known.key_hash is None:
            return None
        return charge_point_id, hashlib.sha256(f"{known.key_hash}\0{key}".encode(
            errors="surrogateescape")).digest()

    def needs_hashing(self, charge_point_id: str, key: str) -> bool:
        """Whether :meth:`check_key` would have to run PBKDF2 (some 20 ms of CPU) for this."""
        memo = self._memo(charge_point_id, key)
        return memo is not None and memo not in self._verified

    def check_key(self, charge_point_id: str, key: str) -> bool:
        """Whether ``key`` is the charge point's. The outcome is remembered (as a digest, for
        the key in force) so that a reconnecting fleet, or a client repeating a wrong key, does
        not cost a PBKDF2 each time."""
        memo = self._memo(charge_point_id, key)
        if memo is None:
            return False
        if memo not in self._verified:
            self._verified[memo] = verify_key(key, self.charge_points[charge_point_id].key_hash)
            while len(self._verified) > 10_000:
                self._verified.popitem(last=False)
        return self._verified[memo]

    def set_key(self, charge_point_id: str, key: str) -> None:
        """The key the registry expects from now on, kept (hashed) across restarts. KeyError for
        an unknown charge point, ValueError for a key of the wrong length."""
        check_key(key)
        known = self.charge_points[charge_point_id]
        known.key_hash = hash_key(key)
        self._save_rotated()

    def _save_rotated(self) -> None:
        if self.keys_path is None:
            return
        rotated = {cp.id: cp.key_hash for cp in self.charge_points.values() if cp.key_hash}
        partial = self.keys_path.with_name(self.keys_path.name + ".partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(rotated, out, indent=1)
        os.replace(partial, self.keys_path)


def _entry(charge_point_id: str, entry: Any) -> KnownChargePoint:
    if not isinstance(entry, dict):
        raise ValueError("must be a table")
    unknown = set(entry) - {"security_profile", "authorization_key", "authorization_key_hash"}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
    profile = entry.get("security_profile")
    if profile not in PROFILES or isinstance(profile, bool):
        raise ValueError(f"security_profile must be 0, 1, 2 or 3, got {profile!r}")
    key, key_hash = entry.get("authorization_key"), entry.get("authorization_key_hash")
    if key is not None and key_hash is not None:
        raise ValueError("give authorization_key or authorization_key_hash, not both")
    if key is not None:
        check_key(key)
        key_hash = hash_key(key)
    elif key_hash is not None and not (isinstance(key_hash, str) and _valid_hash(key_hash)):
        raise ValueError("authorization_key_hash is not a value csms.py --hash-key printed")
    if profile in (1, 2) and key_hash is None:
        raise ValueError(f"security profile {profile} needs an authorization key")
    return KnownChargePoint(charge_point_id, profile, key_hash)


class Throttle:
    """How long to wait before answering a refusal to an address: ``base`` x 2^(failures - 1),
    at most ``cap`` seconds; a success forgets the address. At most ``size`` addresses are
    remembered (the oldest goes first)."""

    def __init__(self, base: float = 0.5, cap: float = 8.0, size: int = 10_000) -> None:
        self.base, self.cap, self.size = base, cap, size
        self._failures: OrderedDict[str, int] = OrderedDict()

    def failed(self, address: str) -> float:
        """Count a failure; returns the delay it earns."""
        failures = self._failures.pop(address, 0) + 1
        self._failures[address] = failures
        while len(self._failures) > self.size:
            self._failures.popitem(last=False)
        return min(self.cap, self.base * 2 ** (failures - 1)) if self.base > 0 else 0.0

    def current(self, address: str) -> float:
        """The delay the refusals this address has had so far earned (0 for none)."""
        failures = self._failures.get(address, 0)
        return min(self.cap, self.base * 2 ** (failures - 1)) if failures and self.base > 0 \
            else 0.0

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)
