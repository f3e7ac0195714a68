"""Signed receipts over the real HTTP server: issued for every step, verifiable
offline with the hub's certificate, filtered, paged, exported, kept to their
owners, and never missing after a crash."""
from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import sqlite3
import time

import pytest
from cryptography import x509
from support import AN_BINH, HUB_ID, MAU_A, SO_NOIVU, VP_UBND, submit

from hub.cleanup import accept as cleanup

from hub.edxml import samples
from hub.api.app import HUB, create_app
from hub.auth import Identity
from hub.node import open_hub
from hub.errors import ValidationError
from hub.crypto.keys import init_dev_keys, load_hub_keys
from hub.receipts.issuer import CURSOR_KEY
from hub.receipts.format import verify_receipt
from hub.crypto.signing import sign_envelope

XML = {"Content-Type": "application/xml"}




async def listing(client, headers, status=200, **query):
    resp = await client.get("/v1/receipts", params={k: str(v) for k, v in query.items()},
                            headers=headers)
    body = await resp.json()
    assert resp.status == status, body
    return body


async def wait_receipts(client, headers, n, timeout=10.0, **query):
    """Receipts are issued just after the commit: poll until ``n`` are there."""
    deadline = time.monotonic() + timeout
    while True:
        items = (await listing(client, headers, limit=1000, **query))["items"]
        if len(items) >= n or time.monotonic() > deadline:
            assert len(items) == n, items
            return items
        await asyncio.sleep(0.02)


async def hub_cert(client) -> x509.Certificate:
    resp = await client.get("/v1/hub/certificate")  # public: no token
    assert resp.status == 200
    assert resp.content_type == "application/x-pem-file"
    return x509.load_pem_x509_certificate(await resp.read())


async def receipt_xml(client, headers, receipt_id, status=200) -> bytes:
    resp = await client.get(f"/v1/receipts/{receipt_id}", headers=headers)
    assert resp.status == status, await resp.text()
    if status == 200:
        assert resp.content_type == "application/xml"
    return await resp.read()


async def delivery_to(client, auth, message_id, recipient) -> int:
    shown = await (await client.get(f"/v1/queue/{message_id}",
                                    headers=auth(HUB_ID, "operator"))).json()
    return next(d["delivery_id"] for d in shown["deliveries"] if d["recipient"] == recipient)


@pytest.fixture
def signed_by_mau_a(dev_keys):
    keys = load_hub_keys(dev_keys / "orgs" / f"{MAU_A}.key", dev_keys / "orgs" / f"{MAU_A}.pem")
    return lambda raw: sign_envelope(raw, keys.key, keys.cert)


async def life_of_a_document(client, auth, signed_by_mau_a, n=21):
    """accepted → status 03 → delivered (inbox ack) → failed (operator drop) → status 02."""
    raw = signed_by_mau_a(samples.edoc(MAU_A, [VP_UBND, SO_NOIVU], n))
    sent = await submit(client, auth, MAU_A, raw)
    await submit(client, auth, VP_UBND, samples.status(VP_UBND, MAU_A, sent["document_id"], "03"))
    ack = await client.post(f"/v1/inbox/{sent['id']}/ack", headers=auth(VP_UBND))
    assert (await ack.json())["state"] == "delivered"
    dept = await delivery_to(client, auth, sent["id"], SO_NOIVU)
    resp = await client.post(f"/v1/queue/{dept}/drop", json={"reason": "wrong department"},
                             headers=auth(HUB_ID, "operator"))
    assert resp.status == 200, await resp.text()
    return raw, sent


async def test_every_step_of_a_document_has_a_verifiable_receipt(client, auth, signed_by_mau_a):
    # Given: a signed document's whole life, as seen by its sender
    raw, sent = await life_of_a_document(client, auth, signed_by_mau_a)
    items = await wait_receipts(client, auth(MAU_A), 5, document=sent["id"])

    # Then: one receipt per step, in the order of the event log
    assert [(i["event"], i["recipient"], i["state"], i["business_status"]) for i in items] == [
        ("accepted", None, "queued", None),
        ("status", VP_UBND, "queued", "03"),       # VP_UBND had fetched nothing yet
        ("delivered", VP_UBND, "delivered", None),
        ("failed", SO_NOIVU, "failed", None),
        ("status", SO_NOIVU, "failed", "02"),      # the hub's own failure notice
    ]
    assert items[0]["id"] == f"{sent['id']}.accepted" and sent["receipt_url"] == items[0]["url"]
    assert all(i["id"].startswith(f"{sent['id']}.e") for i in items[1:])
    digest = hashlib.sha256(raw).hexdigest()
    assert {i["document_sha256"] for i in items} == {digest}
    assert {i["sender_signature"] for i in items} == {"valid"}
    assert {i["sender"] for i in items} == {MAU_A}
    assert all(i["time"].endswith("Z") for i in items)

    # And: each one verifies offline with nothing but the hub's public certificate
    cert = await hub_cert(client)
    for i in items:
        f = verify_receipt(await receipt_xml(client, auth(MAU_A), i["id"]), cert)
        assert (f.receipt_id, f.message_id, f.event, f.state, f.recipient, f.business_status) == (
            i["id"], sent["id"], i["event"], i["state"], i["recipient"], i["business_status"])
        assert f.document_sha256 == digest and f.sender_signature == "valid"
        assert (f.document_id, f.sender, f.hub_id) == (sent["document_id"], MAU_A, HUB_ID)


async def test_unsigned_document_and_status_messages_get_receipts_too(client, auth):
    sent = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 22))
    st = await submit(client, auth, VP_UBND, samples.status(VP_UBND, MAU_A, sent["document_id"], "05"))
    # the status message itself is a document: delivered to MAU_A when acknowledged
    await client.post(f"/v1/inbox/{st['id']}/ack", headers=auth(MAU_A))
    [status] = await wait_receipts(client, auth(MAU_A), 1, document=sent["id"], event="status")
    assert status["sender_signature"] == "unsigned" and status["business_status"] == "05"
    items = await wait_receipts(client, auth(MAU_A), 2, document=st["id"])
    assert [(i["event"], i["sender"], i["recipient"], i["business_status"]) for i in items] == [
        ("accepted", VP_UBND, None, "05"), ("delivered", VP_UBND, MAU_A, "05")]


async def test_agencies_see_only_receipts_of_their_documents(client, auth, signed_by_mau_a):
    _raw, sent = await life_of_a_document(client, auth, signed_by_mau_a, 23)
    other = await submit(client, auth, AN_BINH, samples.edoc(AN_BINH, [VP_UBND], 24))
    mine = await wait_receipts(client, auth(MAU_A), 5, document=sent["id"])
    receipt_id = mine[2]["id"]

    # another unit: 403 on a receipt, nothing in a listing
    resp = await client.get(f"/v1/receipts/{receipt_id}", headers=auth(AN_BINH))
    assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
    assert (await listing(client, auth(AN_BINH), document=sent["id"]))["items"] == []
    assert {i["message_id"] for i in (await listing(client, auth(AN_BINH)))["items"]} == {other["id"]}
    # the sender does not see a document it neither sent nor received
    assert (await listing(client, auth(MAU_A), document=other["id"]))["items"] == []
    await receipt_xml(client, auth(MAU_A), f"{other['id']}.accepted", status=403)

    # a recipient sees the acceptance and the receipts of its own delivery and
    # statuses, never a co-recipient's (issue 12.8)
    for organ in (VP_UBND, SO_NOIVU):
        got = await listing(client, auth(organ), document=sent["id"])
        assert [i["id"] for i in got["items"]] == \
            [i["id"] for i in mine if i["recipient"] in (None, organ)]
        await receipt_xml(client, auth(organ), f"{sent['id']}.accepted")
        for other_receipt in (i for i in mine if i["recipient"] not in (None, organ)):
            await receipt_xml(client, auth(organ), other_receipt["id"], status=403)

    # auditors, operators and admins see everything
    for role in ("auditor", "operator", "admin"):
        everything = (await listing(client, auth(HUB_ID, role)))["items"]
        assert {sent["id"], other["id"]} <= {i["message_id"] for i in everything}
        await receipt_xml(client, auth(HUB_ID, role), receipt_id)

    # unknown is 404, no token is 401
    resp = await client.get("/v1/receipts/NOSUCH.accepted", headers=auth(HUB_ID, "auditor"))
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"
    assert (await client.get("/v1/receipts")).status == 401
    assert (await client.get(f"/v1/receipts/{receipt_id}")).status == 401


async def test_filters_paging_and_csv_export(client, auth):
    # Given: three documents to VP_UBND, two of them acknowledged
    sent = [await submit(client, auth, s, samples.edoc(s, [VP_UBND], n))
            for s, n in ((MAU_A, 31), (AN_BINH, 32), (MAU_A, 33))]
    for s in sent[:2]:
        await client.post(f"/v1/inbox/{s['id']}/ack", headers=auth(VP_UBND))
    auditor = auth(HUB_ID, "auditor")
    everything = await wait_receipts(client, auditor, 5)
    seqs = [i["seq"] for i in everything]
    assert seqs == sorted(seqs)

    async def ids(**query):
        return [i["id"] for i in (await listing(client, auditor, **query))["items"]]

    assert await ids(event="delivered") == [f"{s['id']}.e{i}" for s, i in
                                            zip(sent[:2], await _event_ids(client, auditor, sent[:2]))]
    assert await ids(event="accepted", organ=MAU_A) == [f"{sent[0]['id']}.accepted",
                                                        f"{sent[2]['id']}.accepted"]
    assert len(await ids(organ=VP_UBND)) == 2  # the recipient of the two deliveries
    assert len(await ids(state="queued")) == 3
    assert await ids(message_id=sent[1]["id"]) == await ids(document=sent[1]["id"])

    # time range: ISO 8601 or epoch seconds, since inclusive, until exclusive
    t = everything[2]["time"]
    assert await ids(since=t) == [i["id"] for i in everything if i["time"] >= t]
    assert await ids(until=t) == [i["id"] for i in everything if i["time"] < t]
    assert await ids(since=t.replace("Z", "+00:00")) == await ids(since=t)
    assert len(await ids(since=0)) == 5 and await ids(since=time.time() + 3600) == []
    assert await ids(until="2000-01-01T00:00:00") == []

    # paging: after = the previous page's last seq, stable and complete
    pages, query = [], {"limit": 2}
    while True:
        body = await listing(client, auditor, **query)
        pages.append([i["id"] for i in body["items"]])
        if "next" not in body:
            break
        assert len(body["items"]) == 2
        query = {"limit": 2, "after": body["items"][-1]["seq"]}
        assert f"after={body['items'][-1]['seq']}" in body["next"]
    assert [i for page in pages for i in page] == [i["id"] for i in everything]

    # CSV: a header row, then the same rows
    resp = await client.get("/v1/receipts", params={"format": "csv"}, headers=auditor)
    assert resp.status == 200 and resp.content_type == "text/csv"
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["id"] for r in rows] == [i["id"] for i in everything]
    assert rows[0]["event"] == "accepted" and rows[0]["document_sha256"] == everything[0]["document_sha256"]
    assert rows[0]["recipient"] == "" and rows[0]["url"] == everything[0]["url"]
    resp = await client.get("/v1/receipts", params={"format": "csv", "limit": "2"}, headers=auditor)
    assert 'rel="next"' in resp.headers["Link"]

    # bad filters are a clear 422
    for bad in ({"event": "lost"}, {"state": "gone"}, {"since": "yesterday"}, {"until": "nan"},
                {"format": "xml"}, {"limit": "many"}):
        body = await listing(client, auditor, status=422, **bad)
        assert body["error"]["code"] == "bad_parameter"
        assert body["error"]["details"]["parameter"] == next(iter(bad))


async def _event_ids(client, auditor, sent):
    out = []
    for s in sent:
        shown = await (await client.get(f"/v1/queue/{s['id']}", headers=auditor)).json()
        out.append(next(e["id"] for e in shown["events"] if e["state"] == "delivered"))
    return out


async def test_receipts_appear_after_a_crash_between_commit_and_receipt(make_settings,
                                                                         aiohttp_client):
    settings = make_settings()
    # Given: state changes committed while no issuer runs, as if the hub had
    # died right after each commit (no issuers running)
    async with open_hub(settings, issuers=False) as hub:
        agency = Identity(MAU_A, "agency")
        docs = [await cleanup.accept(hub, samples.edoc(MAU_A, [VP_UBND, SO_NOIVU], n), agency)
                for n in range(40, 60)]
        for doc in docs:
            await hub.spool.ack(VP_UBND, doc.id)
        await cleanup.accept(hub, samples.status(VP_UBND, MAU_A, docs[0].document_id, "03"),
                             Identity(VP_UBND, "agency"))
        await hub.spool.operator_action(docs[1].id, "drop", "test", f"{HUB_ID}/operator")
        last_event = hub.spool.last_event_id
    db = sqlite3.connect(settings.data_path / "spool.db")
    issued = "SELECT COUNT(*) FROM receipts WHERE event != 'accepted'"
    assert db.execute(issued).fetchone()[0] == 0

    # When: the hub starts again
    client = await aiohttp_client(create_app(settings))
    auditor = {"Authorization": f"Bearer {client.app[HUB].tokens.issue(HUB_ID, 'auditor')}"}

    # Then: it catches up from its cursor: every outcome and status has its receipt
    delivered = await wait_receipts(client, auditor, 20, event="delivered")
    assert {i["message_id"] for i in delivered} == {d.id for d in docs}
    [failed] = await wait_receipts(client, auditor, 1, event="failed")
    assert (failed["message_id"], failed["recipient"]) == (docs[1].id, SO_NOIVU)
    # the 03 from the recipient, and the hub's own 02 about the dropped delivery
    # (failure notices too follow the event log, so a crash loses none)
    statuses = await wait_receipts(client, auditor, 2, event="status")
    assert {(s["business_status"], s["state"]) for s in statuses} == {("03", "delivered"),
                                                                       ("02", "failed")}
    cert = await hub_cert(client)
    for i in delivered[:3] + [failed] + statuses:
        verify_receipt(await receipt_xml(client, auditor, i["id"]), cert)
    await _wait_cursor(db, last_event)
    count = db.execute("SELECT COUNT(*) FROM receipts").fetchone()[0]
    await client.close()

    # And: replaying the whole log (cursor lost) issues nothing twice
    db.execute("DELETE FROM meta WHERE key = ?", (CURSOR_KEY,))
    db.commit()
    client = await aiohttp_client(create_app(settings))
    await _wait_cursor(db, last_event)
    assert db.execute("SELECT COUNT(*) FROM receipts").fetchone()[0] == count
    await client.close()
    db.close()


async def _wait_cursor(db, at_least, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (CURSOR_KEY,)).fetchone()
        if (row and int(row[0]) >= at_least) or time.monotonic() > deadline:
            assert row and int(row[0]) >= at_least
            return
        await asyncio.sleep(0.02)


async def test_tampered_receipt_or_other_hub_fails_verification(client, auth, tmp_path):
    sent = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 70))
    await client.post(f"/v1/inbox/{sent['id']}/ack", headers=auth(VP_UBND))
    [item] = await wait_receipts(client, auth(MAU_A), 1, document=sent["id"], event="delivered")
    xml = await receipt_xml(client, auth(MAU_A), item["id"])
    cert = await hub_cert(client)
    verify_receipt(xml, cert)

    tampered = xml.replace(f"<Recipient>{VP_UBND}</Recipient>".encode(),
                           f"<Recipient>{AN_BINH}</Recipient>".encode())
    assert tampered != xml
    with pytest.raises(ValidationError) as caught:
        verify_receipt(tampered, cert)
    assert caught.value.code == "receipt_invalid" and "signature" in caught.value.message

    init_dev_keys(tmp_path / "other", HUB_ID, [])  # another hub, same name, other key
    other = load_hub_keys(tmp_path / "other" / "hub.key", tmp_path / "other" / "hub.pem")
    with pytest.raises(ValidationError):
        verify_receipt(xml, other.cert)


async def test_receipts_signed_in_a_worker_process_verify_alike(aiohttp_client, make_settings,
                                                                signed_by_mau_a):
    # Given: a worker process (cpu_workers = 1), which signs the
    # issuer's receipts with its own copy of the hub key
    from hub.api.app import HUB
    client = await aiohttp_client(create_app(make_settings(cpu_workers=1)))
    hub = client.app[HUB]

    def auth(organ, role="agency"):
        return {"Authorization": f"Bearer {hub.tokens.issue(organ, role)}"}
    raw, sent = await life_of_a_document(client, auth, signed_by_mau_a, n=31)
    items = await wait_receipts(client, auth(MAU_A), 5, document=sent["id"])
    cert = await hub_cert(client)
    for i in items:
        f = verify_receipt(await receipt_xml(client, auth(MAU_A), i["id"]), cert)
        assert (f.receipt_id, f.event, f.state) == (i["id"], i["event"], i["state"])
