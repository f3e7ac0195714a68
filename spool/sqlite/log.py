"""The SQLite backend's event log, receipts, checkpoints and meta (a mixin).

Reads for the receipt issuer (``hub.receipts.issuer``), the auditor
(``hub.audit.auditor``) and their HTTP views; writes through the group-commit
writer.  Kept apart from ``spool.sqlite.backend`` so each file stays readable.
"""
from __future__ import annotations

import asyncio

from typing import Any, Callable, Sequence

from spool.base import (CheckpointRow, EventQuery, ReceiptDoc, ReceiptQuery, ReceiptRow,
                        ReceiptSource, ReceiptValues, StateChange)
from spool.records import Event
from spool.sqlite.tx import EVENT_COLUMNS, Tx, row_to_event

_RECEIPT_SELECT = ("SELECT r.rowid AS seq, r.id, r.message_id, r.event, r.sender, r.recipient, "
                   "r.state, r.business_status, r.at, e.sha256, "
                   "json_extract(e.signature, '$.result') AS sig "
                   "FROM receipts r LEFT JOIN envelopes e ON e.id = r.message_id")
#: An agency's receipts (SQL, not a filter afterwards): every receipt of the
#: documents it sent, the receipts of its own deliveries and statuses, and the
#: acceptance receipt of a document addressed to it; never a co-recipient's.
_VISIBLE = ("(r.sender = ? OR r.recipient = ? OR (r.recipient IS NULL AND r.message_id IN "
            "(SELECT envelope_id FROM deliveries WHERE recipient = ?)))")


def _marks(items: Sequence[Any]) -> str:
    return ",".join("?" * len(items))


class LogMixin:
    # provided by SqliteSpool
    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError  # provided by SqliteSpool
    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError  # provided by SqliteSpool
    def write(self, fn: Callable[[Tx], Any], *, announced: bool = False) -> "asyncio.Future[Any]":
        raise NotImplementedError  # provided by SqliteSpool

    # -- events ------------------------------------------------------------------
    async def query_events(self, query: EventQuery) -> list[Event]:
        where: list[str] = ["id > ?"]
        params: list[Any] = [query.get("after", 0)]
        for key, sql in (("upto", "id <= ?"), ("since", "at >= ?"), ("until", "at < ?"),
                         ("organ", "organ = ?"), ("message_id", "message_id = ?"),
                         ("state", "state = ?")):
            if query.get(key) is not None:
                where.append(sql)
                params.append(query[key])  # type: ignore[literal-required]
        kinds = list(query.get("kinds") or ())
        if kinds:
            where.append(f"kind IN ({_marks(kinds)})")
            params.extend(kinds)
        rows = await self._all(f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} "
                               f"ORDER BY id LIMIT ?", (*params, query.get("limit", 500)))
        return [row_to_event(r) for r in rows]

    async def chain_entries(self, after: int, upto: int, limit: int) -> list[dict[str, Any]]:
        rows = await self._all(f"SELECT {EVENT_COLUMNS} FROM events WHERE id > ? AND id <= ? "
                               f"ORDER BY id LIMIT ?", (after, upto, limit))
        return [dict(r) for r in rows]

    async def event_head(self) -> tuple[int, str] | None:
        row = await self._one("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1")
        return (row["id"], row["hash"]) if row is not None else None

    async def has_events(self) -> bool:
        return await self._one("SELECT 1 FROM events LIMIT 1") is not None

    async def state_history(self, message_ids: Sequence[str], before: int) -> list[StateChange]:
        if not message_ids:
            return []
        rows = await self._all(
            f"SELECT id, message_id, organ, state FROM events WHERE message_id IN "
            f"({_marks(message_ids)}) AND kind = 'state' AND id < ? ORDER BY id",
            (*message_ids, before))
        return [StateChange(id=r["id"], message_id=r["message_id"], organ=r["organ"],
                            state=r["state"]) for r in rows]

    async def delivery_pairs(self, message_ids: Sequence[str]) -> set[tuple[str, str]]:
        if not message_ids:
            return set()
        rows = await self._all(f"SELECT envelope_id, recipient FROM deliveries WHERE envelope_id "
                               f"IN ({_marks(message_ids)})", tuple(message_ids))
        return {(r["envelope_id"], r["recipient"]) for r in rows}

    # -- receipts ------------------------------------------------------------------
    async def receipt_sources(self, message_ids: Sequence[str]) -> dict[str, ReceiptSource]:
        if not message_ids:
            return {}
        rows = await self._all(
            f"SELECT id, sender, dedup_key, document_id, sha256, status_code, "
            f"json_extract(signature, '$.result') AS sig FROM envelopes "
            f"WHERE id IN ({_marks(message_ids)})", tuple(message_ids))
        return {r["id"]: ReceiptSource(**r) for r in rows}  # type: ignore[typeddict-item]

    async def store_receipts(self, rows: Sequence[ReceiptValues], cursor_key: str,
                             cursor: int) -> None:
        def op(tx: Tx) -> None:
            tx.conn.executemany(
                "INSERT OR IGNORE INTO receipts (id, event_id, message_id, event, sender, "
                "recipient, state, business_status, at, xml) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            tx.conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                "SET value = excluded.value "
                "WHERE CAST(meta.value AS INTEGER) < CAST(excluded.value AS INTEGER)",
                (cursor_key, str(cursor)))
        await self.write(op)

    async def receipts(self, query: ReceiptQuery) -> list[ReceiptRow]:
        where: list[str] = ["r.rowid > ?"]
        params: list[Any] = [query.get("after", 0)]
        if query.get("visible_to"):
            where.append(_VISIBLE)
            params += [query["visible_to"]] * 3
        if query.get("message_id"):
            where.append("r.message_id = ?")
            params.append(query["message_id"])
        if query.get("organ"):
            where.append("(r.sender = ? OR r.recipient = ?)")
            params += [query["organ"]] * 2
        for key, sql in (("event", "r.event = ?"), ("state", "r.state = ?"),
                         ("since", "r.at >= ?"), ("until", "r.at < ?")):
            if query.get(key) is not None:
                where.append(sql)
                params.append(query[key])  # type: ignore[literal-required]
        rows = await self._all(f"{_RECEIPT_SELECT} WHERE {' AND '.join(where)} "
                               f"ORDER BY r.rowid LIMIT ?", (*params, query.get("limit", 100)))
        return [ReceiptRow(**r) for r in rows]  # type: ignore[typeddict-item]

    async def receipt(self, receipt_id: str) -> ReceiptDoc | None:
        row = await self._one("SELECT id, message_id, sender, recipient, xml FROM receipts "
                              "WHERE id = ?", (receipt_id,))
        if row is None:
            return None
        return ReceiptDoc(id=row["id"], message_id=row["message_id"], sender=row["sender"],
                          recipient=row["recipient"], xml=bytes(row["xml"]))

    # -- checkpoints -----------------------------------------------------------------
    async def checkpoint_head(self) -> tuple[int, str, int, int] | None:
        def head(tx: Tx) -> tuple[int, str, int, int] | None:
            # Read inside the writer's transaction: exactly what is committed with it.
            ev = tx.conn.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
            last = tx.conn.execute("SELECT COALESCE(MAX(id), 0), COALESCE(MAX(event_id), 0) "
                                   "FROM checkpoints").fetchone()
            return None if ev is None else (ev[0], ev[1], last[0], last[1])
        return await self.write(head)

    async def add_checkpoint(self, row: CheckpointRow) -> None:
        await self.write(lambda tx: tx.conn.execute(
            "INSERT INTO checkpoints (id, at, event_id, head_hash, xml) VALUES (?,?,?,?,?)",
            (row["id"], row["at"], row["event_id"], row["head_hash"], row["xml"])))

    async def checkpoints(self, after: int = 0, limit: int | None = None) -> list[CheckpointRow]:
        rows = await self._all("SELECT id, at, event_id, head_hash, xml FROM checkpoints "
                               "WHERE id > ? ORDER BY id LIMIT ?", (after, limit or -1))
        return [CheckpointRow(id=r["id"], at=r["at"], event_id=r["event_id"],
                              head_hash=r["head_hash"], xml=bytes(r["xml"])) for r in rows]

    # -- meta ------------------------------------------------------------------------
    async def get_meta(self, prefix: str) -> dict[str, str]:
        rows = await self._all("SELECT key, value FROM meta WHERE substr(key, 1, ?) = ?",
                               (len(prefix), prefix))
        return {r["key"]: r["value"] for r in rows}

    async def update_meta(self, values: dict[str, str],
                          events: Sequence[tuple[str, str | None, dict[str, Any]]] = ()) -> None:
        def op(tx: Tx) -> None:
            for kind, organ, detail in events:
                tx.event(kind, organ=organ, **detail)
            tx.conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
                                "DO UPDATE SET value = excluded.value", list(values.items()))
        await self.write(op)
