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

A receipt of a document that has links (a revocation, update or replacement,
or the document one of them acts on) states its standing and links as of its
event: the links made by earlier events only, so a replay signs the same.

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

The HTTP views of receipts are in ``hub.api.receipts``.

Diagnostics: ``hub.receipts`` logs a failed pass (retried after
``RETRY_DELAY``) and any event whose envelope is missing (never expected).
"""
from __future__ import annotations

import asyncio
import bisect
import logging
from collections import defaultdict
from datetime import datetime, timezone
from typing import Awaitable, Callable, Sequence

from hub.receipts.format import ReceiptFields, ReceiptLink
from spool.base import LinkRow, ReceiptValues, Spool
from spool.records import Event, standing
from spool.states import State

#: Signs a batch of receipts (``CpuPool.build_receipts``: in a worker when there is one).
Signer = Callable[[Sequence[ReceiptFields]], Awaitable[list[bytes]]]

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

    def __init__(self, spool: Spool, sign: Signer, hub_id: str, *, page: int = PAGE) -> None:
        self.spool = spool
        self.sign = sign
        self.hub_id = hub_id
        self.page = page
        self.cursor = 0       #: last event id examined (in memory)
        self.saved = 0        #: last cursor committed to ``meta``
        self.issued = 0
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        meta = await self.spool.get_meta(CURSOR_KEY)
        self.cursor = self.saved = int(meta.get(CURSOR_KEY, 0))
        self.spool.add_listener(self._on_commit)
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
        spool, issued = self.spool, 0
        while True:
            top = await spool.event_head()
            head = top[0] if top is not None else 0
            if head <= self.cursor:
                return issued
            events = await spool.events(self.cursor, self.page, kinds=KINDS)
            full = len(events) == self.page
            # A short page holds every match up to its own snapshot, which
            # includes everything up to ``head`` (read first): nothing skipped.
            upto = events[-1].id if full else max(head, events[-1].id if events else 0)
            batch = [e for e in events if worthy(e)]
            if batch or upto - self.saved >= CURSOR_SLACK:
                rows = await self._sign(batch)
                await spool.store_receipts(rows, CURSOR_KEY, upto)
                self.saved = upto
                issued += len(rows)
                self.issued += len(rows)
            self.cursor = upto
            if not full:
                return issued

    async def _save_cursor(self) -> None:
        if self.cursor > self.saved:
            upto = self.cursor
            await self.spool.store_receipts([], CURSOR_KEY, upto)
            self.saved = upto

    async def _sign(self, events: list[Event]) -> list[ReceiptValues]:
        """(row values, …) for ``events``: fields from the envelope rows, signed."""
        if not events:
            return []
        pairs = await self._fields(events)
        fields = [f for _, f in pairs]
        xmls = await self.sign(fields)
        return [(f.receipt_id, ev.id, f.message_id, f.event, f.sender, f.recipient, f.state,
                 f.business_status, ev.at, xml) for (ev, f), xml in zip(pairs, xmls)]

    async def _fields(self, events: list[Event]) -> list[tuple[Event, ReceiptFields]]:
        ids = sorted({e.message_id for e in events if e.message_id})
        envs = await self.spool.receipt_sources(ids)
        links = await self.spool.links_of(ids)
        statuses = [e for e in events if e.kind == "status_received"]
        state_of = await self._states_before(statuses) if statuses else {}
        out = []
        for ev in events:
            env = envs.get(ev.message_id or "")
            if env is None:
                log.error("%s event %d has no envelope: no receipt", ev.message_id, ev.id)
                continue
            if ev.kind == "state":
                event, state, business = str(ev.state), str(ev.state), env["status_code"]
            else:
                event, state = "status", state_of[ev.id]
                business = ev.detail.get("status_code") or None
            held = _links_before(links.get(str(ev.message_id), []), ev.id)
            out.append((ev, ReceiptFields(
                receipt_id=f"{ev.message_id}.e{ev.id}", message_id=str(ev.message_id),
                document_sha256=env["sha256"], document_id=env["document_id"] or env["dedup_key"],
                sender=env["sender"], event=event, state=state,
                time=datetime.fromtimestamp(ev.at, timezone.utc),
                sender_signature=env["sig"] or "recorded", hub_id=self.hub_id,
                recipient=ev.organ, business_status=business,
                standing=standing({link.type for link in held}) if held else None,
                links=held)))
        return out

    async def _states_before(self, statuses: list[Event]) -> dict[int, str]:
        """For each status event: its organ's delivery state as of that event.

        Read from the event log (not the deliveries table), so a replay after
        a crash signs exactly what the first pass would have."""
        ids = sorted({e.message_id for e in statuses if e.message_id})
        history: dict[tuple[str, str], tuple[list[int], list[str]]] = defaultdict(lambda: ([], []))
        for r in await self.spool.state_history(ids, max(e.id for e in statuses)):
            seq, states = history[(r["message_id"], r["organ"])]
            seq.append(r["id"])
            states.append(r["state"])
        has_delivery = await self.spool.delivery_pairs(ids)
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


def _links_before(links: list[LinkRow], event_id: int) -> tuple[ReceiptLink, ...]:
    """The links that held when event ``event_id`` happened."""
    return tuple(ReceiptLink(r["type"], r["id"], r["document_id"]) for r in links
                 if r["event_id"] < event_id)
