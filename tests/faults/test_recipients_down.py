"""Fault (b): recipients down for a while, then back.

The push destination (an ``edxml_http`` route to ``traffic.Peer`` on
127.0.0.1) first refuses connections (its socket is closed), then answers
503 for a while, then accepts; a mailbox recipient does not fetch at all
meanwhile.  Documents keep coming the whole time.  Once both are back,
everything arrives, and nothing twice: without a crash every message id
reaches the peer exactly once, and each mailbox item is fetched once.
"""
from __future__ import annotations

import asyncio
import collections

import aiohttp
import pytest
from faults.twoway import PEER_ORGAN, hub_config
from serve import Served
from support import AN_BINH, MAU_A, VP_UBND, eventually
from traffic import Client, Doc, check_event_chain, open_ro

from hub.edxml import samples

pytestmark = pytest.mark.slow

PER_PHASE = 20        #: documents sent in each phase (down, 503, back)


async def test_recipients_down_then_back_get_everything_once(tmp_path, peer):
    server = Served(tmp_path / "var", log=tmp_path / "hub.log", config=hub_config(peer))
    docs: list[Doc] = []
    try:
        await server.start_async()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            client = Client(http, server.url, server.data)

            async def send(n: int) -> None:
                for _ in range(n):
                    sender = (MAU_A, AN_BINH)[len(docs) % 2]
                    doc = Doc(len(docs) + 1, sender, (VP_UBND, PEER_ORGAN),
                              samples.edoc(sender, [VP_UBND, PEER_ORGAN], len(docs) + 1,
                                           size=4000 if len(docs) % 7 else 90 * 1024))
                    docs.append(doc)
                    await client.submit(doc)
                    assert doc.status == 202, (doc.status, doc.body)

            async def push_states() -> collections.Counter[str]:
                out: collections.Counter[str] = collections.Counter()
                for d in docs:
                    view = await client.get_json(d.sender, f"/v1/envelopes/{d.id}")
                    out.update(x["state"] for x in view["deliveries"] if x["route"] != "mailbox")
                return out

            # Given: the peer is down (connection refused) while documents come in
            await peer.set_mode("down")
            await send(PER_PHASE)

            async def deferred_down() -> bool:
                return (await push_states())["deferred"] == len(docs)
            await eventually(deferred_down, timeout=20, what="every push deferred, peer down")
            view = await client.get_json(MAU_A, f"/v1/envelopes/{docs[0].id}")
            push = next(x for x in view["deliveries"] if x["route"] != "mailbox")
            assert "ClientConnector" in (push["last_error"] or ""), push

            # When: it comes up answering 503 for a while, and more documents come
            await peer.set_mode("503")
            await send(PER_PHASE)
            await eventually(lambda: peer.refused >= 2 * PER_PHASE, timeout=20,
                             what="the peer answered 503 to every waiting push")
            assert not peer.seen

            # ... and then accepts again, while the last documents come
            await peer.set_mode("ok")
            await send(PER_PHASE)

            # Then: every document reaches the peer, each message id exactly once
            ids = {d.id for d in docs}
            await eventually(lambda: set(peer.seen) == ids, timeout=60,
                             what="every document at the peer")
            assert all(n == 1 for n in peer.seen.values()), \
                [m for m, n in peer.seen.items() if n > 1]

            async def all_delivered() -> bool:
                return (await push_states()) == {"delivered": len(docs)}
            await eventually(all_delivered, timeout=10, what="every push delivery delivered")

            # ... and the office, back at its desk, finds each document once
            inbox = await client.inbox_ids(VP_UBND)
            assert sorted(inbox) == sorted(ids) and len(inbox) == len(set(inbox))
            await asyncio.gather(*(client.fetch_and_ack(VP_UBND, d) for d in docs))
            assert await client.inbox_ids(VP_UBND) == []
        assert server.stop() == 0, server.log_tail()
    finally:
        server.close()
    conn = open_ro(server.data)
    try:
        delivered = collections.Counter(r[0] for r in conn.execute(
            "SELECT delivery_id FROM events WHERE kind = 'state' AND state = 'delivered'"))
        assert len(delivered) == 2 * len(docs) and max(delivered.values()) == 1
        check_event_chain(conn)
    finally:
        conn.close()
