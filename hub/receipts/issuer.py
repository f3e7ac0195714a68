"""Receipts: the hub's signed word on every step a document takes.

Where this sits in the pipeline: beside the queue manager, after the spool.
Cleanup signs the ``accepted`` receipt itself and commits it with the
envelope.  Every later receipt-worthy event is issued here, from the spool's
event log:

* a delivery outcome, a ``state`` event whose state is ``delivered`` or
  ``failed`` → receipt event ``delivered``/``failed``, recipient = the
  delivery's recipient;
* a business status received, a ``status_received`` event (message id = the
  ORIGINAL document, organ = who sent the status) → receipt event
  ``status``, recipient = that organ, business status = the status code,
  state = that organ's delivery state as of the event (``recorded`` when the
  organ has no delivery of the document: the sender's own recall).

Receipt ids are ``<message_id>.e<event_id>`` (``<message_id>.accepted`` for
cleanup's), so a receipt names the log line it attests.

Strategy (crash-safe, gap-free, batched)
    ``meta('receipts_cursor')`` is the last event id examined.  The issuer
    task catches up from it on start, then sleeps until a spool listener
    sees a receipt-worthy event committed.  Each pass reads the log in pages
    (``spool.events`` on the reader connection; the page's upper bound is the
    log's head read *before* the page, so a commit racing the read is never
    skipped), signs the page's receipts (``build_receipts``, in a worker
    thread when the batch is big, so signing never stalls the event loop),
    and writes the rows and the new cursor in ONE spool write op.  A crash
    anywhere before that commit replays the page on restart; the rows are
    ``INSERT OR IGNORE`` on the unique ``event_id``, so a replay is harmless.

HTTP
    ``GET /v1/receipts`` (filters, paging by ``after`` = the receipt's row
    sequence, which only grows, so incremental exports never miss a late
    receipt; ``format=json|csv``), ``GET /v1/receipts/{id}`` (the signed XML
    as stored), ``GET /v1/hub/certificate`` (public: what auditors verify
    with).  An agency sees the receipts of documents it sent or received.

Diagnostics: ``hub.receipts`` logs a failed pass (retried after
``RETRY_DELAY``) and any event whose envelope is missing (never expected).
"""
from __future__ import annotations

import asyncio
import bisect
import csv
import functools
import io
import logging
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Sequence

from aiohttp import web

from hub.context import HubContext
from hub.errors import ForbiddenError, NotFoundError, ValidationError
from hub.receipts.format import EVENTS, ReceiptFields
from hub.api.base import (HUB, fit_page, hub_of, identity, int_param, iso, json_response,
                          parse_time)
from spool.records import Event
from spool.sqlite.tx import Tx
from spool.states import State

log = logging.getLogger("hub.receipts.issuer")

CURSOR_KEY = "receipts_cursor"
#: Event kinds that can carry a receipt (``accepted`` is cleanup's own).
KINDS = ("state", "status_received")
#: Delivery states that end a delivery and earn a receipt.
OUTCOMES = frozenset({State.DELIVERED.value, State.FAILED.value})
#: The state of a status receipt whose organ has no delivery of the document.
RECORDED = "recorded"
#: Events read per page while issuing.
PAGE = 500
#: Examined events without receipts after which the cursor is saved anyway.
CURSOR_SLACK = 5000
RETRY_DELAY = 1.0
STOP_TIMEOUT = 30.0


def worthy(ev: Event) -> bool:
    """Does this event earn a receipt from the issuer?"""
    return (ev.kind == "status_received"
            or (ev.kind == "state" and ev.state in OUTCOMES)) and ev.message_id is not None


class ReceiptIssuer:
    """Issues receipts for the event log, from a saved cursor, in batches."""

    def __init__(self, hub: HubContext, *, page: int = PAGE) -> None:
        self.hub = hub
        self.page = page
        self.cursor = 0       #: last event id examined (in memory)
        self.saved = 0        #: last cursor committed to ``meta``
        self.issued = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        row = await self.hub.spool._one("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,))
        self.cursor = self.saved = int(row["value"]) if row is not None else 0
        self.hub.spool.add_listener(self._on_commit)
        self._wake.set()  # catch up at once
        self._task = asyncio.create_task(self._run(), name="receipt-issuer")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        task, self._task = self._task, None
        try:
            await asyncio.wait_for(task, STOP_TIMEOUT)  # cancels it on timeout
        except TimeoutError:
            log.error("receipt issuer did not stop in %.0fs; the next start catches up",
                      STOP_TIMEOUT)

    def _on_commit(self, events: list[Event]) -> None:
        # Called by the spool after each durable commit; only wakes the task.
        if not self._stopping and any(worthy(e) for e in events):
            self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.catch_up()
                if self._stopping:
                    await self._save_cursor()
                    return
            except Exception:
                log.exception("receipt pass failed after event %d; retrying", self.cursor)
                if self._stopping:
                    return
                await asyncio.sleep(RETRY_DELAY)
                continue
            await self._wake.wait()

    async def catch_up(self) -> int:
        """Issue receipts for every event committed after the cursor; return how many."""
        spool, issued = self.hub.spool, 0
        while True:
            head = await spool._one("SELECT COALESCE(MAX(id), 0) AS id FROM events")
            if head is None or head["id"] <= self.cursor:
                return issued
            events = await spool.events(self.cursor, self.page, kinds=KINDS)
            full = len(events) == self.page
            # A short page holds every match up to its own snapshot, which
            # includes everything up to ``head`` (read first): nothing skipped.
            upto = events[-1].id if full else max(head["id"], events[-1].id if events else 0)
            batch = [e for e in events if worthy(e)]
            if batch or upto - self.saved >= CURSOR_SLACK:
                rows = await self._sign(batch)
                await spool.write(functools.partial(store_receipts, rows=rows, cursor=upto))
                self.saved = upto
                issued += len(rows)
                self.issued += len(rows)
            self.cursor = upto
            if not full:
                return issued

    async def _save_cursor(self) -> None:
        if self.cursor > self.saved:
            upto = self.cursor
            await self.hub.spool.write(functools.partial(store_receipts, rows=[], cursor=upto))
            self.saved = upto

    async def _sign(self, events: list[Event]) -> list[tuple[Any, ...]]:
        """(row values, …) for ``events``: fields from the envelope rows, signed."""
        if not events:
            return []
        pairs = await self._fields(events)
        fields = [f for _, f in pairs]
        xmls = await self.hub.cpu.build_receipts(fields)
        return [(f.receipt_id, ev.id, f.message_id, f.event, f.sender, f.recipient, f.state,
                 f.business_status, ev.at, xml) for (ev, f), xml in zip(pairs, xmls)]

    async def _fields(self, events: list[Event]) -> list[tuple[Event, ReceiptFields]]:
        spool = self.hub.spool
        ids = sorted({e.message_id for e in events if e.message_id})
        marks = ",".join("?" * len(ids))
        envs = {r["id"]: r for r in await spool._all(
            f"SELECT id, sender, dedup_key, document_id, sha256, status_code, "
            f"json_extract(signature, '$.result') AS sig FROM envelopes WHERE id IN ({marks})", ids)}
        statuses = [e for e in events if e.kind == "status_received"]
        state_of = await self._states_before(statuses) if statuses else {}
        out = []
        for ev in events:
            env = envs.get(ev.message_id)
            if env is None:
                log.error("%s event %d has no envelope: no receipt", ev.message_id, ev.id)
                continue
            if ev.kind == "state":
                event, state, business = str(ev.state), str(ev.state), env["status_code"]
            else:
                event, state = "status", state_of[ev.id]
                business = ev.detail.get("status_code") or None
            out.append((ev, ReceiptFields(
                receipt_id=f"{ev.message_id}.e{ev.id}", message_id=str(ev.message_id),
                document_sha256=env["sha256"], document_id=env["document_id"] or env["dedup_key"],
                sender=env["sender"], event=event, state=state,
                time=datetime.fromtimestamp(ev.at, timezone.utc),
                sender_signature=env["sig"] or "recorded", hub_id=self.hub.hub_id,
                recipient=ev.organ, business_status=business)))
        return out

    async def _states_before(self, statuses: list[Event]) -> dict[int, str]:
        """For each status event: its organ's delivery state as of that event.

        Read from the event log (not the deliveries table), so a replay after
        a crash signs exactly what the first pass would have."""
        spool = self.hub.spool
        ids = sorted({e.message_id for e in statuses if e.message_id})
        marks = ",".join("?" * len(ids))
        history: dict[tuple[str, str], tuple[list[int], list[str]]] = defaultdict(lambda: ([], []))
        for r in await spool._all(
                f"SELECT id, message_id, organ, state FROM events WHERE message_id IN ({marks}) "
                f"AND kind = 'state' AND id < ? ORDER BY id", (*ids, max(e.id for e in statuses))):
            seq, states = history[(r["message_id"], r["organ"])]
            seq.append(r["id"])
            states.append(r["state"])
        has_delivery = {(r["envelope_id"], r["recipient"]) for r in await spool._all(
            f"SELECT envelope_id, recipient FROM deliveries WHERE envelope_id IN ({marks})", ids)}
        out = {}
        for ev in statuses:
            key = (str(ev.message_id), str(ev.organ))
            seq, states = history.get(key, ([], []))
            i = bisect.bisect_left(seq, ev.id)
            if i:
                out[ev.id] = states[i - 1]
            else:
                out[ev.id] = State.QUEUED.value if key in has_delivery else RECORDED
        return out


def store_receipts(tx: Tx, rows: Sequence[tuple[Any, ...]], cursor: int) -> None:
    """One spool write: the receipts and the cursor move together (or not at all)."""
    tx.conn.executemany(
        "INSERT OR IGNORE INTO receipts (id, event_id, message_id, event, sender, recipient, "
        "state, business_status, at, xml) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
    tx.conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
        "SET value = excluded.value WHERE CAST(meta.value AS INTEGER) < CAST(excluded.value AS INTEGER)",
        (CURSOR_KEY, str(cursor)))


# -- HTTP ----------------------------------------------------------------------------

ISSUER = web.AppKey("receipt_issuer", ReceiptIssuer)
COLUMNS = ("seq", "id", "message_id", "event", "sender", "recipient", "state",
           "business_status", "time", "document_sha256", "sender_signature", "url")
_STATES = frozenset(s.value for s in State) | {RECORDED}
_SELECT = ("SELECT r.rowid AS seq, r.id, r.message_id, r.event, r.sender, r.recipient, r.state, "
           "r.business_status, r.at, e.sha256, json_extract(e.signature, '$.result') AS sig "
           "FROM receipts r LEFT JOIN envelopes e ON e.id = r.message_id")
#: An agency's receipts: documents it sent or received (SQL, not a filter afterwards).
_MINE = ("(r.sender = ? OR r.recipient = ? OR r.message_id IN "
         "(SELECT envelope_id FROM deliveries WHERE recipient = ?))")


def _bad(name: str, message: str, **details: Any) -> ValidationError:
    return ValidationError(message, code="bad_parameter", details={"parameter": name, **details})


def time_param(request: web.Request, name: str) -> float | None:
    """ISO 8601 (naive = UTC) or epoch seconds → epoch seconds; absent → None."""
    value = request.query.get(name, "").strip()
    return parse_time(name, value) if value else None


def _choice(request: web.Request, name: str, allowed: Any) -> str | None:
    value = request.query.get(name, "").strip() or None
    if value is not None and value not in allowed:
        raise _bad(name, f"{name} must be one of {', '.join(sorted(allowed))}",
                   allowed=sorted(allowed))
    return value


def item(r: Any) -> dict[str, Any]:
    return {"seq": r["seq"], "id": r["id"], "message_id": r["message_id"], "event": r["event"],
            "sender": r["sender"], "recipient": r["recipient"], "state": r["state"],
            "business_status": r["business_status"], "time": iso(r["at"]),
            "document_sha256": r["sha256"], "sender_signature": r["sig"],
            "url": f"/v1/receipts/{r['id']}"}


async def list_receipts(request: web.Request) -> web.Response:
    hub = hub_of(request)
    ident = identity(request)
    q = request.query
    fmt = _choice(request, "format", {"json", "csv"}) or "json"
    where: list[str] = ["r.rowid > ?"]
    params: list[Any] = [int_param(request, "after", 0)]
    if ident.role == "agency":
        where.append(_MINE)
        params += [ident.organ] * 3
    document = (q.get("document") or q.get("message_id") or "").strip()
    if document:
        where.append("r.message_id = ?")
        params.append(document)
    organ = q.get("organ", "").strip()
    if organ:
        where.append("(r.sender = ? OR r.recipient = ?)")
        params += [organ, organ]
    for name, allowed in (("event", set(EVENTS)), ("state", _STATES)):
        value = _choice(request, name, allowed)
        if value:
            where.append(f"r.{name} = ?")
            params.append(value)
    for name, op in (("since", ">="), ("until", "<")):
        when = time_param(request, name)
        if when is not None:
            where.append(f"r.at {op} ?")
            params.append(when)
    limit = int_param(request, "limit", 100, 1, 1000)
    rows = await hub.spool._all(f"{_SELECT} WHERE {' AND '.join(where)} ORDER BY r.rowid LIMIT ?",
                                (*params, limit))
    items = [item(r) for r in rows]
    fits = fit_page(items, hub.settings.max_listing_bytes)
    full = len(rows) == limit or fits < len(rows)
    rows, items = rows[:fits], items[:fits]
    nxt = str(request.rel_url.update_query({"after": rows[-1]["seq"]})) if full else None
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(items)
        headers = {"Content-Disposition": 'inline; filename="receipts.csv"'}
        if nxt:
            headers["Link"] = f'<{nxt}>; rel="next"'
        return web.Response(text=buf.getvalue(), content_type="text/csv", charset="utf-8",
                            headers=headers)
    body: dict[str, Any] = {"items": items}
    if nxt:
        body["next"] = nxt
    return json_response(body)


async def get_receipt(request: web.Request) -> web.Response:
    hub = hub_of(request)
    ident = identity(request)
    receipt_id = request.match_info["id"]
    row = await hub.spool._one("SELECT id, message_id, sender, recipient, xml FROM receipts "
                               "WHERE id = ?", (receipt_id,))
    if row is None:
        raise NotFoundError(f"no receipt {receipt_id}")
    if not ident.may_see(row["sender"], row["recipient"]) and await hub.spool._one(
            "SELECT 1 FROM deliveries WHERE envelope_id = ? AND recipient = ?",
            (row["message_id"], ident.organ)) is None:
        raise ForbiddenError(f"receipt {receipt_id} is about a document that is not yours")
    return web.Response(body=bytes(row["xml"]), content_type="application/xml",
                        headers={"Content-Disposition": f'inline; filename="{receipt_id}.xml"'})


async def hub_certificate(request: web.Request) -> web.Response:
    """The hub's certificate (public): what receipts are verified with, offline."""
    return web.Response(body=hub_of(request).keys.cert_pem, content_type="application/x-pem-file")


def setup_routes(app: web.Application) -> None:
    async def issuer_ctx(app: web.Application) -> AsyncIterator[None]:
        # Appended after create_app's own context: the hub is open here, and
        # the issuer stops (its cursor saved) before the spool closes.
        issuer = app[ISSUER] = ReceiptIssuer(app[HUB])
        await issuer.start()
        try:
            yield
        finally:
            await issuer.stop()

    app.cleanup_ctx.append(issuer_ctx)
    app.router.add_get("/v1/receipts", list_receipts)
    app.router.add_get("/v1/receipts/{id}", get_receipt)
    app.router.add_get("/v1/hub/certificate", hub_certificate)
