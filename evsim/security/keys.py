"""The AuthorizationKey of security profiles 1 and 2, as both sides check it."""
from __future__ import annotations

import re

HEX_KEY = re.compile(r"[0-9a-fA-F]{32,40}")
KEY_RULE = "an AuthorizationKey is 16 to 20 characters, or 32 to 40 hex digits"


def valid_key(key: object) -> bool:
    """The whitepaper's 16 to 20 bytes, written as characters or as hex digits."""
    return isinstance(key, str) and (16 <= len(key) <= 20 or bool(HEX_KEY.fullmatch(key)))
