"""The live tail of the spool: ``GET /v1/events`` as server-sent events.

Where it sits: beside the pipeline, reading only.  Every change the spool
commits (an accept, a refusal, a delivery's change of state, a business
status, an operator's action) is a row of the hash-chained event log; this
module streams those rows to operators and auditors (``lienthong tail``,
dashboards, an ``EventSource`` in a browser).

Strategy
    The database is the source of truth; notifications only wake the reader.
    A stream starts strictly after the caller's resume point (the
    ``Last-Event-ID`` header a reconnecting client sends, or ``?after=N``),
    reads ``spool.events`` in pages until it is level with the log, then
    waits in ``spool.wait_for_events`` and reads again.  Because every read
    starts after the last id sent (ids are dense and commit in order), a
    reconnect neither skips nor repeats an event, whatever happened while
    the client was away.  The wait is armed before the read, so a commit
    landing in between still wakes the stream at once.

Wire format (one SSE message per event)::

    id: 123
    event: state
    data: {"id": 123, "at": 1795000000.123, "at_iso": "2026-11-26T06:01:02.123Z", ...}

``data`` is ``Event.to_dict()`` (with the chain's ``prev_hash``/``hash``, so
an auditor can check the chain from the stream) plus ``at_iso``.  An idle
stream sends a ``: keepalive`` comment every ``HEARTBEAT`` seconds so that
proxies and clients can tell a quiet hub from a dead connection.

Query parameters: ``organ``, ``message_id`` (alias ``id``), ``state``,
``kind`` (comma list), ``after``, ``once=1`` / ``follow=0`` (send what exists,
then close).  A bad value is a 422 before the stream starts.

Diagnostics: a client going away is normal for a stream and is logged at
debug level only, on ``hub.events``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from hub.errors import ValidationError
from hub.api.base import HUB, hub_of, identity, iso
from spool.records import Event
from spool.states import State

log = logging.getLogger("hub.api.events")

#: Seconds of silence after which an idle stream sends a keepalive comment.
HEARTBEAT = 15.0
#: Events read from the spool per query while catching up.
PAGE = 500
#: What a browser's EventSource waits before reconnecting (milliseconds).
RETRY_MS = 2000

_ORGAN = re.compile(r"[0-9A-Za-z]+(?:\.[0-9A-Za-z]+){1,4}\Z", re.ASCII)
_EVENT_ID = re.compile(r"[0-9]{1,18}\Z", re.ASCII)
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}\Z", re.ASCII)
# The set of kinds grows with the hub (the queue manager adds its own), so a
# kind is checked for shape, not against a list that would go stale.
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}\Z", re.ASCII)
_STATES = frozenset(s.value for s in State)
_TRUE, _FALSE = frozenset({"1", "true", "yes", "on"}), frozenset({"0", "false", "no", "off"})


class Streams:
    """The open streams of one app: how far the log is committed, and their waits.

    ``committed`` (fed by a spool listener, so it only ever names committed
    events) lets a filtered stream move its read position past events that
    did not match; without it, a tail of a quiet organisation would re-read
    everything since that organisation's last event on every commit.

    aiohttp waits for running handlers before it closes the app; a stream
    that only ends when its client leaves would hold a restart for the whole
    shutdown timeout, hence ``shutdown`` (aiohttp's ``on_shutdown`` hook).
    """

    def __init__(self) -> None:
        self.closing = False
        self.committed = 0
        self.waits: set[asyncio.Future[bool]] = set()

    def on_commit(self, events: list[Event]) -> None:
        if events:
            self.committed = max(self.committed, events[-1].id)

    async def listen(self, app: web.Application) -> AsyncIterator[None]:
        # Appended after create_app's own context, so the spool is open here.
        app[HUB].spool.add_listener(self.on_commit)
        yield

    async def shutdown(self, app: web.Application) -> None:
        self.closing = True
        for wait in list(self.waits):
            wait.cancel()


STREAMS = web.AppKey("event_streams", Streams)


# -- parameters -------------------------------------------------------------------

def _bad(name: str, message: str) -> ValidationError:
    return ValidationError(message, code="bad_parameter", details={"parameter": name})


def _flag(request: web.Request, name: str) -> bool | None:
    value = request.query.get(name)
    if value is None:
        return None
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise _bad(name, f"{name} must be 1 or 0, not {value!r}")


def follow_param(request: web.Request) -> bool:
    """False when the caller asked for what exists only (``once=1`` or ``follow=0``)."""
    once, follow = _flag(request, "once"), _flag(request, "follow")
    return not once and follow is not False


def resume_point(request: web.Request) -> int:
    """The id to start after: ``Last-Event-ID`` wins over ``?after`` because a
    browser reconnects to the same URL and only the header has moved on."""
    name, raw = "Last-Event-ID", request.headers.get("Last-Event-ID", "")
    if not raw:
        name, raw = "after", request.query.get("after", "0")
    if not _EVENT_ID.match(raw.strip()):
        raise _bad(name, f"{name} must be an event id (a whole number ≥ 0), not {raw!r}")
    return int(raw)


def filters(request: web.Request) -> dict[str, Any]:
    """The keyword filters for ``spool.events``, each checked (422 when wrong)."""
    q = request.query
    out: dict[str, Any] = {}
    organ = q.get("organ")
    if organ is not None:
        if not _ORGAN.match(organ):
            raise _bad("organ", f"organ must be an OrganId such as 000.01.48.H63, not {organ!r}")
        out["organ"] = organ
    message_id = _message_id(request)
    if message_id is not None:
        out["message_id"] = message_id
    state = q.get("state")
    if state is not None:
        if state not in _STATES:
            raise _bad("state", f"state must be one of {', '.join(sorted(_STATES))}, not {state!r}")
        out["state"] = state
    if "kind" in q:
        kinds = [k.strip() for k in q.get("kind", "").split(",") if k.strip()]
        bad = [k for k in kinds if not _KIND.match(k)]
        if bad or not kinds:
            raise _bad("kind", f"kind must be a comma list of event kinds (accepted, refused, "
                               f"state, status_received, …), not {q.get('kind')!r}")
        out["kinds"] = kinds
    return out


def _message_id(request: web.Request) -> str | None:
    given = {v.upper() for v in (request.query.get("message_id"), request.query.get("id"))
             if v is not None}
    if not given:
        return None
    if len(given) > 1:
        raise _bad("message_id", "message_id and id name different messages; give one")
    value = given.pop()
    if not _ULID.match(value):
        raise _bad("message_id", f"message_id must be a 26-character message id, not {value!r}")
    return value


# -- the wire format ------------------------------------------------------------

def event_data(ev: Event) -> dict[str, Any]:
    data = ev.to_dict()
    data["at_iso"] = iso(ev.at)
    return data


def sse_message(ev: Event) -> str:
    # json.dumps never emits a raw newline, so one data: line carries it all.
    data = json.dumps(event_data(ev), ensure_ascii=False, separators=(",", ":"))
    return f"id: {ev.id}\nevent: {ev.kind}\ndata: {data}\n\n"


# -- the handler -------------------------------------------------------------------

async def get_events(request: web.Request) -> web.StreamResponse:
    identity(request, "operator", "auditor")
    # Everything that can be refused is checked before the 200 goes out.
    where, after, follow = filters(request), resume_point(request), follow_param(request)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8",
                                       "Cache-Control": "no-cache",
                                       "X-Accel-Buffering": "no"})
    await resp.prepare(request)
    try:
        await resp.write(f"retry: {RETRY_MS}\n\n".encode())
        last = await _stream(request, resp, after, follow, where)
        await resp.write_eof()
    except ConnectionResetError:
        # The client went away: the normal end of a followed stream, not an error.
        log.debug("client left the stream")
        return resp
    log.debug("stream closed at event %d", last)
    return resp


async def _stream(request: web.Request, resp: web.StreamResponse, after: int, follow: bool,
                  where: dict[str, Any]) -> int:
    """Send every matching event after ``after``; with ``follow``, keep going."""
    spool = hub_of(request).spool
    streams = request.app[STREAMS]
    while True:
        # While the hub stops, a follower gets what exists and a clean end.
        wake = _arm(request, streams) if follow and not streams.closing else None
        try:
            after = await _catch_up(spool, resp, after, where, streams.committed,
                                    hub_of(request).settings.max_listing_bytes)
            if wake is None:
                return after
            await asyncio.wait([wake])
        finally:
            if wake is not None:
                wake.cancel()
                streams.waits.discard(wake)
        if streams.closing or wake.cancelled():
            return after
        if not wake.result():
            await resp.write(b": keepalive\n\n")


def _arm(request: web.Request, streams: Streams) -> asyncio.Future[bool]:
    """Start waiting for new events BEFORE reading, so that a commit landing
    between our read and our wait still wakes us (instead of the next
    heartbeat); starting above the log's current end keeps a busy writer from
    waking us for events we are about to read anyway."""
    spool = hub_of(request).spool
    wake = asyncio.ensure_future(spool.wait_for_events(spool.last_event_id, HEARTBEAT))
    streams.waits.add(wake)
    return wake


async def _catch_up(spool: Any, resp: web.StreamResponse, after: int, where: dict[str, Any],
                    committed: int, max_bytes: int) -> int:
    """Page through the log from ``after`` to its end; the position reached.

    Every event up to ``committed`` (read before the first query) was visible
    to these queries, so once they run dry the position may move up to it
    even when the last events sent are older: they did not match."""
    while True:
        page = await spool.events(after, PAGE, **where)
        batch: list[bytes] = []
        size = 0
        for ev in page:  # one write per max_listing_bytes, not per page of any size
            message = sse_message(ev).encode("utf-8")
            if batch and size + len(message) > max_bytes:
                await resp.write(b"".join(batch))
                batch, size = [], 0
            batch.append(message)
            size += len(message)
        if batch:
            await resp.write(b"".join(batch))
        if page:
            after = page[-1].id
        if len(page) < PAGE:
            return max(after, committed)


def setup_routes(app: web.Application) -> None:
    streams = Streams()
    app[STREAMS] = streams
    app.cleanup_ctx.append(streams.listen)
    app.on_shutdown.append(streams.shutdown)
    app.router.add_get("/v1/events", get_events)
