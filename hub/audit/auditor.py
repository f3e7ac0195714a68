"""The audit log: the spool's hash-chained events, signed checkpoints, verification.

Where it sits: beside the pipeline, reading it.  Every stage already appends
its event to the spool's ``events`` table in the transaction of the change it
records (``spool.sqlite_tx.Tx.event``): ``accepted``, ``refused`` (code,
message, origin), ``state``, ``status_received``, ``operator`` (who, what,
why), ``retention``.  This module adds the rest of the audit trail:

* key and directory changes: at start the hub compares its certificate's
  SHA-256 fingerprint and the directory's digest with those recorded in
  ``meta`` and appends ``keys_changed``/``directory_changed`` (old and new
  values, the organisations added, removed or changed).  A fresh spool only
  records the baseline (its log starts with the first document); a log with
  no baseline yet (an older spool) gets ``keys_loaded``/``directory_loaded``;
* signed checkpoints of the chain head, every ``checkpoint_interval`` and at
  shutdown (after the queue manager has handed back its leases), only when
  the log has grown since the last one;
* ``GET /v1/audit`` (filters; ``format=jsonl`` is the export format: one
  event per line, every column, ``detail`` as an object), ``GET
  /v1/audit/verify`` and ``GET /v1/audit/checkpoints``, for auditors and admins.

The chain: entry ids are dense from 1; ``hash`` = ``event_hash(prev_hash, id,
at, kind, message_id, delivery_id, organ, state, detail_json)``; the first
``prev_hash`` is ``GENESIS_HASH``.

Checkpoint (namespace ``urn:lienthong-hub:checkpoint:1``), signed by the hub
like a receipt (enveloped ds:Signature, URI="", exclusive c14n, SHA-256)::

    <Checkpoint version="1"><HubId/><Sequence/><EventId/><HeadHash
      algorithm="sha256"/><Count/><Time/><ds:Signature/></Checkpoint>

Verification (``verify_chain``) recomputes every hash from genesis and names
the FIRST bad entry: a hash that does not match the content (edited); an id
gap (removed); an id out of order or twice, or a ``prev_hash`` that does not
link (removed, inserted or reordered — swaps and insertions are told apart by
looking one entry ahead and two behind); an entry whose hash differs from a
trusted checkpoint's (the chain was rewritten consistently up to there); a
checkpoint beyond the last entry (the tail was cut).  Checkpoints signed by a
key the verifier does not trust (an earlier hub key) are counted as skipped:
a later checkpoint still commits to the whole history before it.

Limits: entries after the newest checkpoint are protected by the chain
only; deleting the newest entries together with every checkpoint covering
them cannot be seen from the database alone — auditors keep exports.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from hub.audit.chain import (CNS, ChainVerifier, Checkpoint, VerifyReport, build_checkpoint,
                             read_checkpoint, verify_chain)
from hub.errors import ValidationError
from hub.api.events import event_data, filters
from hub.crypto.keys import HubKeys, fingerprint
from hub.api.base import HUB, hub_of, identity, int_param, iso, json_response, parse_time
from spool.sqlite.tx import _EVENT_COLUMNS, Tx, row_to_event

__all__ = ["AUDIT", "CNS", "PAGE", "Auditor", "ChainVerifier", "Checkpoint", "VerifyReport",
           "build_checkpoint", "read_checkpoint", "setup_routes", "verify_chain"]

log = logging.getLogger("hub.audit.auditor")
_META_CERT, _META_DIR, _META_ROWS = "audit.hub_cert_sha256", "audit.directory_sha256", "audit.directory"
#: Entries read from the database per verification step.
PAGE = 5000


# -- the running hub: key/directory events, checkpoints ------------------------------

def directory_digest(rows: list[dict[str, Any]]) -> str:
    text = json.dumps(rows, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _record_identity(tx: Tx, hub_id: str, keys: HubKeys, rows: list[dict[str, Any]]) -> None:
    meta = dict(tx.conn.execute("SELECT key, value FROM meta WHERE key LIKE 'audit.%'").fetchall())
    # A fresh spool records its baseline silently: the log starts with the first
    # document (the event stream's contract), and every checkpoint carries the
    # signing certificate.  A spool that has a log but no baseline gets *_loaded.
    fresh = tx.conn.execute("SELECT 1 FROM events LIMIT 1").fetchone() is None
    cert_fp, digest = fingerprint(keys.cert), directory_digest(rows)
    key_detail = {"subject": keys.cert.subject.rfc4514_string(),
                  "not_after": keys.cert.not_valid_after_utc.isoformat()}
    if _META_CERT not in meta and not fresh:
        tx.event("keys_loaded", organ=hub_id, fingerprint=cert_fp, **key_detail)
    elif _META_CERT in meta and meta[_META_CERT] != cert_fp:
        tx.event("keys_changed", organ=hub_id, old=meta[_META_CERT], new=cert_fp, **key_detail)
    if _META_DIR not in meta and not fresh:
        tx.event("directory_loaded", organ=hub_id, digest=digest, organs=len(rows))
    elif _META_DIR in meta and meta[_META_DIR] != digest:
        old = {r["id"]: r for r in json.loads(meta.get(_META_ROWS, "[]"))}
        new = {r["id"]: r for r in rows}
        tx.event("directory_changed", organ=hub_id, old=meta[_META_DIR], new=digest, organs=len(rows),
                 added=sorted(new.keys() - old.keys())[:200],
                 removed=sorted(old.keys() - new.keys())[:200],
                 changed=sorted(k for k in new.keys() & old.keys() if new[k] != old[k])[:200])
    tx.conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
                        "DO UPDATE SET value = excluded.value",
                        [(_META_CERT, cert_fp), (_META_DIR, digest),
                         (_META_ROWS, json.dumps(rows, ensure_ascii=False))])


def _head(tx: Tx) -> tuple[int, str, int, int] | None:
    # Read inside the writer's transaction: the head is exactly what is committed with it.
    head = tx.conn.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
    last = tx.conn.execute("SELECT COALESCE(MAX(id), 0), COALESCE(MAX(event_id), 0) "
                           "FROM checkpoints").fetchone()
    return None if head is None else (head[0], head[1], last[0], last[1])


def _insert_checkpoint(tx: Tx, row: dict[str, Any]) -> None:
    tx.conn.execute("INSERT INTO checkpoints (id, at, event_id, head_hash, xml) VALUES (?,?,?,?,?)",
                    (row["id"], row["at"], row["event_id"], row["head_hash"], row["xml"]))


class Auditor:
    """The audit side of one running hub: start-up records, checkpoints, verify."""

    def __init__(self) -> None:
        self.hub: Any = None  # hub.context.HubContext, from start()
        self.scheduler: AsyncIOScheduler | None = None
        self._lock = asyncio.Lock()

    async def start(self, hub: Any, *, schedule: bool = True) -> None:
        """Record key/directory changes, then schedule checkpoints (and one at close)."""
        self.hub = hub
        hub.on_close.append(self.checkpoint)
        await hub.spool.write(lambda tx: _record_identity(tx, hub.hub_id, hub.keys,
                                                          hub.directory.to_rows()))
        if schedule:
            self.scheduler = AsyncIOScheduler(timezone=dt.UTC)
            self.scheduler.add_job(self.checkpoint, "interval", id="checkpoint", coalesce=True,
                                   seconds=hub.settings.checkpoint_interval, max_instances=1)
            self.scheduler.start()

    async def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None

    async def checkpoint(self) -> dict[str, Any] | None:
        """Sign the chain head if the log grew since the last checkpoint; the row or None."""
        async with self._lock:
            head = await self.hub.spool.write(_head)
            if head is None or head[0] <= head[3]:
                return None
            event_id, head_hash, last_seq, _ = head
            now = self.hub.clock()
            cp = Checkpoint(self.hub.hub_id, last_seq + 1, event_id, head_hash, event_id,
                            dt.datetime.fromtimestamp(now, dt.UTC))
            xml = await asyncio.to_thread(build_checkpoint, cp, self.hub.keys)
            row = {"id": cp.sequence, "at": now, "event_id": event_id, "head_hash": head_hash,
                   "xml": xml}
            await self.hub.spool.write(lambda tx: _insert_checkpoint(tx, row))
            log.info("checkpoint #%d signed: entry #%d %s", cp.sequence, event_id, head_hash)
            return row

    async def verify(self) -> VerifyReport:
        """Verify the whole log as the database holds it now, against the hub's certificate."""
        spool = self.hub.spool
        cps = [dict(r) for r in await spool._all("SELECT * FROM checkpoints ORDER BY id")]
        verifier = await asyncio.to_thread(ChainVerifier, cps, [self.hub.keys.cert])
        # Up to the database's own last row, not the writer's idea of it: rows
        # appended behind the hub's back are part of what is checked.
        head, after = (await spool._one("SELECT COALESCE(MAX(id), 0) AS n FROM events"))["n"], 0
        while after < head and not verifier.done:
            rows = [dict(r) for r in await spool._all(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                (after, head, PAGE))]
            if not rows:
                break
            await asyncio.to_thread(verifier.feed, rows)
            after = rows[-1]["id"]
        return verifier.finish()


# -- HTTP ---------------------------------------------------------------------------

AUDIT = web.AppKey("audit", Auditor)


async def get_audit(request: web.Request) -> web.Response:
    hub = hub_of(request)
    identity(request, "auditor")
    q = request.query
    where, params = ["id > ?"], [int_param(request, "after", 0)]
    for name, op in (("since", ">="), ("until", "<")):
        if q.get(name):
            where.append(f"at {op} ?")
            params.append(parse_time(name, q[name]))
    for key, value in filters(request).items():
        if key == "kinds":
            where.append(f"kind IN ({','.join('?' * len(value))})")
            params.extend(value)
        else:
            where.append(f"{key} = ?")
            params.append(value)
    fmt = q.get("format", "json")
    if fmt not in ("json", "jsonl"):
        raise ValidationError(f"format must be json or jsonl, not {fmt!r}", code="bad_parameter",
                              details={"parameter": "format"})
    limit = int_param(request, "limit", 100, 1, 1000)
    rows = await hub.spool._all(f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} "
                                f"ORDER BY id LIMIT ?", (*params, limit))
    events = [row_to_event(r) for r in rows]
    nxt = str(request.rel_url.update_query({"after": events[-1].id})) if len(events) == limit else None
    if fmt == "jsonl":
        text = "".join(json.dumps(e.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"
                       for e in events)
        return web.Response(text=text, content_type="application/x-ndjson",
                            headers={"Link": f'<{nxt}>; rel="next"'} if nxt else None)
    body: dict[str, Any] = {"items": [event_data(e) for e in events]}
    if nxt:
        body["next"] = nxt
    return json_response(body)


async def get_verify(request: web.Request) -> web.Response:
    identity(request, "auditor")
    report = await request.app[AUDIT].verify()
    if not report.ok:
        log.error("audit log verification failed: %s", report.summary())
    return json_response(report.to_dict())  # a broken chain is an answer, not an error


async def get_checkpoints(request: web.Request) -> web.Response:
    hub = hub_of(request)
    identity(request, "auditor")
    limit = int_param(request, "limit", 100, 1, 1000)
    rows = await hub.spool._all("SELECT id, at, event_id, head_hash, xml FROM checkpoints "
                                "WHERE id > ? ORDER BY id LIMIT ?",
                                (int_param(request, "after", 0), limit))
    items = [{"id": r["id"], "at": r["at"], "at_iso": iso(r["at"]), "event_id": r["event_id"],
              "head_hash": r["head_hash"], "xml": bytes(r["xml"]).decode("utf-8")} for r in rows]
    body: dict[str, Any] = {"items": items}
    if len(items) == limit:
        body["next"] = str(request.rel_url.update_query({"after": items[-1]["id"]}))
    return json_response(body)


def setup_routes(app: web.Application) -> None:
    auditor = app[AUDIT] = Auditor()

    async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
        # Appended after create_app's own context: the hub is open here.  The
        # shutdown checkpoint runs in the hub's close hooks, after the queue
        # manager's last events and before the spool closes.
        await auditor.start(app[HUB])
        yield
        await auditor.stop()

    app.cleanup_ctx.append(audit_ctx)
    app.router.add_get("/v1/audit", get_audit)
    app.router.add_get("/v1/audit/verify", get_verify)
    app.router.add_get("/v1/audit/checkpoints", get_checkpoints)
