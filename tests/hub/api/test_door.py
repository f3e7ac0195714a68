"""The national-SDK door (/vxp) against a real ``lienthong serve`` process.

Driven by ``hub.vxp.client.VxpClient`` (written from the protocol document,
tests/hub/vxp/) and by raw requests for what the real Java client does that
a tidy client does not: a frozen timestamp, headers accumulated from earlier
calls, ``docid``, the sendEdoc body's CRLF, ``Expect: 100-continue``.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from datetime import datetime, timedelta

import aiohttp
import pytest

from hub.door.credentials import credentials_path, issue
from hub.edxml import samples
from hub.vxp import errors as E
from hub.vxp.client import VxpClient
from hub.vxp.protocol import VN_TZ, format_timestamp, hash_file, sign_headers
from serve import Served
from support import AN_BINH, HUB_ID, MAU_A, VP_UBND, eventually

A, B, C = MAU_A, AN_BINH, VP_UBND


@pytest.fixture(scope="module")
def door_hub(tmp_path_factory):
    """One hub for the module: (base, data, mint, log path, {organ: secret})."""
    tmp = tmp_path_factory.mktemp("door")
    data = tmp / "var"
    secrets = {o: issue(data, o)[0].secret for o in (A, B)}
    server = Served(data, log=tmp / "server.log").start()
    try:
        yield server.url, data, server.mint, tmp / "server.log", secrets
    finally:
        server.stop()
        server.close()


def client(door_hub, organ: str, **kw) -> VxpClient:
    base, _data, _mint, _log, secrets = door_hub
    return VxpClient(base + "/vxp", organ, kw.pop("secret", None) or secrets[organ], **kw)


async def http(door_hub, method: str, path: str, organ: str, role: str = "agency",
               **kw) -> tuple[int, object]:
    base, _data, mint, _log, _secrets = door_hub
    headers = {"Authorization": f"Bearer {mint(organ, role)}", **kw.pop("headers", {})}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, base + path, headers=headers, **kw) as resp:
            body = await resp.read()
            try:
                return resp.status, json.loads(body)
            except ValueError:
                return resp.status, body


def stamp(delta: float = 0.0) -> str:
    return format_timestamp(datetime.now(VN_TZ) + timedelta(seconds=delta))


def signed(organ: str, secret: str, caller: list[tuple[str, str]], *, file: bytes | None = None,
           when: str | None = None, content_type: str = "application/json") -> dict[str, str]:
    pairs = [("timestamp", when or stamp()), ("systemid", organ), ("Content-Type", content_type),
             *caller]
    if file is not None:
        pairs.append(("hash-file", hash_file(file)))
    return sign_headers(pairs, secret)


async def raw_call(door_hub, op: str, headers: dict[str, str], body: bytes = b"",
                   method: str = "POST") -> tuple[int, dict]:
    base = door_hub[0]
    async with aiohttp.ClientSession() as s:
        async with s.request(method, f"{base}/vxp/{op}", headers=headers, data=body) as resp:
            raw = await resp.read()
            return resp.status, json.loads(raw)


async def refused_events(door_hub, after: int = 0) -> list[dict]:
    status, body = await http(door_hub, "GET", f"/v1/audit?kind=refused&after={after}&limit=1000",
                              HUB_ID, "auditor")
    assert status == 200, body
    return [e for e in body["items"] if e["detail"].get("origin") == "door"]


# ---------------------------------------------------------------- the one path

async def test_edoc_from_a_to_b_and_status_back(door_hub):
    raw = samples.edoc(A, [B], "door-1")
    async with client(door_hub, A) as a, client(door_hub, B) as b:
        # Given A sends through the door
        doc_id = await a.send_edoc(raw, A)
        # Then B lists it, gets the same bytes, twice over (getEdoc and downloadEdoc)
        listed = await b.get_received_edoc_list()
        item = next(i for i in listed if i.doc_id == doc_id)
        assert (item.from_, item.to, item.message_type, item.status) == (A, B, "edoc", "initial")
        assert await b.count_receive_edoc() >= 1
        assert await b.get_edoc(doc_id) == raw
        assert await b.download_edoc(doc_id) == raw
        again = next(i for i in await b.get_received_edoc_list() if i.doc_id == doc_id)
        assert again.status == "processing"     # fetched, not yet acknowledged
        # The DocId is the hub's message id: the HTTP API knows it, from the door
        status, env = await http(door_hub, "GET", f"/v1/envelopes/{doc_id}", A)
        assert status == 200 and env["origin"] == "door" and env["sender"] == A
        # And A sees the delivery waiting
        sent = await a.get_sent_edoc_list(doc_id)
        assert [(s.to_code, s.send_status) for s in sent] == [(B, "queued")]
        # When B acknowledges
        await b.update_status(doc_id, "done")
        assert doc_id not in [i.doc_id for i in await b.get_received_edoc_list()]
        status, inbox = await http(door_hub, "GET", "/v1/inbox", B)
        assert doc_id not in [i["id"] for i in inbox["items"]]
        sent = await a.get_sent_edoc_list(doc_id)
        assert [(s.to_code, s.send_status) for s in sent] == [(B, "delivered")]
        assert sent[0].received_time
        # Receipts as through the HTTP API: accepted and delivered
        status, receipts = await http(door_hub, "GET", f"/v1/receipts?document={doc_id}", A)
        events = await eventually(lambda: _receipt_events(door_hub, doc_id, {"accepted", "delivered"}),
                                  what="accepted and delivered receipts")
        assert {"accepted", "delivered"} <= events

        # B's status 03 goes back to A through the door
        document_id = env["document_id"]
        status_raw = samples.status(B, A, document_id, "03", description="Đã tiếp nhận")
        status_id = await b.send_edoc(status_raw, B, "status")
        statuses = await a.get_received_edoc_list("status")
        assert status_id in [s.doc_id for s in statuses]
        assert status_id not in [s.doc_id for s in await a.get_received_edoc_list("edoc")]
        assert await a.count_receive_status() >= 1
        assert await a.get_edoc(status_id) == status_raw
        # ... and through GET /v1/inbox: the same mailbox
        status, inbox = await http(door_hub, "GET", "/v1/inbox", A)
        assert status_id in [i["id"] for i in inbox["items"] if i["kind"] == "status"]
        status, env = await http(door_hub, "GET", f"/v1/envelopes/{doc_id}", A)
        assert [s["status_code"] for s in env["statuses"]] == ["03"]
        await a.update_status(status_id, "done")
        status, inbox = await http(door_hub, "GET", "/v1/inbox", A)
        assert status_id not in [i["id"] for i in inbox["items"]]


async def _receipt_events(door_hub, doc_id: str, want: set[str]) -> set[str] | None:
    status, body = await http(door_hub, "GET", f"/v1/receipts?document={doc_id}", A)
    events = {r["event"] for r in body.get("items", [])} if status == 200 else set()
    return events if want <= events else None


async def test_http_api_and_door_side_by_side(door_hub):
    raw = samples.edoc(A, [B], "door-2")
    # Given A posts with the HTTP API
    status, body = await http(door_hub, "POST", "/v1/envelopes", A, data=raw,
                              headers={"Content-Type": "application/xml"})
    assert status == 202, body
    doc_id = body["id"]
    async with client(door_hub, B) as b, client(door_hub, A) as a:
        # Then B finds it through the door, with the same id
        assert doc_id in [i.doc_id for i in await b.get_received_edoc_list()]
        # processing and fail are recorded, and leave it in the mailbox
        await b.update_status(doc_id, "processing")
        await b.update_status(doc_id, "fail")
        assert doc_id in [i.doc_id for i in await b.get_received_edoc_list()]
        status, audit = await http(door_hub, "GET", f"/v1/audit?kind=door_status&message_id={doc_id}",
                                   HUB_ID, "auditor")
        assert status == 200, audit
        assert [e["detail"]["status"] for e in audit["items"]
                if e["message_id"] == doc_id] == ["processing", "fail"]
        # And B acknowledges with the HTTP API: gone from the door's list too
        status, ack = await http(door_hub, "POST", f"/v1/inbox/{doc_id}/ack", B)
        assert status == 200 and ack["state"] == "delivered"
        assert doc_id not in [i.doc_id for i in await b.get_received_edoc_list()]
        # A's getSentEdocList shows what it sent with the HTTP API too
        sent = await a.get_sent_edoc_list(doc_id)
        assert [(s.sender_doc_id, s.send_status) for s in sent] == [(doc_id, "delivered")]


async def test_the_directory_is_listed_whole(door_hub):
    from hub.config import build_settings
    from hub.directory import load_directory
    directory = load_directory(build_settings({}))
    async with client(door_hub, A) as a:
        agencies = await a.get_agencies_list()
        assert [x.code for x in agencies] == [o.id for o in directory]
        assert {x.name for x in agencies} == {o.name for o in directory}
        qd20 = await a.get_agencies_list_qd20()
        assert [x.code for x in qd20] == [o.id for o in directory]
        units = await a.get_synchronize_unit()
        assert [u.code for u in units] == [o.id for o in directory]
        assert all(u.center_code == HUB_ID and u.deleted is False for u in units)
        assert [u.is_agency for u in units if u.code == HUB_ID] == [False]


# ---------------------------------------------------------------- the Java client's habits

async def test_a_reused_sdk_object_frozen_timestamp_and_accumulated_headers(door_hub):
    raw = samples.edoc(A, [B], "door-3")
    async with client(door_hub, A, frozen_timestamp=True, accumulate_headers=True) as a, \
            client(door_hub, B, frozen_timestamp=True, accumulate_headers=True) as b:
        doc_id = await a.send_edoc(raw, A)
        # the next call still carries hash-file and from, with the same timestamp
        await a.get_sent_edoc_list(doc_id)
        assert doc_id in [i.doc_id for i in await b.get_received_edoc_list()]
        assert await b.get_edoc(doc_id) == raw
        await b.update_status(doc_id, "done", key="docid")   # and the other spelling
        assert doc_id not in [i.doc_id for i in await b.get_received_edoc_list()]


async def test_old_timestamps_within_the_allowed_age(door_hub):
    secret = door_hub[4][A]
    hours_ago = stamp(-6 * 3600)
    status, body = await raw_call(door_hub, "getAgenciesList", signed(A, secret, [], when=hours_ago))
    assert (status, body["status"], body["ErrorCode"]) == (200, "OK", "0")
    status, body = await raw_call(door_hub, "getAgenciesList",
                                  signed(A, secret, [], when=stamp(-25 * 3600)))
    assert (body["status"], body["ErrorCode"]) == ("FAIL", "stale_timestamp")


async def test_send_edoc_body_with_or_without_crlf_and_an_ascii_answer(door_hub):
    secret = door_hub[4][A]
    for n, tail in (("door-4", b"\r\n"), ("door-5", b"")):
        raw = samples.edoc(A, [B], n, subject="Về việc thử cửa SDK")
        headers = signed(A, secret, [("from", A), ("servicetype", "eDoc"), ("messagetype", "edoc")],
                         file=raw, content_type="application/octet-stream")
        base = door_hub[0]
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{base}/vxp/sendEdoc", headers=headers, data=raw + tail) as resp:
                answer = await resp.read()
        answer.decode("ascii")
        body = json.loads(answer)
        assert body["status"] == "OK" and body["ErrorCode"] == "0" and body["DocId"], body
    # A refusal's description with Vietnamese in it is ASCII too
    raw = samples.edoc(B, [A], "door-6")
    headers = signed(A, secret, [("from", A), ("servicetype", "eDoc"), ("messagetype", "edoc")],
                     file=raw, content_type="application/octet-stream")
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{door_hub[0]}/vxp/sendEdoc", headers=headers,
                          data=raw + b"\r\n") as resp:
            answer = await resp.read()
    answer.decode("ascii")
    assert json.loads(answer)["status"] == "FAIL"


def _expect_continue(door_hub, op: str, headers: dict[str, str]) -> tuple[bytes, bytes]:
    """Send headers with ``Expect: 100-continue`` and no body; what the server
    answers before the body is sent, then after."""
    host, port = door_hub[0].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        head = [f"POST /vxp/{op} HTTP/1.1", f"Host: {host}:{port}", "Content-Length: 2",
                "Expect: 100-continue", "Connection: close"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("utf-8"))
        first = sock.recv(64)
        sock.sendall(b"{}")
        rest = b""
        while chunk := sock.recv(65536):
            rest += chunk
    return first, rest


async def test_expect_100_continue_is_answered_before_the_body(door_hub):
    secret = door_hub[4][B]
    raw = samples.edoc(A, [B], "door-7")
    async with client(door_hub, A) as a:
        doc_id = await a.send_edoc(raw, A)
    for op, caller in (("getEdoc", [("filePath", "xml"), ("docId", doc_id)]),
                       ("updateStatus", [("status", "done"), ("docId", doc_id)])):
        first, rest = await asyncio.to_thread(_expect_continue, door_hub, op,
                                              signed(B, secret, caller))
        assert first.startswith(b"HTTP/1.1 100 Continue\r\n"), (op, first)
        body = json.loads((first + rest).split(b"\r\n\r\n", 2)[-1])
        assert (body["status"], body["ErrorCode"]) == ("OK", "0"), (op, body)
        if op == "getEdoc":
            import base64
            assert base64.b64decode(body["data"]) == raw


# ---------------------------------------------------------------- refusals

async def test_every_refusal_is_a_fail_answer_and_audited(door_hub):
    secrets = door_hub[4]
    before = await refused_events(door_hub)
    after = max([e["id"] for e in before], default=0)
    raw = samples.edoc(A, [B], "door-8")
    send = [("from", A), ("servicetype", "eDoc"), ("messagetype", "edoc")]
    ok_headers = signed(A, secrets[A], [])
    tampered = dict(ok_headers)
    tampered["XroadVnpt-systemid"] = B        # a signed header changed on the way
    cases = {
        "bad_mac": ("getAgenciesList", signed(A, "not-the-secret", []), b""),
        "unknown_system": ("getAgenciesList", signed("000.77.48.H63", "x", []), b""),
        "header_mismatch": ("getAgenciesList", tampered, b""),
        "hash_file_mismatch": ("sendEdoc", signed(A, secrets[A], send, file=raw,
                                                  content_type="application/octet-stream"),
                               raw.replace(b"door-8", b"door-9") + b"\r\n"),
        "from_mismatch": ("sendEdoc", signed(A, secrets[A], [("from", B), *send[1:]], file=raw,
                                             content_type="application/octet-stream"),
                          raw + b"\r\n"),
        "missing_header": ("getAgenciesList", {"Content-Type": "application/json"}, b""),
        "not_allowed": ("deleteAgency", signed(A, secrets[A], [("AgencyCode", B)]), b"{}"),
        "not_found": ("getEdoc", signed(A, secrets[A], [("filePath", "xml"),
                                                        ("docId", "01NOSUCHMESSAGE0000000000")]),
                      b"{}"),
        "bad_status": ("updateStatus", signed(A, secrets[A], [("status", "read"),
                                                              ("docId", "x")]), b"{}"),
    }
    for code, (op, headers, body) in cases.items():
        status, answer = await raw_call(door_hub, op, headers, body)
        assert (answer["status"], answer["ErrorCode"]) == ("FAIL", code), (code, answer)
        assert answer["ErrorDesc"]
    status, answer = await raw_call(door_hub, "registerAgency", signed(A, secrets[A], []),
                                    b'{"code": "x"}')
    assert (answer["status"], answer["ErrorCode"]) == ("FAIL", "not_allowed")
    # downloadEdoc2: the unsigned GET
    status, answer = await raw_call(door_hub, "downloadEdoc", {}, method="GET")
    assert (answer["status"], answer["ErrorCode"]) == ("FAIL", "missing_header")
    # cleanup's refusal comes through with cleanup's code (From is not the caller)
    other = samples.edoc(B, [A], "door-10")
    status, answer = await raw_call(door_hub, "sendEdoc",
                                    signed(A, secrets[A], [("servicetype", "eDoc"),
                                                           ("messagetype", "edoc")], file=other,
                                           content_type="application/octet-stream"),
                                    other + b"\r\n")
    assert answer["status"] == "FAIL" and answer["ErrorCode"] not in ("0", "internal_error")
    cleanup_code = answer["ErrorCode"]

    events = await eventually(lambda: _events_after(door_hub, after, len(cases) + 3),
                              what="refused events")
    codes = [e["detail"]["code"] for e in events]
    assert set(cases) | {cleanup_code} <= set(codes)
    assert codes.count(cleanup_code) == 1     # recorded once, by cleanup
    by_code = {e["detail"]["code"]: e for e in events}
    assert by_code["bad_mac"]["organ"] == A and by_code["bad_mac"]["detail"]["verified"] is False
    assert by_code["header_mismatch"]["organ"] == A       # the signed claim, not the wire's
    assert by_code["not_found"]["detail"]["verified"] is True
    assert by_code["unknown_system"]["organ"] is None
    assert by_code["unknown_system"]["detail"]["system_id"] == "000.77.48.H63"


async def _events_after(door_hub, after: int, n: int) -> list[dict] | None:
    events = [e for e in await refused_events(door_hub, after)]
    return events if len(events) >= n else None


async def test_a_flood_of_refusals_is_bounded_in_the_audit_log(door_hub):
    before = await refused_events(door_hub)
    after = max([e["id"] for e in before], default=0)
    headers = signed(A, "wrong", [("flood", "1")])
    for _ in range(30):
        status, answer = await raw_call(door_hub, "getAgenciesList", headers)
        assert answer["ErrorCode"] == "bad_mac"
    events = [e for e in await refused_events(door_hub, after) if e["detail"]["code"] == "bad_mac"]
    assert 1 <= len(events) <= 10


async def test_the_vxp_client_sees_refusals_as_refusals(door_hub):
    async with client(door_hub, A, secret="wrong-secret") as a:
        with pytest.raises(E.VxpRefusedError) as err:
            await a.get_agencies_list()
        assert err.value.error_code == "bad_mac"


# ---------------------------------------------------------------- credentials while running

async def test_rotated_credentials_take_effect_without_a_restart(door_hub):
    _base, data, _mint, log_path, secrets = door_hub
    # A new organisation's credentials, issued while the hub runs, work at once
    fresh = issue(data, C)[0].secret
    async with client(door_hub, C, secret=fresh) as c:
        assert await c.get_agencies_list()
    # Rotation: the new secret works at once, the old one is refused within a second or so
    rotated = issue(data, C, rotate=True)[0].secret
    assert rotated != fresh and len(rotated) == 44
    async with client(door_hub, C, secret=rotated) as c:
        assert await c.get_agencies_list()

    async def old_refused() -> bool:
        status, answer = await raw_call(door_hub, "getAgenciesList", signed(C, fresh, []))
        return answer["ErrorCode"] == "bad_mac"
    await eventually(old_refused, timeout=5, interval=0.2, what="the old secret refused")
    # The file is private
    path = credentials_path(data)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    # No secret ever reaches the hub's log
    log_text = log_path.read_text(errors="replace")
    for secret in (fresh, rotated, *secrets.values()):
        assert secret not in log_text
    assert "door credentials loaded" in log_text
