"""Inside one spool transaction: the event chain, guarded state changes.

Shared by the SQLite backend's writer (``spool.sqlite``) and its queue
operations (``spool.sqlite_queue``).  Every function here runs in the
database thread, inside the writer's transaction.
"""
from __future__ import annotations

import json
import sqlite3
from typing import Any, Sequence

from spool.chain import GENESIS_HASH, event_hash
from spool.records import Event
from spool.states import State

EVENT_COLUMNS = "id, at, kind, message_id, delivery_id, organ, state, detail, prev_hash, hash"


class Chain:
    """The event chain's head as this transaction sees it.

    Read from the database when the transaction begins (``BEGIN IMMEDIATE``
    holds the write lock, so no other writer can append meanwhile), never
    kept between transactions: several writers keep one chain."""

    __slots__ = ("id", "hash")

    def __init__(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
        self.id: int = row[0] if row is not None else 0
        self.hash: str = row[1] if row is not None else GENESIS_HASH


class Tx:
    """What a write operation sees: the connection, the batch's clock, the event log."""

    __slots__ = ("conn", "now", "events", "chain")

    def __init__(self, conn: sqlite3.Connection, now: float, chain: Chain) -> None:
        self.conn = conn
        self.now = now
        self.events: list[Event] = []
        self.chain = chain

    def event(self, kind: str, *, message_id: str | None = None, delivery_id: int | None = None,
              organ: str | None = None, state: str | None = None, **detail: Any) -> Event:
        chain = self.chain
        ev_id, prev = chain.id + 1, chain.hash
        detail_json = json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        digest = event_hash(prev, ev_id, self.now, kind, message_id, delivery_id, organ,
                            state, detail_json)
        self.conn.execute(f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                          (ev_id, self.now, kind, message_id, delivery_id, organ, state,
                           detail_json, prev, digest))
        ev = Event(ev_id, self.now, kind, message_id, delivery_id, organ, state, detail,
                   prev, digest)
        chain.id, chain.hash = ev_id, digest
        self.events.append(ev)
        return ev


def transition(tx: Tx, delivery_id: int, expected: Sequence[State], new: State, *,
               reason: str | None = None, owned_by: str | None = None,
               note: dict[str, Any] | None = None, **fields: Any) -> bool:
    """The one way a delivery changes state: guarded by the state it must be in
    (and, with ``owned_by``, by the lease's owner).  Leaving ``active`` ends
    the lease.  ``note`` is added to the event's detail."""
    sets = ["state = ?", "updated_at = ?"]
    params: list[Any] = [new.value, tx.now]
    if new is not State.ACTIVE:
        fields.setdefault("lease_owner", None)
        fields.setdefault("lease_until", None)
    for column, value in fields.items():
        if column == "attempts_inc":
            sets.append("attempts = attempts + ?")
        else:
            sets.append(f"{column} = ?")
        params.append(value)
    states = [s.value for s in expected]
    guard = ""
    if owned_by is not None:
        guard = " AND lease_owner = ?"
        states.append(owned_by)
    cur = tx.conn.execute(
        f"UPDATE deliveries SET {', '.join(sets)} WHERE id = ? "
        f"AND state IN ({','.join('?' * len(expected))}){guard} "
        f"RETURNING envelope_id, recipient, route",
        (*params, delivery_id, *states))
    row = cur.fetchone()
    cur.close()
    if row is None:
        return False
    detail: dict[str, Any] = {"route": row[2], **(note or {})}
    if reason:
        detail["reason"] = reason
    tx.event("state", message_id=row[0], delivery_id=delivery_id, organ=row[1], state=new.value,
             **detail)
    return True


def row_to_event(r: Any) -> Event:
    return Event(r["id"], r["at"], r["kind"], r["message_id"], r["delivery_id"], r["organ"],
                 r["state"], json.loads(r["detail"]), r["prev_hash"], r["hash"])
