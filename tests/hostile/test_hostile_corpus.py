"""The hostile-input corpus through POST /v1/envelopes of the real app.

Each case of ``hostile_cases.CASES`` gets its stable code within its time and
memory bound, and the hub still accepts a normal document afterwards.  The
cases that are about the HTTP exchange itself (oversize bodies, content
type, replay, signature wrapping) are written out below.
"""
from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from hub.crypto.dsig import DS_SIGNATURE
from hub.crypto.signing import sign_envelope

from hostile.hostile_cases import CASES, MAU_A, VP_UBND, Case, edoc
from support import XML, submit


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
async def test_hostile_case_gets_its_code_within_bounds(case: Case, client, auth) -> None:
    raw = case.build()
    before = peak_mb()
    started = time.monotonic()
    resp = await client.post("/v1/envelopes", data=raw, headers={**auth(MAU_A), **XML})
    body = await resp.json()
    elapsed = time.monotonic() - started
    assert (resp.status, body["error"]["code"]) == (case.status, case.code), body
    assert elapsed < case.seconds, f"{case.name} took {elapsed:.1f}s"
    grown = peak_mb() - before
    assert grown < case.megabytes, f"{case.name} grew the peak by {grown:.0f} MB"
    # Then: the hub is still fine.
    await submit(client, auth, MAU_A, edoc())
    assert (await client.get("/healthz")).status == 200


async def test_the_same_envelope_again_is_the_same_document(client, auth, hub) -> None:
    raw = edoc()
    first = await submit(client, auth, MAU_A, raw)
    again = await submit(client, auth, MAU_A, raw, status=200)
    assert again["id"] == first["id"]
    assert len(await hub.spool.deliveries(first["id"])) == 1


async def test_wrong_content_type_is_refused(client, auth) -> None:
    resp = await client.post("/v1/envelopes", data=edoc(),
                             headers={**auth(MAU_A), "Content-Type": "application/json"})
    assert resp.status == 415
    assert (await resp.json())["error"]["code"] == "unsupported_media_type"


@pytest.fixture
def small_client(aiohttp_client, make_settings):
    from hub.api.app import create_app
    return aiohttp_client(create_app(make_settings(max_envelope_size="1MiB")))


async def test_a_declared_oversize_body_is_refused_before_it_is_sent(small_client) -> None:
    # Given a hub taking at most 1 MiB, when a client announces 100 MiB and sends
    # only the headers, then the 413 comes at once: the hub never waits for the body.
    client = await small_client
    from hub.api.app import HUB
    token = client.app[HUB].tokens.issue(MAU_A, "agency")
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write((f"POST /v1/envelopes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Type: application/xml\r\nContent-Length: {100 << 20}\r\n\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 413"), head
    writer.close()


async def test_a_chunked_body_is_cut_off_at_the_limit(small_client) -> None:
    client = await small_client
    from hub.api.app import HUB
    token = client.app[HUB].tokens.issue(MAU_A, "agency")
    sent = 0

    async def endless():
        nonlocal sent
        while sent < (64 << 20):  # far past the limit; the hub must stop reading first
            sent += 1 << 16
            yield b"<a/>" * (1 << 14)

    resp = await client.post("/v1/envelopes", data=endless(), headers={
        "Authorization": f"Bearer {token}", **XML})
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "envelope_too_large"
    assert sent < (64 << 20)


def org_keys(dev_keys: Path, organ: str):
    key = serialization.load_pem_private_key((dev_keys / "orgs" / f"{organ}.key").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((dev_keys / "orgs" / f"{organ}.pem").read_bytes())
    return key, cert


@pytest.mark.parametrize("where", ["body", "wrapper", "second-copy"])
async def test_signature_wrapping_is_refused(where: str, client, auth, dev_keys) -> None:
    signed = sign_envelope(edoc(), *org_keys(dev_keys, MAU_A))
    root = etree.fromstring(signed)
    header = root.find(".//{*}edXMLHeader")
    sig = header.find(DS_SIGNATURE)
    if where == "body":      # the signature moved where a verifier might not look
        root.find(".//{*}edXMLBody").append(sig)
    elif where == "wrapper":  # the signed header wrapped, a forged one in its place
        wrapper = etree.SubElement(root.find(".//{*}Attachment"), "Wrapper")
        wrapper.append(etree.fromstring(etree.tostring(header)))
        header.find(".//{*}Subject").text = "forged"
    else:                    # a second signature copied in
        header.append(etree.fromstring(etree.tostring(sig)))
    raw = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    resp = await client.post("/v1/envelopes", data=raw, headers={**auth(MAU_A), **XML})
    body = await resp.json()
    assert resp.status in (403, 422), body
    assert body["error"]["code"] in ("signature_invalid", "schema_invalid"), body


async def test_many_unknown_recipients_under_the_cap_are_one_delivery_each(client, auth, hub) -> None:
    from hostile.hostile_cases import many_recipients
    sent = await submit(client, auth, MAU_A, many_recipients(50))
    assert len(sent["recipients"]) == 51 and VP_UBND in {r["organ"] for r in sent["recipients"]}


async def test_listings_are_bounded_in_bytes_and_page_on(aiohttp_client, make_settings) -> None:
    # Given pages of at most ~2 KiB, when five documents wait in an inbox, then
    # a page ends early with its next cursor and paging on yields each exactly once.
    from hub.api.app import HUB, create_app
    client = await aiohttp_client(create_app(make_settings(max_listing_bytes="2KiB")))
    tokens = client.app[HUB].tokens
    sender = {"Authorization": f"Bearer {tokens.issue(MAU_A, 'agency')}", **XML}
    ids = set()
    for _ in range(5):
        resp = await client.post("/v1/envelopes", data=edoc(subject="S" * 600), headers=sender)
        assert resp.status == 202
        ids.add((await resp.json())["id"])
    reader = {"Authorization": f"Bearer {tokens.issue(VP_UBND, 'agency')}"}
    seen, url, pages = [], "/v1/inbox", 0
    while url:
        resp = await client.get(url, headers=reader)
        raw = await resp.read()
        body = await resp.json()
        assert len(raw) < 2048 + 1024 or len(body["items"]) == 1
        seen += [i["id"] for i in body["items"]]
        url, pages = body.get("next"), pages + 1
        assert pages < 10
    assert sorted(seen) == sorted(ids) and pages > 2
