"""Message ids: 26-character, time-ordered, random (ULID layout, Crockford base32).

Ids sort by acceptance time, which keeps the spool's primary-key index
append-mostly and makes ``lienthong queue list`` read in arrival order.
"""
from __future__ import annotations

import os
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_message_id(now: float | None = None) -> str:
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


_VALUE = {c: i for i, c in enumerate(_ALPHABET)}


def timestamp_of(message_id: str | None) -> float | None:
    """When a message id was minted (epoch seconds), or None if it is not one of ours."""
    if not message_id or len(message_id) != 26:
        return None
    ms = 0
    for ch in message_id[:10]:
        digit = _VALUE.get(ch)
        if digit is None:
            return None
        ms = ms * 32 + digit
    return ms / 1000.0
