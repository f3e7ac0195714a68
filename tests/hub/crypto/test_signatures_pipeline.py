"""Signatures through the real pipeline: sender verification by policy, hop
signatures on relay, original bytes kept for auditors."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from adapters.edxml_http import EdxmlHttpAdapter
from adapters.mailbox import MailboxAdapter
from hub.edxml import samples
from hub.api.app import HUB, create_app
from hub.receipts.format import verify_receipt
from hub.crypto.signing import check_sender, parse_xml, sign_envelope, verify_hop
from support import HUB_ID, MAU_A, SO_NOIVU, VP_UBND, big_edoc, eventually

XML = {"Content-Type": "application/xml"}


def org_key(dev_keys: Path, organ: str):
    key = serialization.load_pem_private_key((dev_keys / "orgs" / f"{organ}.key").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((dev_keys / "orgs" / f"{organ}.pem").read_bytes())
    return key, cert


async def post(client, token, raw):
    resp = await client.post("/v1/envelopes", data=raw, headers={"Authorization": f"Bearer {token}", **XML})
    return resp.status, await resp.json()


async def test_signed_envelope_is_verified_and_recorded(client, hub, dev_keys):
    raw = sign_envelope(samples.edoc(MAU_A, [VP_UBND], 1), *org_key(dev_keys, MAU_A))
    status, body = await post(client, hub.tokens.issue(MAU_A), raw)
    assert status == 202, body
    env = await hub.spool.envelope(body["id"])
    assert env["signature"]["result"] == "valid"
    assert MAU_A in env["signature"]["signer"]
    assert await hub.spool.payload(env["sha256"]) == raw  # unaltered, still verifiable


async def test_acceptance_receipt_is_signed_and_states_the_result(client, hub, dev_keys):
    raw = sign_envelope(samples.edoc(MAU_A, [VP_UBND], 2), *org_key(dev_keys, MAU_A))
    status, body = await post(client, hub.tokens.issue(MAU_A), raw)
    conn_rows = [await hub.spool.receipt(body["receipt_id"])]
    fields = verify_receipt(bytes(conn_rows[0]["xml"]), hub.keys.cert)
    assert fields.event == "accepted" and fields.message_id == body["id"]
    assert fields.document_sha256 == hashlib.sha256(raw).hexdigest()
    assert fields.sender_signature == "valid" and fields.sender == MAU_A
    # the duplicate answers with the same receipt
    status, again = await post(client, hub.tokens.issue(MAU_A), raw)
    assert status == 200 and again["receipt_id"] == body["receipt_id"]


async def test_tampered_or_foreign_signatures_are_refused(client, hub, dev_keys):
    raw = sign_envelope(samples.edoc(MAU_A, [VP_UBND], 3), *org_key(dev_keys, MAU_A))
    forged = raw.replace(b"V/v tri", b"V/v TRI", 1)
    status, body = await post(client, hub.tokens.issue(MAU_A), forged)
    assert status == 422 and body["error"]["code"] == "signature_invalid"
    # signed with another organisation's real key: not the sender's certificate
    other = sign_envelope(samples.edoc(MAU_A, [VP_UBND], 4), *org_key(dev_keys, VP_UBND))
    status, body = await post(client, hub.tokens.issue(MAU_A), other)
    assert status == 422 and body["error"]["code"] == "signature_invalid"


async def test_policy_required_refuses_unsigned(aiohttp_client, make_settings, tmp_path):
    from support import REPO
    text = (REPO / "conf" / "directory.toml").read_text(encoding="utf-8")
    marker = 'id = "000.01.48.H63"'
    text = text.replace(marker, marker + '\nsignature_policy = "required"', 1)
    (tmp_path / "directory.toml").write_text(text, encoding="utf-8")
    client = await aiohttp_client(create_app(make_settings(directory=str(tmp_path / "directory.toml"))))
    hub = client.app[HUB]
    status, body = await post(client, hub.tokens.issue(MAU_A), samples.edoc(MAU_A, [VP_UBND], 5))
    assert status == 422 and body["error"]["code"] == "signature_required"
    # another unit keeps the default (verify_if_present): unsigned is accepted and recorded
    status, body = await post(client, hub.tokens.issue(VP_UBND), samples.edoc(VP_UBND, [MAU_A], 5))
    assert status == 202
    assert (await hub.spool.envelope(body["id"]))["signature"]["result"] == "unsigned"


@pytest.mark.parametrize("policy,status,result", [
    ("record_only", 202, "recorded"),
    ("verify_if_present", 202, "unsigned"),
    ("required", 422, None),
])
async def test_legacy_sample_signature_by_policy(aiohttp_client, make_settings, tmp_path,
                                                 policy, status, result):
    # The public VPCP sample edoc_new carries a QCVN-namespace Signature that is not
    # valid XML-DSig; its sender 000.00.00.A80 is added to a copy of the directory.
    from support import REPO
    text = (REPO / "conf" / "directory.toml").read_text(encoding="utf-8")
    text += (f'\n[[organ]]\nid = "000.00.00.A80"\nname = "Legacy producer"\nkind = "external"\n'
             f'route = "provincial"\nsignature_policy = "{policy}"\n')
    (tmp_path / "directory.toml").write_text(text, encoding="utf-8")
    client = await aiohttp_client(create_app(make_settings(directory=str(tmp_path / "directory.toml"))))
    hub = client.app[HUB]
    raw = big_edoc()
    got, body = await post(client, hub.tokens.issue("000.00.00.A80"), raw)
    assert got == status, body
    if result:
        env = await hub.spool.envelope(body["id"])
        assert env["signature"]["result"] == result
        assert body["recipients"] == [{"organ": "28.22.H17", "route": "provincial"}]
    else:
        assert body["error"]["code"] == "signature_required"


async def wait_first_delivered(hub, message_id: str, timeout: float = 10.0) -> list[dict]:
    """The message's deliveries once the first is delivered (fails after ``timeout``)."""
    async def first_delivered():
        deliveries = await hub.spool.deliveries(message_id)
        return deliveries if deliveries[0]["state"] == "delivered" else None
    return await eventually(first_delivered, timeout=timeout, what="the first delivery delivered")


@pytest.fixture
async def peer_hub(aiohttp_server):
    """A fake peer district hub: records what it receives, answers 202."""
    received: list[tuple[dict, bytes]] = []

    async def envelopes(request):
        received.append((dict(request.headers), await request.read()))
        return web.json_response({"id": "peer-1"}, status=202)
    app = web.Application(client_max_size=64 << 20)
    app.router.add_post("/v1/envelopes", envelopes)
    server = await aiohttp_server(app)
    return server, received


async def test_relay_adds_trace_and_hop_signature(aiohttp_client, make_settings, peer_hub, dev_keys):
    server, received = peer_hub
    url = f"http://127.0.0.1:{server.port}/v1/envelopes"
    adapters = {"mailbox": MailboxAdapter("mailbox", {}),
                "peer.lucyen": EdxmlHttpAdapter("peer.lucyen", {"url": url, "token": "peer-secret"})}
    client = await aiohttp_client(create_app(make_settings(), adapters=adapters))
    hub = client.app[HUB]
    raw = sign_envelope(samples.edoc(MAU_A, ["000.00.44.H63"], 6), *org_key(dev_keys, MAU_A))
    status, body = await post(client, hub.tokens.issue(MAU_A), raw)
    assert status == 202
    await eventually(lambda: received, what="the peer received the document")
    headers, wire = received[0]
    assert headers["Authorization"] == "Bearer peer-secret"
    assert headers["X-Lienthong-Message-Id"] == body["id"]
    # the next hop can verify the hub, and sees our TraceHeader last
    assert verify_hop(wire, hub.keys.cert)
    traces = parse_xml(wire).findall(".//{http://www.mic.gov.vn/TBT/QCVN_102_2016}TraceHeader")
    assert traces[-1].findtext("{http://www.mic.gov.vn/TBT/QCVN_102_2016}OrganId") == HUB_ID
    # while the spool keeps the sender's original, whose signature still verifies
    env = await hub.spool.envelope(body["id"])
    original = await hub.spool.payload(env["sha256"])
    assert original == raw and wire != raw
    assert check_sender(parse_xml(original), MAU_A, hub.trust).result == "valid"
    deliveries = await wait_first_delivered(hub, body["id"])
    assert deliveries[0]["state"] == "delivered"


async def test_peer_refusal_and_outage(aiohttp_client, make_settings, aiohttp_server, clock):
    async def refuse(request):
        return web.json_response({"error": {"code": "unknown_recipient"}}, status=422)

    async def down(request):
        return web.Response(status=503)
    app = web.Application()
    app.router.add_post("/refuse", refuse)
    app.router.add_post("/down", down)
    server = await aiohttp_server(app)
    base = f"http://127.0.0.1:{server.port}"
    adapters = {"mailbox": MailboxAdapter("mailbox", {}),
                "provincial": EdxmlHttpAdapter("provincial", {"url": base + "/refuse"}),
                "peer.lucyen": EdxmlHttpAdapter("peer.lucyen", {"url": base + "/down"}),
                "peer.yenbinh": EdxmlHttpAdapter("peer.yenbinh", {"url": "http://127.0.0.1:9/closed"})}
    client = await aiohttp_client(create_app(make_settings(), adapters=adapters))
    hub = client.app[HUB]
    status, body = await post(client, hub.tokens.issue(MAU_A),
                              samples.edoc(MAU_A, [SO_NOIVU, "000.00.44.H63", "000.00.50.H63"], 7))
    assert status == 202

    async def all_attempted():
        states = {d["recipient"]: d for d in await hub.spool.deliveries(body["id"])}
        return states if all(d["state"] in ("failed", "deferred") for d in states.values()) else None
    states = await eventually(all_attempted, what="every delivery attempted")
    assert states[SO_NOIVU]["state"] == "failed" and "HTTP 422" in states[SO_NOIVU]["last_error"]
    assert states["000.00.44.H63"]["state"] == "deferred" and "HTTP 503" in states["000.00.44.H63"]["last_error"]
    assert states["000.00.50.H63"]["state"] == "deferred"


async def test_large_envelope_streams_to_disk_and_relays_from_its_file(aiohttp_client, make_settings,
                                                                       peer_hub, dev_keys):
    # Given: an envelope over spool.payloads.LARGE, with the characters that
    # c14n and serialisation escape in its attachment, signed by its sender
    from spool.payloads import LARGE
    server, received = peer_hub
    url = f"http://127.0.0.1:{server.port}/v1/envelopes"
    adapters = {"mailbox": MailboxAdapter("mailbox", {}),
                "peer.lucyen": EdxmlHttpAdapter("peer.lucyen", {"url": url})}
    client = await aiohttp_client(create_app(make_settings(), adapters=adapters))
    hub = client.app[HUB]
    payloads = hub.spool.payloads.root
    raw = samples.edoc(MAU_A, ["000.00.44.H63"], 7, size=LARGE + (1 << 20))
    raw = raw.replace(b"<ContentTransferEncoded>", b"<ContentTransferEncoded>&amp;&lt;&gt;&#13;", 1)
    raw = sign_envelope(raw, *org_key(dev_keys, MAU_A))
    assert len(raw) > LARGE
    token = hub.tokens.issue(MAU_A)
    # When: it is posted
    status, body = await post(client, token, raw)
    # Then: it was verified from the file the upload was streamed to, and that
    # file became the payload: nothing is left in incoming/
    assert status == 202, body
    env = await hub.spool.envelope(body["id"])
    assert env["signature"]["result"] == "valid"
    stored = await hub.spool.payload(env["sha256"], path_over=LARGE)
    assert isinstance(stored, Path) and stored.read_bytes() == raw
    assert env["sha256"] == hashlib.sha256(raw).hexdigest()
    assert not list((payloads / "incoming").iterdir())
    # a re-post is the same message and leaves nothing behind either
    assert (await post(client, token, raw))[0] == 200
    # and a large body that is refused leaves nothing behind
    status, refused = await post(client, token, raw.replace(b"</edXML>", b"</edXML><x/>"))
    assert status == 422, refused
    assert not list((payloads / "incoming").iterdir())
    # The relay: signed file to file, sent from the file, the file removed
    await eventually(lambda: received, what="the peer received the document")
    _headers, wire = received[0]
    assert verify_hop(wire, hub.keys.cert)
    assert check_sender(parse_xml(wire), MAU_A, hub.trust).result == "valid"
    deliveries = await wait_first_delivered(hub, body["id"])
    assert deliveries[0]["state"] == "delivered"
    assert not list((payloads / "outgoing").iterdir())
    # A large document for a mailbox is fetched whole, from its file
    raw2 = sign_envelope(samples.edoc(MAU_A, [VP_UBND], 8, size=LARGE + 1000), *org_key(dev_keys, MAU_A))
    status, body2 = await post(client, token, raw2)
    assert status == 202, body2
    resp = await client.get(f"/v1/inbox/{body2['id']}",
                            headers={"Authorization": f"Bearer {hub.tokens.issue(VP_UBND)}"})
    assert resp.status == 200 and resp.content_type == "application/xml"
    assert resp.headers["ETag"] == f'"{hashlib.sha256(raw2).hexdigest()}"'
    assert await resp.read() == raw2


def test_documents_with_big_attachments_are_written_like_tostring():
    import io

    from lxml import etree

    from hub.crypto import dsig
    raw = samples.edoc(MAU_A, [VP_UBND], 1, size=3_000_000)
    raw = raw.replace(b"<ContentTransferEncoded>", b"<ContentTransferEncoded>&amp;&lt;&gt;&#13;\xc3\xa9", 1)
    root = parse_xml(raw)
    out = io.BytesIO()
    dsig.write_document(root, out)
    assert out.getvalue() == etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    assert etree.tostring(root) == etree.tostring(parse_xml(raw))  # the tree is as it was


async def test_a_certificate_with_a_malformed_subject_is_refused_not_a_server_error(client, auth):
    # Given: a hop-signed envelope whose KeyInfo certificate has a subject
    # cryptography cannot parse (found by tests/fuzz/fuzz_parse.py; it was a 500)
    from support import REPO, XML
    raw = (REPO / "tests" / "fuzz" / "corpus" / "regress_cert_subject.xml").read_bytes()
    # When it is submitted
    resp = await client.post("/v1/envelopes", data=raw, headers={**auth(MAU_A), **XML})
    body = await resp.json()
    # Then it is refused with the signature's code
    assert (resp.status, body["error"]["code"]) == (422, "signature_invalid"), body
    assert "unreadable X509Certificate" in body["error"]["message"]
