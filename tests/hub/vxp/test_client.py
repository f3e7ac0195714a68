"""hub.vxp.client end to end against the fake platform (a real aiohttp server on 127.0.0.1)."""
from __future__ import annotations

import socket
import time

import pytest
from vxp_support import EDOC, STATUS, SYSTEMS, TIMEOUT, make_client, make_platform

from hub.clock import ManualClock
from hub.errors import PermanentDeliveryError, TemporaryDeliveryError
from hub.sim.vxp_platform import FakePlatform
from hub.vxp import errors as E
from hub.vxp.client import VxpClient

G22, H41, H14, G17 = "000.00.00.G22", "000.00.00.H41", "000.00.00.H14", "000.00.00.G17"


async def test_a_sends_b_lists_fetches_confirms(platform: FakePlatform, client_a: VxpClient,
                                                client_b: VxpClient) -> None:
    doc_id = await client_a.send_edoc(EDOC, from_=G22)

    items = await client_b.get_received_edoc_list()
    assert [i.doc_id for i in items] == [doc_id]
    assert (items[0].from_, items[0].to, items[0].status) == (G22, f"{H41},{H14}", "initial")
    assert items[0].message_type == "edoc" and items[0].created_time
    assert await client_b.count_receive_edoc() == 1
    assert await client_b.get_edoc(doc_id) == EDOC
    assert await client_b.download_edoc(doc_id) == EDOC

    await client_b.update_status(doc_id, "done")
    assert await client_b.get_received_edoc_list() == []
    assert await client_b.count_receive_edoc() == 0

    sent = await client_a.get_sent_edoc_list(doc_id)
    assert {(s.to_code, s.receive_status) for s in sent} == {
        (H41, "done"), (H14, "done"), (G17, "initial")}
    assert sent[0].notation == "7816/VPCP-TTĐT" and sent[0].sender_doc_id == doc_id
    # One delivery per recipient system (sys.b holds two of the organs), none twice.
    assert platform.counters.deliveries[doc_id] == 2
    assert platform.counters.mac_failures == 0


async def test_status_messages_have_their_own_mailbox(client_a: VxpClient,
                                                      client_b: VxpClient) -> None:
    # Given a status from H41 (sys.b) answering G22 (sys.a): it has no To, only ResponseFor
    doc_id = await client_b.send_edoc(STATUS, from_=H41, messagetype="status")
    assert await client_a.get_received_edoc_list("edoc") == []
    assert [i.doc_id for i in await client_a.get_received_edoc_list("status")] == [doc_id]
    assert await client_a.count_receive_status() == 1
    assert await client_a.get_edoc(doc_id) == STATUS


async def test_requests_have_the_sdk_shapes(platform: FakePlatform, client_a: VxpClient,
                                            client_b: VxpClient) -> None:
    doc_id = await client_a.send_edoc(EDOC, from_=G22, to=[H41])
    await client_b.get_received_edoc_list()
    await client_b.get_edoc(doc_id)
    await client_b.download_edoc(doc_id)
    send, listing, get, download = platform.requests
    assert send.body == EDOC + b"\r\n"
    assert send.headers["Content-Type"] == "application/octet-stream"
    assert send.headers["XroadVnpt-to"] == '[{"OrganId":"000.00.00.H41"}]'
    assert send.headers["User-Agent"] == "JAVASDKAgent/1.0.0 XRoad/VPCP"
    assert send.headers["XroadVnpt-version"] == "3.0.201608"
    assert (listing.body, listing.headers["Content-Length"]) == (b"", "0")
    assert listing.headers["Content-Type"] == "application/json"
    assert (get.body, get.headers.get("Expect")) == (b"{}", "100-continue")
    assert get.headers["XroadVnpt-filePath"] == "xml"
    assert (download.method, download.body) == ("GET", b"")
    assert all("Authorization" not in r.headers for r in platform.requests)


async def test_reused_sdk_object_imitation(platform: FakePlatform) -> None:
    # Given a client imitating one SDK service object: frozen timestamp, names that accumulate
    async with make_client(platform, "sys.a", accumulate_headers=True) as a, \
            make_client(platform, "sys.b", accumulate_headers=True) as b:
        doc_id = await a.send_edoc(EDOC, from_=G22)
        await a.get_received_edoc_list()
        await b.get_received_edoc_list()
        await b.update_status(doc_id, "done", key="docid")
        assert await b.get_received_edoc_list() == []
    send, a_list = platform.requests[0], platform.requests[1]
    assert "hash-file" in a_list.headers["XroadVnpt-sign-header-key"].split(";")
    assert a_list.headers["XroadVnpt-from"] == G22
    assert a_list.headers["XroadVnpt-timestamp"] == send.headers["XroadVnpt-timestamp"]
    assert platform.requests[3].headers["XroadVnpt-docid"] == doc_id


async def test_catalogue_calls(client_a: VxpClient) -> None:
    agencies = await client_a.get_agencies_list()
    assert {a.code for a in agencies} >= {G22, H41, H14, G17}
    assert all(a.name and a.id for a in agencies)
    assert {a.code102 for a in await client_a.get_agencies_list_qd20(1)} >= {G22}
    units = await client_a.get_synchronize_unit()
    assert {(u.code, u.center_code) for u in units} >= {(G22, "sys.a"), (H41, "sys.b")}
    assert all(u.version == 1 and u.deleted is False and u.is_agency is True for u in units)


# ---------------------------------------------------------------- failures

async def raises(cls: type[E.VxpError], call: object) -> E.VxpError:
    started = time.monotonic()
    with pytest.raises(cls) as info:
        await call  # type: ignore[misc]
    assert time.monotonic() - started < TIMEOUT + 1.0
    return info.value


async def test_timeout_is_temporary(platform: FakePlatform, client_b: VxpClient) -> None:
    platform.fail("timeout", "getReceivedEdocList", delay=5)
    err = await raises(E.VxpTimeoutError, client_b.get_received_edoc_list())
    assert err.temporary and isinstance(err, TemporaryDeliveryError)
    assert err.operation == "getReceivedEdocList"
    assert await client_b.get_received_edoc_list() == []     # count 1: the next call is fine


async def test_server_errors_and_garbage_are_temporary(platform: FakePlatform,
                                                       client_b: VxpClient) -> None:
    platform.fail("http_error", status=503)
    assert (await raises(E.VxpServerError, client_b.count_receive_edoc())).temporary
    platform.fail("not_json")
    assert (await raises(E.VxpBadResponseError, client_b.count_receive_edoc())).temporary
    platform.fail("fail", error_code="internal_error")
    err = await raises(E.VxpRetryableFail, client_b.count_receive_edoc())
    assert err.temporary and err.error_code == "internal_error"


async def test_refusals_are_permanent(platform: FakePlatform, client_b: VxpClient) -> None:
    platform.fail("fail", "getEdoc", error_code="9")
    err = await raises(E.VxpRefusedError, client_b.get_edoc("x"))
    assert not err.temporary and isinstance(err, PermanentDeliveryError)
    assert err.error_code == "9"
    platform.fail("http_error", status=404)
    assert not (await raises(E.VxpHttpError, client_b.get_edoc("x"))).temporary
    # Without a fault: the platform's own refusal (a document that is not ours).
    assert (await raises(E.VxpRefusedError, client_b.get_edoc("nope"))).error_code == "not_found"


async def test_retryable_codes_are_configurable(platform: FakePlatform) -> None:
    async with make_client(platform, "sys.b", retryable_codes={"9"}) as b:
        platform.fail("fail", error_code="9")
        await raises(E.VxpRetryableFail, b.count_receive_edoc())
        platform.fail("fail", error_code="internal_error")
        await raises(E.VxpRefusedError, b.count_receive_edoc())


async def test_bad_secret_is_a_permanent_bad_mac(platform: FakePlatform) -> None:
    async with VxpClient(platform.url, "sys.a", "not-the-secret", timeout=TIMEOUT) as a:
        err = await raises(E.VxpRefusedError, a.get_agencies_list())
    assert err.error_code == "bad_mac" and err.details["http_status"] == 403
    assert platform.counters.mac_failures == 1


async def test_slow_platform_within_and_beyond_the_timeout(platform: FakePlatform,
                                                           client_b: VxpClient) -> None:
    platform.fail("slow", delay=0.2)
    started = time.monotonic()
    assert await client_b.count_receive_edoc() == 0
    assert time.monotonic() - started >= 0.2
    platform.fail("slow", delay=3)
    await raises(E.VxpTimeoutError, client_b.count_receive_edoc())


async def test_duplicate_listing_is_collapsed(platform: FakePlatform, client_a: VxpClient,
                                              client_b: VxpClient) -> None:
    first = await client_a.send_edoc(EDOC, from_=G22)
    second = platform.inject(EDOC)
    platform.fail("duplicate_list", "getReceivedEdocList")
    assert [i.doc_id for i in await client_b.get_received_edoc_list()] == [first, second]


async def test_unreachable_platform_is_a_connection_error() -> None:
    with socket.socket() as s:           # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with VxpClient(f"http://127.0.0.1:{port}", "sys.a", "x", timeout=TIMEOUT) as a:
        err = await raises(E.VxpConnectionError, a.get_agencies_list())
    assert err.temporary


async def test_stale_frozen_timestamp_is_refused_permanently() -> None:
    clock = ManualClock()
    platform = await make_platform(clock=clock, max_age=3600)
    try:
        async with make_client(platform, "sys.a", clock=clock, frozen_timestamp=True) as a:
            await a.get_agencies_list()
            clock.advance(3599)
            await a.get_agencies_list()       # an hour-old frozen stamp is still fine
            clock.advance(2)
            err = await raises(E.VxpRefusedError, a.get_agencies_list())
        assert err.error_code == "stale_timestamp"
    finally:
        await platform.close()


# ---------------------------------------------------------------- OAuth2 gateway

async def test_expired_token_is_renewed_and_the_call_retried_once(gateway: FakePlatform) -> None:
    async with make_client(gateway, "sys.b") as b:
        assert await b.count_receive_edoc() == 0
        gateway.expire_tokens()
        assert await b.count_receive_edoc() == 0
    # Given / Then: two tokens; the second call was sent twice (401, then with the new token)
    assert gateway.counters.tokens_issued == 2
    assert gateway.counters.calls["countReceiveEdoc"] == 3
    assert all(r.headers["Authorization"].startswith("Bearer ") for r in gateway.requests)


async def test_token_is_cached_until_shortly_before_expiry() -> None:
    clock = ManualClock()
    gateway = await make_platform(clock=clock, oauth_clients={"hub-client": "hub-client-secret"},
                                  token_lifetime=600)
    try:
        async with make_client(gateway, "sys.b", clock=clock) as b:
            await b.count_receive_edoc()
            clock.advance(500)
            await b.count_receive_edoc()
            assert gateway.counters.tokens_issued == 1
            clock.advance(80)                  # within the 30 s margin: renewed before use
            await b.count_receive_edoc()
        assert gateway.counters.tokens_issued == 2
        assert gateway.counters.calls["countReceiveEdoc"] == 3   # never a 401
    finally:
        await gateway.close()


async def test_token_refused_or_useless_is_permanent(gateway: FakePlatform) -> None:
    async with make_client(gateway, "sys.b", token_url=gateway.token_url, client_id="hub-client",
                           client_secret="wrong") as b:
        err = await raises(E.VxpAuthRejectedError, b.count_receive_edoc())
    assert err.operation == "token" and gateway.counters.token_refusals == 1
    # A token that is refused even when fresh: one retry, then a permanent error.
    gateway.tokens.lifetime = 0  # type: ignore[union-attr]
    async with make_client(gateway, "sys.b") as b:
        await raises(E.VxpAuthRejectedError, b.count_receive_edoc())
    assert gateway.counters.tokens_issued == 2
    # Without OAuth2 configured, a 401 is refused credentials.
    async with VxpClient(gateway.url, "sys.b", SYSTEMS["sys.b"][0], timeout=TIMEOUT) as plain:
        await raises(E.VxpAuthRejectedError, plain.count_receive_edoc())
