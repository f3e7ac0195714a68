"""Inside one spool transaction: the event chain, guarded state changes.

Shared by the SQLite backend's writer (``spool.sqlite``) and its queue
operations (``spool.sqlite_queue``).  Every function here runs in the
database thread, inside the writer's transaction.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import TYPE_CHECKING, Any, Sequence

from spool.records import Event
from spool.states import State

if TYPE_CHECKING:
    from spool.sqlite.backend import SqliteSpool

GENESIS_HASH = "0" * 64
_EVENT_COLUMNS = "id, at, kind, message_id, delivery_id, organ, state, detail, prev_hash, hash"


def event_hash(prev_hash: str, ev_id: int, at: float, kind: str, message_id: str | None,
               delivery_id: int | None, organ: str | None, state: str | None,
               detail_json: str) -> str:
    """The chain link: SHA-256 over the previous hash and this row's fields."""
    material = json.dumps([prev_hash, ev_id, repr(at), kind, message_id, delivery_id, organ,
                           state, detail_json], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class Tx:
    """What a write operation sees: the connection, the batch's clock, the event log."""

    __slots__ = ("conn", "now", "events", "_spool")

    def __init__(self, conn: sqlite3.Connection, now: float, spool: "SqliteSpool") -> None:
        self.conn = conn
        self.now = now
        self.events: list[Event] = []
        self._spool = spool

    def event(self, kind: str, *, message_id: str | None = None, delivery_id: int | None = None,
              organ: str | None = None, state: str | None = None, **detail: Any) -> Event:
        sp = self._spool
        ev_id = sp._last_event_id + 1
        detail_json = json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        digest = event_hash(sp._last_hash, ev_id, self.now, kind, message_id, delivery_id, organ,
                            state, detail_json)
        self.conn.execute(f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                          (ev_id, self.now, kind, message_id, delivery_id, organ, state,
                           detail_json, sp._last_hash, digest))
        ev = Event(ev_id, self.now, kind, message_id, delivery_id, organ, state, detail,
                   sp._last_hash, digest)
        sp._last_event_id, sp._last_hash = ev_id, digest
        self.events.append(ev)
        return ev


def transition(tx: Tx, delivery_id: int, expected: Sequence[State], new: State, *,
               reason: str | None = None, **fields: Any) -> bool:
    """The one way a delivery changes state: guarded by the state it must be in."""
    sets = ["state = ?", "updated_at = ?"]
    params: list[Any] = [new.value, tx.now]
    for column, value in fields.items():
        if column == "attempts_inc":
            sets.append("attempts = attempts + ?")
        else:
            sets.append(f"{column} = ?")
        params.append(value)
    states = [s.value for s in expected]
    cur = tx.conn.execute(
        f"UPDATE deliveries SET {', '.join(sets)} WHERE id = ? "
        f"AND state IN ({','.join('?' * len(states))}) RETURNING envelope_id, recipient, route",
        (*params, delivery_id, *states))
    row = cur.fetchone()
    cur.close()
    if row is None:
        return False
    detail: dict[str, Any] = {"route": row[2]}
    if reason:
        detail["reason"] = reason
    tx.event("state", message_id=row[0], delivery_id=delivery_id, organ=row[1], state=new.value,
             **detail)
    return True


def row_to_event(r: Any) -> Event:
    return Event(r["id"], r["at"], r["kind"], r["message_id"], r["delivery_id"], r["organ"],
                 r["state"], json.loads(r["detail"]), r["prev_hash"], r["hash"])
