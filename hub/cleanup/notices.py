"""Failure notices: the hub tells a sender, with a status 02, that a delivery failed.

Where it sits: beside the queue manager, after the spool, like the receipt
issuer.  The queue manager marks a delivery ``failed`` with ``notify`` in the
event's detail (refused for good, or ``maximal_lifetime`` passed), and so
does an operator's drop (with ``notice``, the text for the sender); this issuer follows the event log from a
cursor in ``meta`` and hands each notice to cleanup as the hub's own
message.  So a crash between the ``failed`` commit and the notice loses
nothing: the next start replays the events after the cursor.

A notice is built only from the event (its time, recipient and reason) and
the original envelope, so a replay builds the same bytes, which cleanup takes
as the same message: at most one notice per failed delivery.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

from hub.auth import Identity
from hub.cleanup.accept import accept
from hub.context import HubContext
from hub.edxml import envelope as edxml
from hub.errors import HubError
from spool.records import Event
from spool.states import State

log = logging.getLogger("hub.cleanup.notices")

CURSOR_KEY = "notices_cursor"
PAGE = 500
RETRY_DELAY = 1.0


def worthy(ev: Event) -> bool:
    return ev.kind == "state" and ev.state == State.FAILED.value and bool(ev.detail.get("notify"))


class NoticeIssuer:
    def __init__(self, hub: HubContext) -> None:
        self.hub = hub
        self.cursor = 0
        self.issued = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        meta = await self.hub.spool.get_meta(CURSOR_KEY)
        self.cursor = int(meta.get(CURSOR_KEY, 0))
        self.hub.spool.add_listener(self._on_commit)
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="failure-notices")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def _on_commit(self, events: list[Event]) -> None:
        if any(worthy(e) for e in events):
            self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.catch_up()
            except Exception:
                log.exception("failure notices: pass failed after event %d; retrying", self.cursor)
                await asyncio.sleep(RETRY_DELAY)
                continue
            await self._wake.wait()

    async def catch_up(self) -> int:
        """Issue a notice for every failure after the cursor; return how many."""
        spool, issued = self.hub.spool, 0
        while True:
            top = await spool.event_head()
            head = top[0] if top else 0
            if head <= self.cursor:
                return issued
            events = await spool.events(self.cursor, PAGE, kinds=("state",), state="failed")
            full = len(events) == PAGE
            upto = events[-1].id if full else max(head, events[-1].id if events else 0)
            for ev in events:
                if worthy(ev):
                    issued += await self.notify(ev)
            await spool.update_meta({CURSOR_KEY: str(upto)})
            self.cursor = upto
            self.issued += issued
            if not full:
                return issued

    async def notify(self, ev: Event) -> int:
        hub = self.hub
        env = await hub.spool.envelope(str(ev.message_id))
        hub_organ = hub.directory.hub
        if (env is None or env["kind"] != "edoc" or env["sender"] == hub_organ.id
                or not env["document_id"]):
            return 0  # never a notice about a notice, nor to ourselves
        reason = str(ev.detail.get("notice") or ev.detail.get("reason") or "failed")
        description = (f"Hub {hub_organ.id} could not deliver the document to "
                       f"{ev.organ}: {reason}")[:1000]
        status = edxml.build_status(
            sender_id=hub_organ.id, sender_name=hub_organ.name,
            response_for=edxml.ResponseFor(env["sender"], None, env["document_id"], None),
            status_code="02", description=description,
            timestamp=datetime.fromtimestamp(ev.at, timezone.utc))
        try:
            await accept(hub, status, Identity(hub_organ.id, "admin"), origin="hub",
                         notice_for=ev.organ)
        except HubError as exc:
            log.error("%s failure notice to %s could not be queued: %s", ev.message_id,
                      env["sender"], exc.message)
            if exc.http_status >= 500:
                raise  # the spool is unwell: retry from the cursor
            return 0
        return 1
