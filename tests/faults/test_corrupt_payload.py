"""Fault (e): a payload file corrupted on disk is found by its digest when read.

A document over ``inline_payload_limit`` (64 KiB) lives in a file under
``DATA/payloads``, named by its SHA-256.  Here bytes of that file are flipped
behind the hub's back, as a failing disk would.  Reading it — a mailbox fetch
or a push delivery — must notice: the recipient gets a ``500`` with the code
``payload_corrupt`` (never the wrong bytes), the delivery moves to
``corrupt`` with the reason, and operators are told by an ERROR line, an
event ``payload_corrupt`` and the ``lienthong_payloads_corrupt_total``
metric.  Other documents flow on, and the audit chain still verifies.
"""
from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
from pathlib import Path

import pytest
from support import MAU_A, VP_UBND, XML, eventually, submit
from traffic import Peer

from adapters.edxml_http import EdxmlHttpAdapter
from adapters.mailbox import MailboxAdapter
from hub.api.app import HUB, create_app
from hub.edxml import samples

PEER_ORGAN = "000.01.44.H63"   # Lục Yên's code space: route peer.lucyen (a [[rule]])
QUICK = {"minimal_backoff": "100ms", "maximal_backoff": "200ms", "queue_run_delay": "100ms",
         "rate_limit_per_address": 0, "rate_limit_per_identity": 0}


def payload_file(data: Path, sha256: str) -> Path:
    conn = sqlite3.connect(f"file:{data / 'spool.db'}?mode=ro", uri=True)
    try:
        (rel,) = conn.execute("SELECT path FROM payloads WHERE sha256 = ?", (sha256,)).fetchone()
    finally:
        conn.close()
    assert rel, "the document is inline: the test needs a payload file"
    return data / "payloads" / rel


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def flip(path: Path, at: int) -> None:
    """Flip one byte in place, keeping the size (so no length check can see it)."""
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x55]))


@pytest.fixture
async def scene(aiohttp_client, make_settings, peer: Peer):
    adapters = {"mailbox": MailboxAdapter("mailbox"),
                "peer.lucyen": EdxmlHttpAdapter("peer.lucyen", {"url": peer.url, "timeout": "2s"})}
    client = await aiohttp_client(create_app(make_settings(**QUICK), adapters=adapters))
    return client, client.app[HUB]


async def test_a_corrupt_payload_file_is_never_served_nor_delivered(scene, peer, caplog):
    client, hub = scene

    def auth(organ: str, role: str = "agency") -> dict[str, str]:
        return {"Authorization": f"Bearer {hub.tokens.issue(organ, role)}"}

    async def state(message_id: str, organ: str) -> str:
        env = await (await client.get(f"/v1/envelopes/{message_id}", headers=auth(MAU_A))).json()
        return next(d["state"] for d in env["deliveries"] if d["recipient"] == organ)

    async def delivery(message_id: str, organ: str) -> dict:
        env = await (await client.get(f"/v1/envelopes/{message_id}", headers=auth(MAU_A))).json()
        return next(d for d in env["deliveries"] if d["recipient"] == organ)

    # Given: the push destination is down for maintenance (the delivery waits, deferred),
    # and Mậu A sends three documents to the office and the peer district
    await peer.set_mode("503")
    spoiled_raw = samples.edoc(MAU_A, [VP_UBND, PEER_ORGAN], 1, size=100 * 1024)
    sound_raw = samples.edoc(MAU_A, [VP_UBND, PEER_ORGAN], 2, size=100 * 1024)
    small_raw = samples.edoc(MAU_A, [VP_UBND, PEER_ORGAN], 3, size=4096)
    spoiled = await submit(client, auth, MAU_A, spoiled_raw)
    sound = await submit(client, auth, MAU_A, sound_raw)
    small = await submit(client, auth, MAU_A, small_raw)
    await eventually(lambda: peer.refused >= 3, what="three attempts refused by the peer")

    # When: one byte in the middle of the first one's payload file flips on disk
    path = payload_file(hub.settings.data_path, sha(spoiled_raw))
    flip(path, path.stat().st_size // 2)

    # Then: the office's fetch answers 500 payload_corrupt, as JSON, never the bytes
    caplog.set_level(logging.ERROR, logger="hub.spool")
    resp = await client.get(f"/v1/inbox/{spoiled['id']}", headers=auth(VP_UBND))
    body = await resp.read()
    assert resp.status == 500, body[:300]
    assert resp.content_type == "application/json" and b"<edXML" not in body
    error = (await resp.json())["error"]
    assert error["code"] == "payload_corrupt", error
    assert error["details"]["sha256"] == sha(spoiled_raw)
    # ... the mailbox delivery is quarantined with the reason, and leaves the inbox
    assert await state(spoiled["id"], VP_UBND) == "corrupt"
    assert "payload corrupt on disk" in (await delivery(spoiled["id"], VP_UBND))["last_error"]
    listing = await (await client.get("/v1/inbox", headers=auth(VP_UBND))).json()
    assert {i["id"] for i in listing["items"]} == {sound["id"], small["id"]}
    # ... and an operator reads it in the log, the events and the metrics
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(spoiled["id"] in line and "corrupt" in line for line in lines), lines

    # When: the peer is back, the deliveries are attempted again
    await peer.set_mode("ok")
    await eventually(lambda: {sound["id"], small["id"]} <= set(peer.seen),
                     what="the sound documents reach the peer")

    async def quarantined() -> bool:
        return await state(spoiled["id"], PEER_ORGAN) == "corrupt"
    await eventually(quarantined, what="the push delivery of the corrupt payload quarantined")

    # Then: the peer never received the corrupt document, the sound ones as sent
    assert spoiled["id"] not in peer.seen
    assert f"{MAU_A},2026/11/20,2/UBND".encode() in peer.bodies[sound["id"]]
    # ... the other deliveries went on normally
    for doc, raw in ((sound, sound_raw), (small, small_raw)):
        resp = await client.get(f"/v1/inbox/{doc['id']}", headers=auth(VP_UBND))
        assert resp.status == 200 and await resp.read() == raw
        assert await state(doc["id"], PEER_ORGAN) == "delivered"

    # ... one event payload_corrupt per quarantined delivery, where it was found
    events = await hub.spool.events(0, 1000, kinds=("payload_corrupt",))
    assert sorted((e.organ, e.detail["where"]) for e in events) == [
        (PEER_ORGAN, "delivery"), (VP_UBND, "inbox")]
    assert all(e.message_id == spoiled["id"] and e.detail["sha256"] == sha(spoiled_raw)
               for e in events)
    # ... the metric counts them
    text = await (await client.get("/metrics")).text()
    assert re.search(r'^lienthong_payloads_corrupt_total\{where="delivery"\} 1$', text, re.M), text
    assert re.search(r'^lienthong_payloads_corrupt_total\{where="inbox"\} 1$', text, re.M)
    # ... a second fetch is refused the same way, and quarantines nothing twice
    resp = await client.get(f"/v1/inbox/{spoiled['id']}", headers=auth(VP_UBND))
    assert resp.status == 500 and (await resp.json())["error"]["code"] == "payload_corrupt"
    assert len(await hub.spool.events(0, 1000, kinds=("payload_corrupt",))) == 2
    # ... and the audit chain verifies
    report = await (await client.get("/v1/audit/verify", headers=auth(MAU_A, "auditor"))).json()
    assert report["ok"], report


@pytest.mark.slow
async def test_a_large_corrupt_file_is_refused_before_the_first_byte(scene, peer):
    """Over 8 MiB a fetch streams from the file; it is checked (read through once in
    1 MiB pieces) before the answer starts, so the corruption near the end gives a
    clean 500, not a 200 cut off half-way."""
    client, hub = scene

    def auth(organ: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {hub.tokens.issue(organ)}"}

    raw = samples.edoc(MAU_A, [VP_UBND], 4, size=9 * 1024 * 1024)
    resp = await client.post("/v1/envelopes", data=raw, headers={**auth(MAU_A), **XML})
    doc = await resp.json()
    assert resp.status == 202, doc
    recipient = VP_UBND
    path = payload_file(hub.settings.data_path, sha(raw))
    flip(path, path.stat().st_size - 100)

    resp = await client.get(f"/v1/inbox/{doc['id']}", headers=auth(recipient))
    assert resp.status == 500
    assert (await resp.json())["error"]["code"] == "payload_corrupt"
    assert "Content-Length" in resp.headers and int(resp.headers["Content-Length"]) < 4096
