"""The queue manager's and operators' side of the SQLite spool (a mixin).

Reads: what is due for dispatch, what has outlived ``maximal_lifetime``,
the operator's listing.  Writes (through the group-commit writer): crash
recovery with the poison limit, requeue on clean shutdown, payload
retention.  Kept apart from ``spool.sqlite`` so each file stays readable.
"""
from __future__ import annotations

import asyncio

import logging
from typing import Any, Callable, Sequence

from spool.base import DeliveryRow
from spool.sqlite.tx import Tx, transition
from spool.states import OPERATOR_MOVES, State

log = logging.getLogger("hub.spool")

_DUE_COLUMNS = ("d.id, d.envelope_id, d.recipient, d.route, d.state, d.attempts, d.crashes, "
                "d.next_attempt_at, d.expires_at, d.created_at, d.last_error, d.lease_owner, d.lease_until, "
                "e.sha256, e.kind, e.sender, e.document_id")


def _rows(rows: list[Any]) -> list[DeliveryRow]:
    return [DeliveryRow(**r) for r in rows]  # type: ignore[typeddict-item]


class QueueMixin:
    # provided by SqliteSpool
    node_id: str
    clock: Callable[[], float]
    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError  # provided by SqliteSpool
    def write(self, fn: Callable[[Tx], Any], *, announced: bool = False) -> "asyncio.Future[Any]":
        raise NotImplementedError  # provided by SqliteSpool

    async def due(self, now: float, routes: Sequence[str], limit: int) -> list[DeliveryRow]:
        """Deliveries ready for an attempt on ``routes``, oldest promise first."""
        if not routes or limit <= 0:
            return []
        marks = ",".join("?" * len(routes))
        rows = await self._all(
            f"SELECT {_DUE_COLUMNS} FROM deliveries d JOIN envelopes e ON e.id = d.envelope_id "
            f"WHERE d.state IN ('queued', 'deferred') AND d.next_attempt_at <= ? "
            f"AND d.route IN ({marks}) ORDER BY d.next_attempt_at, d.id LIMIT ?",
            (now, *routes, limit))
        return _rows(rows)

    async def expired(self, now: float, limit: int = 500) -> list[DeliveryRow]:
        """Deliveries still waiting after their lifetime (held ones never expire)."""
        rows = await self._all(
            f"SELECT {_DUE_COLUMNS} FROM deliveries d JOIN envelopes e ON e.id = d.envelope_id "
            f"WHERE d.state IN ('queued', 'deferred') AND d.expires_at <= ? "
            f"ORDER BY d.expires_at LIMIT ?", (now, limit))
        return _rows(rows)

    async def next_due_at(self, routes: Sequence[str]) -> float | None:
        if not routes:
            return None
        rows = await self._all(
            f"SELECT MIN(next_attempt_at) AS t FROM deliveries WHERE state IN ('queued', 'deferred') "
            f"AND route IN ({','.join('?' * len(routes))})", tuple(routes))
        return rows[0]["t"] if rows else None

    async def lease(self, ids: Sequence[int], until: float) -> list[int]:
        """Move due deliveries to ``active`` in one transaction, leased to this
        node until ``until``; returns those leased."""
        return await self.write(lambda tx: _lease(tx, ids, self.node_id, until))

    async def extend_leases(self, ids: Sequence[int], until: float) -> int:
        """Renew this node's leases of attempts still running."""
        def op(tx: Tx) -> int:
            return sum(tx.conn.execute(
                "UPDATE deliveries SET lease_until = ? WHERE id = ? AND state = 'active' "
                "AND lease_owner = ?", (until, i, self.node_id)).rowcount for i in ids)
        return await self.write(op) if ids else 0

    async def reclaim_expired(self, now: float, crash_limit: int) -> tuple[int, int]:
        return await self.write(lambda tx: _recover(
            tx, crash_limit, "lease_until < ?", (now,),
            "its lease expired (the node attempting it died or could not record the outcome)"))

    async def operator_action(self, target: str, action: str, reason: str,
                              by: str) -> tuple[bool, list[dict[str, Any]]]:
        """hold / release / retry / drop one delivery (numeric id) or all of a
        message's deliveries; recorded as an ``operator`` event.  Returns
        (target exists, deliveries changed)."""
        def op(tx: Tx) -> tuple[bool, list[dict[str, Any]]]:
            found = _target_exists(tx, target)
            return found, (_operator(tx, target, action, reason, by) if found else [])
        return await self.write(op)

    async def recover(self, crash_limit: int) -> tuple[int, int]:
        """After an unclean stop: this node's ``active`` rows, and any node's
        whose lease expired, go back to the queue; a row that was active during
        ``crash_limit`` crashes goes to ``corrupt``.  A live lease of another
        node is left alone."""
        now = self.clock()
        return await self.write(lambda tx: _recover(
            tx, crash_limit, "(lease_owner = ? OR lease_owner IS NULL OR lease_until < ?)",
            (self.node_id, now), "recovered after an unclean stop"))

    async def requeue_active(self, reason: str) -> int:
        """Clean shutdown: hand back this node's leases without counting a crash."""
        return await self.write(lambda tx: _requeue(tx, reason, self.node_id))

    async def queue(self, *, states: Sequence[str] = (), route: str | None = None,
                    organ: str | None = None, older_than: float | None = None,
                    message_id: str | None = None, after: int = 0,
                    limit: int = 100) -> list[DeliveryRow]:
        """The operator's view (``mailq``): one row per delivery, filters optional."""
        where: list[str] = ["d.id > ?"]
        params: list[Any] = [after]
        if states:
            where.append(f"d.state IN ({','.join('?' * len(states))})")
            params.extend(states)
        if route:
            where.append("d.route = ?")
            params.append(route)
        if organ:
            where.append("(d.recipient = ? OR e.sender = ?)")
            params.extend([organ, organ])
        if older_than is not None:
            where.append("d.created_at <= ?")
            params.append(older_than)
        if message_id:
            where.append("d.envelope_id = ?")
            params.append(message_id)
        rows = await self._all(
            f"SELECT {_DUE_COLUMNS}, d.updated_at, e.size, e.subject, e.received_at "
            f"FROM deliveries d JOIN envelopes e ON e.id = d.envelope_id "
            f"WHERE {' AND '.join(where)} ORDER BY d.id LIMIT ?", (*params, limit))
        return _rows(rows)

    async def payload_paths(self) -> set[str]:
        """Every payload file a row references (housekeeping's sweep keeps these)."""
        rows = await self._all("SELECT path FROM payloads WHERE path IS NOT NULL")
        return {r["path"] for r in rows}

    async def retire_payloads(self, before: float) -> list[str]:
        """Retention: drop the bytes of documents whose deliveries are all final
        since ``before``; metadata and the event log stay.  Returns file paths to
        remove (after the commit, so a crash never leaves a row without its file)."""
        return await self.write(lambda tx: _retire(tx, before))


def _recover(tx: Tx, crash_limit: int, where: str, params: Sequence[Any],
             why: str) -> tuple[int, int]:
    rows = tx.conn.execute(f"SELECT id, crashes FROM deliveries WHERE state = 'active' AND {where}",
                           params).fetchall()
    requeued = corrupted = 0
    for delivery_id, crashes in rows:
        if crashes + 1 >= crash_limit:
            transition(tx, delivery_id, (State.ACTIVE,), State.CORRUPT, crashes=crashes + 1,
                       reason=f"active during {crashes + 1} crashes of the hub: quarantined")
            corrupted += 1
        else:
            transition(tx, delivery_id, (State.ACTIVE,), State.QUEUED, crashes=crashes + 1,
                       next_attempt_at=tx.now, reason=why)
            requeued += 1
    return requeued, corrupted


def _requeue(tx: Tx, reason: str, owner: str) -> int:
    ids = [r[0] for r in tx.conn.execute("SELECT id FROM deliveries WHERE state = 'active' "
                                         "AND lease_owner = ?", (owner,))]
    for delivery_id in ids:
        transition(tx, delivery_id, (State.ACTIVE,), State.QUEUED, next_attempt_at=tx.now,
                   reason=reason)
    return len(ids)


def _retire(tx: Tx, before: float) -> list[str]:
    rows = tx.conn.execute(
        "SELECT p.sha256, p.path FROM payloads p WHERE (p.data IS NOT NULL OR p.path IS NOT NULL) "
        "AND p.created_at < ? AND NOT EXISTS ("
        "  SELECT 1 FROM envelopes e JOIN deliveries d ON d.envelope_id = e.id "
        "  WHERE e.sha256 = p.sha256 AND (d.state NOT IN ('delivered', 'failed', 'corrupt') "
        "  OR d.updated_at >= ?)) LIMIT 1000", (before, before)).fetchall()
    paths = []
    for sha256, path in rows:
        tx.conn.execute("UPDATE payloads SET data = NULL, path = NULL WHERE sha256 = ?", (sha256,))
        if path:
            paths.append(path)
    if rows:
        tx.event("retention", count=len(rows), before=before)
    return paths


def _lease(tx: Tx, ids: Sequence[int], owner: str, until: float) -> list[int]:
    leased = []
    for delivery_id in ids:
        if transition(tx, delivery_id, (State.QUEUED, State.DEFERRED), State.ACTIVE, attempts_inc=1,
                      lease_owner=owner, lease_until=until):
            leased.append(delivery_id)
    return leased


def _operator(tx: Tx, target: str, action: str, reason: str, by: str) -> list[dict[str, Any]]:
    expected, new = OPERATOR_MOVES[action]
    if target.isdigit():
        rows = tx.conn.execute("SELECT id, envelope_id, recipient, state FROM deliveries "
                               "WHERE id = ?", (int(target),)).fetchall()
    else:
        rows = tx.conn.execute("SELECT id, envelope_id, recipient, state FROM deliveries "
                               "WHERE envelope_id = ? ORDER BY id", (target,)).fetchall()
    changed = []
    note = f"{action} by {by}" + (f": {reason}" if reason else "")
    for delivery_id, message_id, recipient, state in rows:
        fields: dict[str, Any] = {}
        if new is State.QUEUED:
            fields["next_attempt_at"] = tx.now
        if new is State.FAILED:
            fields["last_error"] = f"dropped by {by}: {reason}"
        notice = ({"notify": True, "notice": f"dropped by an operator: {reason}"}
                  if action == "drop" else None)
        if transition(tx, delivery_id, expected, new, reason=note, note=notice, **fields):
            changed.append({"delivery_id": delivery_id, "message_id": message_id,
                            "recipient": recipient, "from": state, "state": new.value})
    if rows:
        tx.event("operator", message_id=rows[0][1], organ=by, action=action, reason=reason,
                 target=target, changed=[c["delivery_id"] for c in changed])
    return changed


def _target_exists(tx: Tx, target: str) -> bool:
    if target.isdigit():
        sql = "SELECT 1 FROM deliveries WHERE id = ?"
    else:
        sql = "SELECT 1 FROM deliveries WHERE envelope_id = ? LIMIT 1"
    return tx.conn.execute(sql, (int(target) if target.isdigit() else target,)).fetchone() is not None
