"""Identifiers as people see them: lowercase hex of the raw 32-byte values."""

from __future__ import annotations

import re

from federation.errors import UsageError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def short(raw: bytes) -> str:
    """The first 12 hex digits: enough to tell a club's events apart on a screen."""
    return raw.hex()[:12]


def parse_id(text: str, what: str = "id") -> bytes:
    """Parse a full 64-digit hex id (club, log or event)."""
    value = text.strip().lower()
    if not _HEX64.match(value):
        raise UsageError(f"{what} must be 64 hex digits, got {text!r}")
    return bytes.fromhex(value)
