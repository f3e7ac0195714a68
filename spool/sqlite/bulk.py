"""Bulk loading for benchmarks: a backlog of queued deliveries, straight into SQLite.

Used only by ``bench.fill`` (setup, not measured): rows are inserted with
``executemany`` in one transaction with ``synchronous=OFF``, the hash chain
kept valid so the hub continues it.  The schema must exist (open and close
a ``SqliteSpool`` first).  Kept in the backend so that no SQL lives outside
``spool/``.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable

from spool.chain import GENESIS_HASH, event_hash

SQLITE_VERSION = sqlite3.sqlite_version


def load_backlog(db: Path, rows: Iterable[tuple[tuple[Any, ...], tuple[Any, ...], dict[str, Any]]],
                 raw: bytes, *, now: float, cursor_key: str, stand_in: bytes | None = None,
                 batch: int = 50_000) -> float:
    """Insert ``rows`` ((envelope values, delivery values, accepted event) each)
    sharing the payload ``raw`` (or, with ``stand_in``, each its own payload row
    holding those bytes); returns the seconds taken."""
    CURSOR_KEY = cursor_key
    own_payloads = stand_in is not None
    t0 = time.monotonic()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    sha = hashlib.sha256(raw).hexdigest()
    row = conn.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
    ev_id, prev = row if row else (0, GENESIS_HASH)
    cursor = conn.execute("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,)).fetchone()
    issuer_caught_up = (int(cursor[0]) if cursor else 0) >= ev_id
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT OR IGNORE INTO payloads (sha256, size, data, path, created_at) "
                 "VALUES (?,?,?,?,?)", (sha, len(raw), raw, None, now))
    envs: list[tuple[Any, ...]] = []
    dlvs: list[tuple[Any, ...]] = []
    evs: list[tuple[Any, ...]] = []
    pays: list[tuple[Any, ...]] = []

    def flush() -> None:
        if pays:
            conn.executemany("INSERT INTO payloads (sha256, size, data, path, created_at) "
                             "VALUES (?,?,?,?,?)", pays)
        conn.executemany("INSERT INTO envelopes (id, kind, sender, dedup_key, document_id, sha256, "
                         "size, subject, code, status_code, response_for, signature, origin, "
                         "received_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", envs)
        conn.executemany("INSERT INTO deliveries (envelope_id, recipient, route, state, "
                         "next_attempt_at, expires_at, created_at, updated_at) "
                         "VALUES (?,?,?,?,?,?,?,?)", dlvs)
        conn.executemany("INSERT INTO events (id, at, kind, message_id, delivery_id, organ, state, "
                         "detail, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?)", evs)
        for rows_of in (envs, dlvs, evs, pays):
            rows_of.clear()

    for env, dlv, ev in rows:
        if own_payloads:
            own = hashlib.sha256(env[0].encode()).hexdigest()
            pays.append((own, len(raw), stand_in, None, now))
            env = (*env[:5], own, *env[6:])
            ev["detail"]["sha256"] = own
        envs.append(env)
        dlvs.append(dlv)
        ev_id += 1
        detail = json.dumps(ev["detail"], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        digest = event_hash(prev, ev_id, ev["at"], "accepted", ev["message_id"], None, ev["organ"],
                            "queued", detail)
        evs.append((ev_id, ev["at"], "accepted", ev["message_id"], None, ev["organ"], "queued",
                    detail, prev, digest))
        prev = digest
        if len(envs) >= batch:
            flush()
    if envs:
        flush()
    if issuer_caught_up:
        # A running hub's receipt issuer reads past these events as they are
        # committed ("accepted" earns no receipt from it); so does the fill.
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                     "SET value = excluded.value", (CURSOR_KEY, str(ev_id)))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.monotonic() - t0


def relayed_status_count(db: Path) -> int:
    """Status messages waiting in mailboxes (the bench's end-to-end check)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT COUNT(*) FROM deliveries d JOIN envelopes e "
                            "ON e.id = d.envelope_id WHERE e.kind = 'status' "
                            "AND d.route = 'mailbox'").fetchone()[0]
    finally:
        conn.close()
