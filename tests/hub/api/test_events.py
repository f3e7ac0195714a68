"""GET /v1/events: the spool's changes as server-sent events, over the real HTTP server.

The stream is read the way a browser's EventSource reads it (lines, fields,
a blank line dispatches); the parser here is deliberately independent of
``hub.cli_tail``'s so that the two check each other.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest
from support import AN_BINH, HUB_ID, MAU_A, VP_UBND, submit

from hub.api import events

from hub.edxml import samples

XML = {"Content-Type": "application/xml"}


class SSE:
    """Reads dispatched events (as dicts) and comments from a streaming response."""

    def __init__(self, resp) -> None:
        self.resp = resp
        self.comments: list[str] = []
        self.fields: dict[str, str] = {}

    async def next(self, timeout: float = 5.0) -> dict | None:
        """The next event, or None when the server ends the stream."""
        while True:
            line = await asyncio.wait_for(self.resp.content.readline(), timeout)
            if not line:
                return None
            text = line.decode("utf-8").rstrip("\r\n")
            if text.startswith(":"):
                self.comments.append(text[1:].strip())
            elif text:
                name, _, value = text.partition(":")
                self.fields[name] = value.removeprefix(" ")
            elif "data" in self.fields:
                fields, self.fields = self.fields, {}
                data = json.loads(fields["data"])
                assert fields["id"] == str(data["id"])
                assert fields["event"] == data["kind"]
                return data
            else:
                self.fields = {}

    async def take(self, n: int, timeout: float = 5.0) -> list[dict]:
        out = []
        for _ in range(n):
            ev = await self.next(timeout)
            assert ev is not None, f"stream ended after {len(out)} of {n} events"
            out.append(ev)
        return out

    async def rest(self, timeout: float = 5.0) -> list[dict]:
        out = []
        while (ev := await self.next(timeout)) is not None:
            out.append(ev)
        return out




async def once(client, headers, query: str = "") -> list[dict]:
    resp = await client.get(f"/v1/events?once=1{query}", headers=headers)
    assert resp.status == 200, await resp.text()
    return await SSE(resp).rest()


async def settle(client, headers, count: int, timeout: float = 5.0) -> None:
    """Wait until the log holds ``count`` events (a refusal commits after its 4xx).

    Asked of the stream itself: ``spool.last_event_id`` moves before COMMIT."""
    deadline = time.monotonic() + timeout
    while len(got := await once(client, headers)) < count:
        assert time.monotonic() < deadline, f"event log stuck at {len(got)}"
        await asyncio.sleep(0.01)


@pytest.fixture
def operator(auth):
    return auth(HUB_ID, "operator")


async def test_once_returns_the_accepted_events(client, auth, operator):
    sent = [await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], n)) for n in (1, 2, 3)]
    resp = await client.get("/v1/events?once=1", headers=operator)
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    got = await SSE(resp).rest()
    assert [e["id"] for e in got] == [1, 2, 3]
    assert [e["message_id"] for e in got] == [s["id"] for s in sent]
    first = got[0]
    assert first["kind"] == "accepted" and first["state"] == "queued" and first["organ"] == MAU_A
    assert first["detail"]["recipients"] == [{"organ": VP_UBND, "route": "mailbox"}]
    assert first["detail"]["kind_of"] == "edoc"
    assert first["at_iso"].endswith("Z") and isinstance(first["at"], float)
    # the chain travels with the events, so an auditor can check it from the stream
    assert got[1]["prev_hash"] == first["hash"]
    # follow=0 is the same as once=1
    assert [e["id"] for e in await once(client, operator, "&follow=0")] == [1, 2, 3]


async def test_filters(client, auth, operator):
    # Given: two documents, an acknowledgement and a refusal
    a = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 1))
    b = await submit(client, auth, AN_BINH, samples.edoc(AN_BINH, [VP_UBND], 2))
    ack = await client.post(f"/v1/inbox/{a['id']}/ack", headers=auth(VP_UBND))
    assert ack.status == 200
    await submit(client, auth, AN_BINH, samples.edoc(MAU_A, [VP_UBND], 3), status=403)
    await settle(client, operator, 4)

    async def ids(query: str) -> list[int]:
        return [e["id"] for e in await once(client, operator, query)]

    # Then: each filter narrows the stream
    assert await ids("") == [1, 2, 3, 4]
    assert await ids(f"&organ={MAU_A}") == [1]
    assert await ids(f"&organ={VP_UBND}") == [3]  # the delivery's recipient
    assert await ids("&kind=state") == [3]
    assert await ids("&state=delivered") == [3]
    assert await ids("&state=queued") == [1, 2]
    assert await ids("&kind=accepted,refused") == [1, 2, 4]
    assert await ids(f"&message_id={a['id']}") == [1, 3]
    assert await ids(f"&id={b['id'].lower()}") == [2]
    assert await ids(f"&kind=refused&organ={AN_BINH}") == [4]
    assert await ids("&after=2") == [3, 4]
    refused = (await once(client, operator, "&kind=refused"))[0]
    assert refused["detail"]["code"] == "sender_mismatch"


async def test_last_event_id_resumes_without_gap_or_repeat(client, auth, hub, operator):
    async def burst(numbers) -> None:
        # concurrent submissions, so the stream sees group commits of several events
        await asyncio.gather(*(submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], n))
                               for n in numbers))

    # Given: a live stream reading while documents arrive
    resp = await client.get("/v1/events", headers=operator)
    assert resp.status == 200
    stream = SSE(resp)
    producer = asyncio.create_task(burst(range(1, 21)))
    seen = await stream.take(7)
    # When: the client drops mid-burst, more arrive while it is away, and it
    # reconnects with the last id it saw while yet more arrive
    resp.close()
    await producer
    await burst(range(21, 31))
    resp = await client.get("/v1/events", headers={**operator, "Last-Event-ID": str(seen[-1]["id"])})
    stream = SSE(resp)
    producer = asyncio.create_task(burst(range(31, 41)))
    seen += await stream.take(10)
    await producer
    total = hub.spool.last_event_id
    assert total == 40
    seen += await stream.take(total - len(seen))
    resp.close()

    # Then: every event exactly once, in order
    assert [e["id"] for e in seen] == list(range(1, total + 1))
    assert len({e["message_id"] for e in seen}) == total


async def test_header_wins_over_after_query(client, auth, operator):
    for n in (1, 2, 3):
        await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], n))
    # a browser reconnects to the URL it started with; only the header has moved on
    resp = await client.get("/v1/events?once=1&after=0", headers={**operator, "Last-Event-ID": "2"})
    assert [e["id"] for e in await SSE(resp).rest()] == [3]


async def test_live_stream_sends_new_events_and_keepalives(client, auth, operator, monkeypatch):
    monkeypatch.setattr(events, "HEARTBEAT", 0.2)
    resp = await client.get("/v1/events", headers=operator)
    stream = SSE(resp)
    await asyncio.sleep(0.5)  # idle: keepalive comments, no events
    sent = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 1))
    ev = await stream.next(timeout=2.0)
    assert ev is not None and ev["message_id"] == sent["id"]
    assert "keepalive" in stream.comments
    resp.close()


async def test_client_leaving_is_not_an_error(client, auth, hub, operator, caplog, monkeypatch):
    monkeypatch.setattr(events, "HEARTBEAT", 0.05)
    caplog.set_level(logging.DEBUG)
    resp = await client.get("/v1/events", headers=operator)
    assert (await resp.content.readline()).startswith(b"retry:")  # the stream is open
    resp.close()
    # the server notices at its next write (an event or a keepalive)
    await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 1))
    await asyncio.sleep(0.3)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], [r.getMessage() for r in errors]


async def test_open_streams_do_not_hold_up_shutdown(aiohttp_client, settings):
    import aiohttp

    from hub.api.app import HUB, create_app
    client = await aiohttp_client(create_app(settings))
    token = client.app[HUB].tokens.issue(HUB_ID, "operator")
    async with aiohttp.ClientSession() as session:  # a follower that stays connected
        resp = await session.get(client.make_url("/v1/events"),
                                 headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 200
        started = time.monotonic()
        await client.server.close()
        assert time.monotonic() - started < 5
        # the follower sees a clean end of stream, not a hang
        assert await asyncio.wait_for(resp.content.read(), 5)
        resp.close()


@pytest.mark.parametrize("role,status", [("agency", 403), ("auditor", 200), ("admin", 200)])
async def test_roles(client, auth, role, status):
    organ = MAU_A if role == "agency" else HUB_ID
    resp = await client.get("/v1/events?once=1", headers=auth(organ, role))
    assert resp.status == status
    if status == 403:
        assert (await resp.json())["error"]["code"] == "forbidden"


async def test_no_token_is_401(client):
    resp = await client.get("/v1/events?once=1")
    assert resp.status == 401


@pytest.mark.parametrize("query,headers,parameter", [
    ("state=bogus", {}, "state"),
    ("kind=Accepted!", {}, "kind"),
    ("kind=", {}, "kind"),
    ("organ=not%20an%20organ", {}, "organ"),
    ("message_id=xyz", {}, "message_id"),
    ("message_id=01JAAAAAAAAAAAAAAAAAAAAAAA&id=01JBBBBBBBBBBBBBBBBBBBBBBB", {}, "message_id"),
    ("after=-1", {}, "after"),
    ("after=abc", {}, "after"),
    ("once=maybe", {}, "once"),
    ("", {"Last-Event-ID": "twelve"}, "Last-Event-ID"),
])
async def test_bad_filters_are_422(client, operator, query, headers, parameter):
    resp = await client.get(f"/v1/events?{query}", headers={**operator, **headers})
    assert resp.status == 422
    body = await resp.json()
    assert body["error"]["code"] == "bad_parameter"
    assert body["error"]["details"]["parameter"] == parameter
