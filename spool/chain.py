"""The event log's hash chain: one link's hash, the same for every backend.

Each event row carries the hash of the one before it and its own, SHA-256
over the previous hash and the row's fields, so that an auditor holding a
signed checkpoint of the head can detect any row changed, removed or
inserted behind it (``hub.audit.chain`` verifies; the backends append).
"""
from __future__ import annotations

import hashlib
import json

GENESIS_HASH = "0" * 64


def event_hash(prev_hash: str, ev_id: int, at: float, kind: str, message_id: str | None,
               delivery_id: int | None, organ: str | None, state: str | None,
               detail_json: str) -> str:
    """The chain link: SHA-256 over the previous hash and this row's fields."""
    material = json.dumps([prev_hash, ev_id, repr(at), kind, message_id, delivery_id, organ,
                           state, detail_json], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()
