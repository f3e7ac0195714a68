"""The fake VXP platform (hub.sim.vxp_platform) as a server: what an SDK client meets.

Requests here are built with hub.vxp.protocol and sent with plain aiohttp or
a raw socket, as the Java SDK would send them; hub.vxp.client is used where
the point is the platform's state rather than the wire.
"""
from __future__ import annotations

import asyncio
import base64
import json
import re
import sys
from collections.abc import AsyncIterator
from datetime import datetime

import aiohttp
import pytest
from support import REPO
from vxp_support import EDOC, STATUS, SYSTEMS, TIMEOUT, make_client

from hub.sim.vxp_platform import FakePlatform
from hub.vxp import errors as E
from hub.vxp.client import VxpClient
from hub.vxp.protocol import VN_TZ, format_timestamp, hash_file, sign_headers

G22, H41, G17 = "000.00.00.G22", "000.00.00.H41", "000.00.00.G17"
Answer = tuple[int, dict[str, object]]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


def signed(system: str, ct: str, caller: list[tuple[str, str]], secret: str | None = None,
           file: bytes | None = None) -> dict[str, str]:
    stamp = format_timestamp(datetime.now(VN_TZ))
    pairs = [("timestamp", stamp), ("systemid", system), ("Content-Type", ct), *caller]
    if file is not None:
        pairs.append(("hash-file", hash_file(file)))
    return sign_headers(pairs, secret if secret is not None else SYSTEMS[system][0])


async def post(http: aiohttp.ClientSession, platform: FakePlatform, op: str,
               headers: dict[str, str], body: bytes = b"") -> Answer:
    async with http.post(f"{platform.url}/{op}", headers=headers, data=body) as resp:
        return resp.status, json.loads(await resp.read())


async def send(http: aiohttp.ClientSession, platform: FakePlatform, data: bytes, *,
               system: str = "sys.a", from_: str = G22, extra: list[tuple[str, str]] = (),
               body: bytes | None = None) -> Answer:
    caller = [("from", from_), ("servicetype", "eDoc"), ("messagetype", "edoc"), *extra]
    headers = signed(system, "application/octet-stream", caller, file=data)
    return await post(http, platform, "sendEdoc", headers,
                      body if body is not None else data + b"\r\n")


# ---------------------------------------------------------------- the wire

async def test_expect_100_continue_is_answered_before_the_body(platform: FakePlatform) -> None:
    headers = signed("sys.b", "application/json", [("filePath", "xml"), ("docId", "x")])
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    reader, writer = await asyncio.open_connection(platform.host, platform.port)
    try:
        writer.write(f"POST /getEdoc HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                     f"Expect: 100-continue\r\n{head}\r\n".encode())
        await writer.drain()
        # The SDK stalls 3 s when no 100 comes; it must come before we send "{}".
        assert await asyncio.wait_for(reader.readline(), 1.0) == b"HTTP/1.1 100 Continue\r\n"
        assert await asyncio.wait_for(reader.readline(), 1.0) == b"\r\n"
        writer.write(b"{}")
        await writer.drain()
        assert (await asyncio.wait_for(reader.readline(), 1.0)).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def test_send_edoc_answer_is_ascii_with_a_capital_docid(
        http: aiohttp.ClientSession, platform: FakePlatform) -> None:
    async with http.post(f"{platform.url}/sendEdoc", data=EDOC + b"\r\n", headers=signed(
            "sys.a", "application/octet-stream",
            [("from", G22), ("servicetype", "eDoc"), ("messagetype", "edoc")], file=EDOC)) as r:
        raw = await r.read()
    assert raw.isascii()
    answer = json.loads(raw)
    assert answer["status"] == "OK" and answer["ErrorCode"] == "0" and answer["ErrorDesc"] == ""
    assert re.fullmatch(r"[0-9a-f-]{36}", str(answer["DocId"]))
    # A body without the SDK's final CRLF is accepted too.
    assert (await send(http, platform, EDOC, body=EDOC))[1]["status"] == "OK"


async def test_verification_refusals(http: aiohttp.ClientSession, platform: FakePlatform) -> None:
    ok = signed("sys.a", "application/json", [])
    assert (await post(http, platform, "getAgenciesList", ok))[0] == 200

    async def code(headers: dict[str, str], op: str = "getAgenciesList",
                   body: bytes = b"") -> object:
        status, answer = await post(http, platform, op, headers, body)
        assert (status, answer["status"]) == (403, "FAIL")
        return answer["ErrorCode"]

    assert await code(signed("sys.a", "application/json", [], secret="guess")) == "bad_mac"
    assert await code(signed("nobody", "application/json", [], secret="x")) == "unknown_system"
    assert await code({**ok, "XroadVnpt-Content-Type": "text/plain"}) == "header_mismatch"
    assert await code({}) == "missing_header"                    # downloadEdoc2-style, unsigned
    status, answer = await send(http, platform, EDOC, body=EDOC[:-1] + b"\r\n")
    assert (status, answer["ErrorCode"]) == (403, "hash_file_mismatch")
    assert platform.counters.mac_failures == 1
    assert platform.counters.auth_failures["hash_file_mismatch"] == 1
    assert platform.state.documents == {}


async def test_unknown_operation_and_wrong_method(http: aiohttp.ClientSession,
                                                  platform: FakePlatform) -> None:
    assert (await post(http, platform, "nosuch", {}))[0] == 404
    async with http.get(f"{platform.url}/sendEdoc") as resp:
        assert resp.status == 405


# ---------------------------------------------------------------- routing

async def test_to_header_overrides_the_edxml_recipients(http: aiohttp.ClientSession,
                                                        platform: FakePlatform) -> None:
    _, answer = await send(http, platform, EDOC, extra=[("to", f'[{{"OrganId":"{G17}"}}]')])
    assert answer["status"] == "OK"
    assert [d.system_id for d in platform.state.deliveries.values()] == ["sys.c"]


@pytest.mark.parametrize(("system", "data", "code"), [
    ("sys.b", EDOC, "from_not_allowed"),                       # sys.b does not speak for G22
    ("sys.a", EDOC.replace(b"000.00.00.G17", b"999.99.99.Z99"), "unknown_recipient"),
    ("sys.a", b"<edXML>not closed", "invalid_edxml"),
    ("sys.a", b"<x/>", "invalid_edxml"),
    # An internal entity is not expanded, so the only To is empty: nothing is routed.
    ("sys.a", re.sub(rb"<edXML:To>\s*<edXML:OrganId>[^<]*", b"<edXML:To><edXML:OrganId>&t;",
                     EDOC.replace(b"?>", b'?><!DOCTYPE edXML [<!ENTITY t "000.00.00.H41">]>', 1)),
     "no_recipient"),
])
async def test_routing_refusals(http: aiohttp.ClientSession, platform: FakePlatform, system: str,
                                data: bytes, code: str) -> None:
    from_ = SYSTEMS[system][1][0]
    _, answer = await send(http, platform, data, system=system, from_=from_)
    assert (answer["status"], answer["ErrorCode"]) == ("FAIL", code)
    assert platform.state.documents == {} and not platform.counters.deliveries


async def test_signed_from_must_match_the_document(http: aiohttp.ClientSession,
                                                   platform: FakePlatform) -> None:
    platform.add_system("sys.a", SYSTEMS["sys.a"][0])        # now speaks for anyone
    _, answer = await send(http, platform, EDOC, from_=H41)
    assert answer["ErrorCode"] == "from_mismatch"


# ---------------------------------------------------------------- mailboxes

async def test_mailbox_statuses(platform: FakePlatform) -> None:
    async with make_client(platform, "sys.a") as a, make_client(platform, "sys.b") as b, \
            make_client(platform, "sys.c") as c:
        doc_id = await a.send_edoc(EDOC, from_=G22)
        await b.update_status(doc_id, "processing")
        assert [i.status for i in await b.get_received_edoc_list()] == ["processing"]
        await c.update_status(doc_id, "fail")                   # fail also leaves the list
        assert await c.get_received_edoc_list() == []
        assert await a.get_edoc(doc_id) == EDOC                 # the sender may read its own
        with pytest.raises(E.VxpRefusedError) as err:
            await a.update_status(doc_id, "done")               # ...but has no delivery of it
        assert err.value.error_code == "not_found"
        status_id = await b.send_edoc(STATUS, from_=H41, messagetype="status")
        with pytest.raises(E.VxpRefusedError) as err:
            await c.get_edoc(status_id)
        assert err.value.error_code == "not_found"
        with pytest.raises(E.VxpRefusedError) as err:
            await b.update_status(doc_id, "read")  # type: ignore[arg-type]
        assert err.value.error_code == "bad_request"
    assert platform.counters.status_updates[f"sys.c {doc_id} fail"] == 1


async def test_inject_as_if_a_department_sent_it(platform: FakePlatform) -> None:
    doc_id = platform.inject(EDOC)
    assert platform.state.documents[doc_id].sender == "sys.a"    # the system of its From
    outside = (REPO / "examples" / "edoc-mau-a-to-vp.xml").read_bytes()
    platform.add_system("sys.vp", "secret-vp", ["000.31.48.H63"])
    outside_id = platform.inject(outside)
    assert platform.state.documents[outside_id].sender == "_injected"
    async with VxpClient(platform.url, "sys.vp", "secret-vp", timeout=TIMEOUT) as vp:
        assert [i.doc_id for i in await vp.get_received_edoc_list()] == [outside_id]


async def test_lost_answer_after_commit_shows_in_the_counters(platform: FakePlatform) -> None:
    # Given a platform that stores the document and then times out on the answer
    platform.fail("timeout", "sendEdoc", delay=5, after=True)
    async with make_client(platform, "sys.a") as a:
        with pytest.raises(E.VxpTimeoutError):
            await a.send_edoc(EDOC, from_=G22)
        # When the client sends again
        await a.send_edoc(EDOC, from_=G22)
    # Then the platform holds it twice: what a hub's retry policy must be judged by
    assert platform.counters.sends["000.00.00.G22,2015/09/30,7816/VPCP-TTĐT"] == 2
    assert len(platform.state.documents) == 2


# ---------------------------------------------------------------- control and gateway

async def test_control_over_http(http: aiohttp.ClientSession, platform: FakePlatform) -> None:
    control = f"http://{platform.host}:{platform.port}/_control"
    async with http.post(control, json={"action": "fault", "kind": "http_error", "status": 502,
                                        "operation": "getAgenciesList", "count": 2}) as resp:
        assert resp.status == 200 and (await resp.json())["fault"]["count"] == 2
    headers = signed("sys.a", "application/json", [])
    for _ in range(2):
        async with http.post(f"{platform.url}/getAgenciesList", headers=headers) as resp:
            assert resp.status == 502
    assert (await post(http, platform, "getAgenciesList", headers))[0] == 200
    async with http.post(control, json={"action": "inject", "messagetype": "edoc",
                                        "data_base64": base64.b64encode(EDOC).decode()}) as resp:
        doc_id = (await resp.json())["DocId"]
    async with http.get(control) as resp:
        snapshot = await resp.json()
    assert snapshot["counters"]["calls"]["getAgenciesList"] == 3
    assert snapshot["counters"]["deliveries"][doc_id] == 2 and snapshot["faults"] == []
    for bad in ({"action": "nope"}, {"action": "fault", "kind": "explode"}, [1]):
        async with http.post(control, json=bad) as resp:
            assert resp.status == 400


async def test_gateway_tokens(http: aiohttp.ClientSession, gateway: FakePlatform) -> None:
    headers = signed("sys.a", "application/json", [])
    async with http.post(f"{gateway.url}/getAgenciesList", headers=headers) as resp:
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    async with http.post(gateway.token_url, data={"grant_type": "password"}) as resp:
        assert resp.status == 400
    form = {"grant_type": "client_credentials", "client_id": "hub-client",
            "client_secret": "hub-client-secret"}            # credentials in the form work too
    async with http.post(gateway.token_url, data=form) as resp:
        token = await resp.json()
    assert token["token_type"] == "Bearer" and token["expires_in"] == 600
    bearer = {**headers, "Authorization": f"Bearer {token['access_token']}"}
    assert (await post(http, gateway, "getAgenciesList", bearer))[0] == 200
    gateway.expire_tokens()
    assert (await post(http, gateway, "getAgenciesList", bearer))[0] == 401


# ---------------------------------------------------------------- as a process

async def test_runs_as_a_separate_process_told_to_fail_over_http() -> None:
    a, b = SYSTEMS["sys.a"], SYSTEMS["sys.b"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.sim.vxp_platform", "--listen", "127.0.0.1:0",
        "--system", f"sys.a:{a[0]}:{','.join(a[1])}", "--system", f"sys.b:{b[0]}:{H41}",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        endpoint = re.search(r"endpoint (http://\S+?)(,|$)", line.strip())
        assert endpoint, line
        url = endpoint.group(1)
        async with VxpClient(url, "sys.a", a[0], timeout=TIMEOUT) as ca, \
                VxpClient(url, "sys.b", b[0], timeout=TIMEOUT) as cb, \
                aiohttp.ClientSession() as http:
            doc_id = await ca.send_edoc(EDOC, from_=G22, to=[H41])
            async with http.post(url + "/_control", json={"action": "fault", "kind": "fail",
                                                          "error_code": "unavailable"}):
                pass
            with pytest.raises(E.VxpRetryableFail):
                await cb.get_received_edoc_list()
            assert [i.doc_id for i in await cb.get_received_edoc_list()] == [doc_id]
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
