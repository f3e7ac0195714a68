"""The provincial adapter against the fake VXP platform, both ways, end to end.

A real hub (``create_app``) runs a real ``ProvincialAdapter`` on route
``provincial`` against a real ``FakePlatform`` on 127.0.0.1.  The district hub
is one system on the platform (it speaks for the district's units and the
hub itself); Sở Nội vụ is another, driven by a real ``VxpClient`` as the
department's document system would.  Every scenario ends by counting: the
platform's sends, mailbox insertions, fetches and confirmations per DocId,
and the hub's inboxes, so that nothing is lost and nothing arrives twice.
"""
from __future__ import annotations

import dataclasses
import stat
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography import x509
from lxml import etree

from adapters.base import parse_options
from adapters.mailbox import MailboxAdapter
from adapters.provincial import ProvincialAdapter, ProvincialOptions
from hub.api.app import HUB, create_app
from hub.crypto.signing import verify_hop
from hub.edxml import samples
from hub.errors import ConfigError
from hub.sim.vxp_platform import FakePlatform, start_platform
from hub.vxp.client import VxpClient
from support import AN_BINH, HUB_ID, MAU_A, SO_NOIVU, VP_UBND, eventually, submit

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
DS = "http://www.w3.org/2000/09/xmldsig#"
SO_TUPHAP = "000.00.03.H63"   # a department in the directory with no system on the platform
HUB_SYSTEM, HUB_SECRET = "hub.vanyen", "hub-secret-7c1d"
DEPT_SYSTEM, DEPT_SECRET = "sys.sonoivu", "sonoivu-secret-42ab"
OAUTH = {"lienthong-vanyen": "gateway-secret-9e"}
TIMEOUT = "400ms"     # every platform call of the hub ends within it
QUICK = {"minimal_backoff": "100ms", "maximal_backoff": "200ms", "queue_run_delay": "100ms"}


# ---------------------------------------------------------------- fixtures

async def make_platform(**options: Any) -> FakePlatform:
    return await start_platform("127.0.0.1", 0, systems=[
        (HUB_SYSTEM, HUB_SECRET, [MAU_A, AN_BINH, VP_UBND, HUB_ID]),
        (DEPT_SYSTEM, DEPT_SECRET, [SO_NOIVU])], **options)


@pytest.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    p = await make_platform()
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def gateway() -> AsyncIterator[FakePlatform]:
    p = await make_platform(oauth_clients=OAUTH, token_lifetime=600)
    try:
        yield p
    finally:
        await p.close()


class Scene:
    """The hub, the platform, the department's system and the commune, in one place."""

    def __init__(self, client: Any, platform: FakePlatform, dept: VxpClient) -> None:
        self.client = client
        self.hub = client.app[HUB]
        self.platform = platform
        self.dept = dept
        self.adapter: ProvincialAdapter = self.hub.adapters["provincial"]

    def auth(self, organ: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.hub.tokens.issue(organ)}"}

    async def submit(self, organ: str, raw: bytes) -> dict[str, Any]:
        return await submit(self.client, self.auth, organ, raw)

    async def inbox(self, organ: str) -> list[dict[str, Any]]:
        resp = await self.client.get("/v1/inbox", headers=self.auth(organ))
        return (await resp.json())["items"]

    async def inbox_has(self, organ: str, n: int = 1, what: str = "") -> list[dict[str, Any]]:
        async def check():
            items = await self.inbox(organ)
            return items if len(items) >= n else None
        return await eventually(check, what=what or f"{n} item(s) in the inbox of {organ}")

    async def fetch(self, organ: str, item_id: str) -> bytes:
        return await (await self.client.get(f"/v1/inbox/{item_id}", headers=self.auth(organ))).read()

    async def envelope(self, organ: str, message_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"/v1/envelopes/{message_id}", headers=self.auth(organ))
        return await resp.json()

    async def state(self, organ: str, message_id: str, wanted: str) -> dict[str, Any]:
        async def check():
            env = await self.envelope(organ, message_id)
            return env if all(d["state"] == wanted for d in env["deliveries"]) else None
        return await eventually(check, what=f"{message_id} {wanted}")

    async def mailbox(self, messagetype: str = "edoc", n: int = 1) -> list[Any]:
        """The department's waiting items on the platform, once there are ``n``."""
        async def check():
            items = await self.dept.get_received_edoc_list(messagetype)
            return items if len(items) >= n else None
        return await eventually(check, what=f"{n} {messagetype} in the department's mailbox")

    def confirmed(self, doc_id: str, status: str = "done") -> int:
        return self.platform.counters.status_updates[f"{HUB_SYSTEM} {doc_id} {status}"]

    def fetched(self, doc_id: str) -> int:
        return self.platform.counters.fetches[f"{HUB_SYSTEM} {doc_id}"]

    def hub_mailbox(self, messagetype: str = "edoc") -> list[Any]:
        return self.platform.state.mailbox(HUB_SYSTEM, messagetype)


@pytest.fixture
async def scene(aiohttp_client, make_settings):
    """``await scene(platform, settings={...}, **adapter_options)`` → a running Scene."""
    made: list[VxpClient] = []

    async def make(platform: FakePlatform, *, settings: dict[str, Any] | None = None,
                   **options: Any) -> Scene:
        opts = {"url": platform.url, "system_id": HUB_SYSTEM, "secret": HUB_SECRET,
                "poll_interval": "100ms", "timeout": TIMEOUT, **options}
        adapters = {"mailbox": MailboxAdapter("mailbox"),
                    "provincial": ProvincialAdapter("provincial", opts)}
        client = await aiohttp_client(create_app(make_settings(**{**QUICK, **(settings or {})}),
                                                 adapters=adapters))
        token = {} if platform.tokens is None else {
            "token_url": platform.token_url, "client_id": "lienthong-vanyen",
            "client_secret": OAUTH["lienthong-vanyen"]}
        dept = VxpClient(platform.url, DEPT_SYSTEM, DEPT_SECRET, timeout=2.0, **token)
        made.append(dept)
        return Scene(client, platform, dept)
    yield make
    for dept in made:
        await dept.close()


def c14n(root: etree._Element) -> bytes:
    return etree.tostring(root, method="c14n", exclusive=True)


def original_of(wire: bytes) -> bytes:
    """The wire form without the hub's hop signature and TraceHeader (canonical form)."""
    root = etree.fromstring(wire)
    hops = [s for s in root.iter(f"{{{DS}}}Signature") if (s.get("Id") or "").startswith("lienthong-hop")]
    assert len(hops) == 1, "one hop signature"
    hops[0].getparent().remove(hops[0])
    trace = root.findall(f".//{{{NS}}}TraceHeaderList/{{{NS}}}TraceHeader")[-1]
    assert trace.findtext(f"{{{NS}}}OrganId") == HUB_ID
    trace_list = trace.getparent()
    trace_list.remove(trace)
    if len(trace_list) == 0:   # the hub started the list (a status carries none)
        trace_list.getparent().remove(trace_list)
    return c14n(root)


def hub_cert(dev_keys) -> x509.Certificate:
    return x509.load_pem_x509_certificate((dev_keys / "hub.pem").read_bytes())


# ---------------------------------------------------------------- both ways

async def test_a_commune_and_a_department_exchange_documents_and_statuses(platform, scene, dev_keys):
    s = await scene(platform)
    # Given: Mậu A sends a document to Sở Nội vụ
    raw = samples.edoc(MAU_A, [SO_NOIVU], 101)
    sent = await s.submit(MAU_A, raw)
    # Then: it arrives in the department's system's mailbox, hop-signed by the hub
    [item] = await s.mailbox("edoc")
    assert item.from_ == MAU_A and item.to == SO_NOIVU
    wire = await s.dept.get_edoc(item.doc_id)
    assert verify_hop(wire, hub_cert(dev_keys))
    assert original_of(wire) == c14n(etree.fromstring(raw))   # same document, hub's hop added
    await s.state(MAU_A, sent["id"], "delivered")
    await s.dept.update_status(item.doc_id, "done")
    # When: the department answers with status 01 through the platform
    status01 = samples.status(SO_NOIVU, MAU_A, sent["document_id"], "01")
    status_doc = await s.dept.send_edoc(status01, SO_NOIVU, "status")
    # Then: it reaches Mậu A's inbox, and the hub confirms it to the platform
    [got] = await s.inbox_has(MAU_A, what="the department's status in Mậu A's inbox")
    assert got["kind"] == "status" and got["status_code"] == "01" and got["sender"] == SO_NOIVU
    assert await s.fetch(MAU_A, got["id"]) == status01
    await eventually(lambda: s.confirmed(status_doc) == 1, what="status confirmed done")
    env = await s.envelope(MAU_A, sent["id"])
    assert [st["status_code"] for st in env["statuses"]] == ["01"]

    # Given: the department sends a document to Mậu A through the platform
    down = samples.edoc(SO_NOIVU, [MAU_A], 102, sender_name="Sở Nội vụ")
    doc_id = await s.dept.send_edoc(down, SO_NOIVU, "edoc")
    # Then: it lands in Mậu A's inbox, the same bytes, taken in as the provincial relay
    items = await s.inbox_has(MAU_A, 2, what="the department's document in Mậu A's inbox")
    [edoc] = [i for i in items if i["kind"] == "edoc"]
    assert edoc["sender"] == SO_NOIVU and await s.fetch(MAU_A, edoc["id"]) == down
    await eventually(lambda: s.confirmed(doc_id) == 1, what="document confirmed done")
    assert (await s.envelope(MAU_A, edoc["id"]))["origin"] == f"vxp:provincial:{doc_id}"
    # When: Mậu A answers with status 03 (accepted)
    status03 = samples.status(MAU_A, SO_NOIVU, edoc["document_id"], "03", description="Đã tiếp nhận")
    await s.submit(MAU_A, status03)
    # Then: it goes back to the department through the platform, as a status message
    [back] = await s.mailbox("status")
    assert back.from_ == MAU_A and back.message_type == "status"
    assert original_of(await s.dept.get_edoc(back.doc_id)) == c14n(etree.fromstring(status03))

    # And: each went across exactly once, and nothing waits in the hub's mailbox
    sends = platform.counters.sends
    assert sends[sent["document_id"]] == 1 and sends[edoc["document_id"]] == 1
    assert sorted(platform.counters.deliveries.values()) == [1, 1, 1, 1]
    assert s.fetched(doc_id) == 1 and s.fetched(status_doc) == 1
    assert s.hub_mailbox("edoc") == [] and s.hub_mailbox("status") == []
    assert len(await s.inbox(MAU_A)) == 2
    health = s.adapter.health()
    assert health["sent"] == 2 and health["taken_in"] == 2 and health["duplicates"] == 0
    assert health["last_poll_at"] and health["last_error"] is None


async def test_a_document_for_two_departments_is_sent_once_to_each(platform, scene):
    s = await scene(platform)
    platform.add_system("sys.sotuphap", "tuphap-secret", [SO_TUPHAP])
    raw = samples.edoc(MAU_A, [SO_NOIVU, SO_TUPHAP], 103)
    sent = await s.submit(MAU_A, raw)
    await s.state(MAU_A, sent["id"], "delivered")
    [item] = await s.mailbox("edoc")
    assert item.to == SO_NOIVU
    # two deliveries, two sends, one mailbox entry per department
    assert platform.counters.sends[sent["document_id"]] == 2
    assert sorted(platform.counters.deliveries.values()) == [1, 1]
    assert len(platform.state.mailbox("sys.sotuphap", "edoc")) == 1


# ---------------------------------------------------------------- egress trouble

async def test_timeouts_defer_and_nothing_is_sent_twice(platform, scene):
    s = await scene(platform)
    # Given: the platform hangs on the first two sendEdoc calls (longer than the timeout)
    platform.fail("timeout", "sendEdoc", count=2, delay=2.0)
    sent = await s.submit(MAU_A, samples.edoc(MAU_A, [SO_NOIVU], 111))
    env = await s.state(MAU_A, sent["id"], "delivered")
    # Then: it was deferred twice, delivered on the third attempt, sent once
    assert env["deliveries"][0]["attempts"] == 3
    assert platform.counters.sends[sent["document_id"]] == 1
    assert len(await s.mailbox("edoc")) == 1
    assert s.adapter.health()["errors.vxp_timeout"] == 2
    # And: a poll that times out is only a missed poll
    platform.fail("timeout", "getReceivedEdocList", count=2, delay=2.0)
    doc_id = await s.dept.send_edoc(samples.edoc(SO_NOIVU, [MAU_A], 112), SO_NOIVU)
    await s.inbox_has(MAU_A)
    await eventually(lambda: s.confirmed(doc_id) == 1)
    assert s.fetched(doc_id) == 1 and len(await s.inbox(MAU_A)) == 1


async def test_a_lost_send_answer_is_sent_again_and_the_platform_lists_it_twice(platform, scene):
    # At-least-once, as the adapter's docstring says: the platform took the first
    # send, the answer was lost, the hub sent again; the platform has no way to tell.
    s = await scene(platform)
    platform.fail("timeout", "sendEdoc", delay=2.0, after=True)
    sent = await s.submit(MAU_A, samples.edoc(MAU_A, [SO_NOIVU], 113))
    env = await s.state(MAU_A, sent["id"], "delivered")
    assert env["deliveries"][0]["attempts"] == 2
    assert platform.counters.sends[sent["document_id"]] == 2
    items = await s.mailbox("edoc", 2)
    docs = [etree.fromstring(await s.dept.get_edoc(i.doc_id)) for i in items]
    # the same DocumentId twice: the department's system deduplicates by sender + DocumentId
    assert {d.findtext(f".//{{{NS}}}MessageHeader/{{{NS}}}DocumentId") for d in docs} == \
        {sent["document_id"]}


async def test_5xx_answers_defer_both_ways(platform, scene):
    s = await scene(platform)
    platform.fail("http_error", "sendEdoc", count=2, status=503)
    sent = await s.submit(MAU_A, samples.edoc(MAU_A, [SO_NOIVU], 121))
    await s.state(MAU_A, sent["id"], "delivered")
    assert platform.counters.sends[sent["document_id"]] == 1
    assert s.adapter.health()["errors.http_503"] == 2
    # ingest: a 502 on getEdoc leaves the item listed; the next poll takes it
    platform.fail("http_error", "getEdoc", status=502)
    doc_id = await s.dept.send_edoc(samples.edoc(SO_NOIVU, [MAU_A], 122), SO_NOIVU)
    await s.inbox_has(MAU_A)
    await eventually(lambda: s.confirmed(doc_id) == 1)
    assert s.fetched(doc_id) == 1   # the 502 answered before the platform read it
    assert len(await s.inbox(MAU_A)) == 1 and s.adapter.health()["errors.http_502"] == 1


async def test_fail_answers_retryable_defer_and_permanent_refuse(platform, scene):
    s = await scene(platform)
    # Given: a FAIL whose ErrorCode is transient ("busy")
    platform.fail("fail", "sendEdoc", error_code="busy")
    sent = await s.submit(MAU_A, samples.edoc(MAU_A, [SO_NOIVU], 131))
    env = await s.state(MAU_A, sent["id"], "delivered")
    assert env["deliveries"][0]["attempts"] == 2
    assert platform.counters.sends[sent["document_id"]] == 1
    # Given: a FAIL with a code the hub does not know: a refusal, not retried
    platform.fail("fail", "sendEdoc", error_code="invalid_doc")
    refused = await s.submit(MAU_A, samples.edoc(MAU_A, [SO_NOIVU], 132))
    env = await s.state(MAU_A, refused["id"], "failed")
    assert env["deliveries"][0]["attempts"] == 1
    assert "invalid_doc" in env["deliveries"][0]["last_error"]
    # Given: a department the platform has no system for: the platform's own refusal
    unknown = await s.submit(MAU_A, samples.edoc(MAU_A, [SO_TUPHAP], 133))
    env = await s.state(MAU_A, unknown["id"], "failed")
    assert "unknown_recipient" in env["deliveries"][0]["last_error"]
    # Then: the sender is told of both failures (status 02 from the hub)
    notices = await s.inbox_has(MAU_A, 2, what="two failure notices for Mậu A")
    assert {(n["kind"], n["status_code"], n["sender"]) for n in notices} == {("status", "02", HUB_ID)}
    assert platform.counters.sends[refused["document_id"]] == 0
    health = s.adapter.health()
    assert health["errors.busy"] == 1 and health["errors.invalid_doc"] == 1
    assert health["errors.unknown_recipient"] == 1
    # And: a transient FAIL on the listing only skips one poll
    platform.fail("fail", "getReceivedEdocList", error_code="unavailable")
    doc_id = await s.dept.send_edoc(samples.edoc(SO_NOIVU, [MAU_A], 134), SO_NOIVU)
    await eventually(lambda: s.confirmed(doc_id) == 1)
    assert s.fetched(doc_id) == 1


async def test_a_body_that_is_not_json_is_temporary_both_ways(platform, scene):
    s = await scene(platform)
    # a listing answered with an HTML page is not an empty mailbox
    platform.fail("not_json", "getReceivedEdocList", count=2)
    doc_id = await s.dept.send_edoc(samples.edoc(SO_NOIVU, [MAU_A], 141), SO_NOIVU)
    platform.fail("not_json", "sendEdoc")
    sent = await s.submit(MAU_A, samples.edoc(MAU_A, [SO_NOIVU], 142))
    await s.state(MAU_A, sent["id"], "delivered")
    await eventually(lambda: s.confirmed(doc_id) == 1)
    assert platform.counters.sends[sent["document_id"]] == 1 and s.fetched(doc_id) == 1
    assert len(await s.inbox(MAU_A)) == 1
    assert s.adapter.health()["errors.vxp_bad_response"] == 3


async def test_an_expired_gateway_token_is_renewed_and_the_call_retried(gateway, scene):
    s = await scene(gateway, token_url=gateway.token_url, client_id="lienthong-vanyen",
                    client_secret=OAUTH["lienthong-vanyen"])
    sent = await s.submit(MAU_A, samples.edoc(MAU_A, [SO_NOIVU], 151))
    await s.state(MAU_A, sent["id"], "delivered")
    issued = gateway.counters.tokens_issued
    # When: the gateway forgets every token (as at its own restart, or on expiry)
    gateway.expire_tokens()
    sent2 = await s.submit(MAU_A, samples.edoc(MAU_A, [SO_NOIVU], 152))
    env = await s.state(MAU_A, sent2["id"], "delivered")
    # Then: the 401 made the hub fetch a new token and retry in the same attempt
    assert env["deliveries"][0]["attempts"] == 1
    assert gateway.counters.tokens_issued > issued
    assert gateway.counters.sends[sent2["document_id"]] == 1
    # And: polling goes on with the new token
    doc_id = await s.dept.send_edoc(samples.edoc(SO_NOIVU, [MAU_A], 153), SO_NOIVU)
    await eventually(lambda: s.confirmed(doc_id) == 1)
    assert s.adapter.health()["last_error"] is None


async def test_a_platform_outage_shows_in_the_adapters_health_and_nothing_is_lost(platform, scene):
    s = await scene(platform)
    doc_id = await s.dept.send_edoc(samples.edoc(SO_NOIVU, [MAU_A], 155), SO_NOIVU)
    # Given: every listing fails (the platform's front answers 502) until told otherwise
    platform.fail("http_error", "getReceivedEdocList", count=None, status=502)
    operator = {"Authorization": f"Bearer {s.hub.tokens.issue(HUB_ID, 'operator')}"}

    async def provincial():
        items = (await (await s.client.get("/v1/adapters", headers=operator)).json())["items"]
        [mine] = [a for a in items if a["name"] == "provincial"]
        return mine if mine["health"] != "ok" else None
    # Then: after a few failed polls the route shows degraded, with the error and its code
    seen = await eventually(provincial, what="the provincial adapter not ok")
    assert seen["mode"] == "deliver+ingest" and "HTTP 502" in seen["last_error"]
    assert seen["errors_by_code"]["http_502"] >= 3 and seen["ingest_restarts"] >= 1
    assert s.fetched(doc_id) == 0
    # When: the platform answers again, the document is taken in once, after the restart delay
    platform.faults.clear()
    await eventually(lambda: s.confirmed(doc_id) == 1, what="taken in after the outage")
    assert s.fetched(doc_id) == 1 and len(await s.inbox(MAU_A)) == 1


# ---------------------------------------------------------------- ingest: listed again

async def test_the_same_document_listed_twice_is_one_message_confirmed_again(platform, scene):
    s = await scene(platform)
    raw = samples.edoc(SO_NOIVU, [MAU_A], 161)
    # Given: a listing that carries every item twice
    platform.fail("duplicate_list", "getReceivedEdocList", count=None)
    first = await s.dept.send_edoc(raw, SO_NOIVU)
    await eventually(lambda: s.confirmed(first) == 1)
    assert s.fetched(first) == 1
    platform.faults.clear()
    # Given: the department's system sends the same document again (a new DocId)
    second = await s.dept.send_edoc(raw, SO_NOIVU)
    await eventually(lambda: s.confirmed(second) == 1)
    # Then: one message in Mậu A's inbox, both DocIds confirmed, no second delivery
    [item] = await s.inbox(MAU_A)
    assert await s.fetch(MAU_A, item["id"]) == raw
    assert s.adapter.health()["duplicates"] == 1 and s.adapter.health()["taken_in"] == 1
    assert s.hub_mailbox() == []


async def test_a_lost_update_status_is_taken_as_the_same_message(platform, scene):
    s = await scene(platform)
    # Given: updateStatus fails before the platform records it, twice
    platform.fail("http_error", "updateStatus", count=2, status=503)
    doc_id = await s.dept.send_edoc(samples.edoc(SO_NOIVU, [MAU_A], 171), SO_NOIVU)
    # Then: the platform keeps listing it; the hub takes it as the same message, confirms again
    await eventually(lambda: s.confirmed(doc_id) == 1, what="confirmed at the third try")
    assert s.fetched(doc_id) == 3
    [item] = await s.inbox(MAU_A)
    assert s.adapter.health()["duplicates"] == 2
    # Given: updateStatus recorded but its answer lost: done on the platform, nothing more
    platform.fail("timeout", "updateStatus", delay=2.0, after=True)
    doc2 = await s.dept.send_edoc(samples.edoc(SO_NOIVU, [MAU_A], 172), SO_NOIVU)
    await eventually(lambda: s.confirmed(doc2) == 1)
    await s.inbox_has(MAU_A, 2)
    assert s.fetched(doc2) == 1 and len(await s.inbox(MAU_A)) == 2
    assert s.hub_mailbox() == []


async def test_refused_documents_are_confirmed_fail_and_counted(platform, scene):
    s = await scene(platform)
    # Given: a document the platform carries but the provincial route may not speak for
    # (From one of the district's own communes), and a status about an unknown document
    spoof = platform.inject(samples.edoc(MAU_A, [VP_UBND], 181))
    orphan = platform.inject(samples.status(SO_NOIVU, MAU_A, f"{MAU_A},2026/11/20,9999/UBND"),
                             "status")
    await eventually(lambda: s.confirmed(spoof, "fail") == 1 and s.confirmed(orphan, "fail") == 1)
    assert await s.inbox(VP_UBND) == [] and await s.inbox(MAU_A) == []
    assert s.adapter.health()["refused_in"] == 2
    async def refusals():
        events = await s.hub.spool.events(0, 100, kinds=["refused"])
        return events if len(events) >= 2 else None
    refused = await eventually(refusals, what="both refusals in the audit log")
    assert {(e.detail["code"], e.detail["route"]) for e in refused} == \
        {("route_not_allowed", "provincial"), ("unknown_document", "provincial")}
    assert s.hub_mailbox("edoc") == [] and s.hub_mailbox("status") == []


async def test_what_the_platform_brings_is_delivered_only_to_the_districts_own_units(
        platform, scene):
    s = await scene(platform)
    yen_the = "000.01.44.H63"   # a commune of Lục Yên: the platform sends Lục Yên its own copy
    # Given: a document for the peer district's commune alone, in this hub's mailbox
    # because the platform's directory had that commune under the wrong system
    ours = platform.state.systems[HUB_SYSTEM]
    platform.state.systems[HUB_SYSTEM] = dataclasses.replace(ours, organs=ours.organs | {yen_the})
    theirs = platform.inject(samples.edoc(SO_NOIVU, [yen_the], 186))
    platform.state.systems[HUB_SYSTEM] = ours
    # and, once it is put right, a department's document for a commune of this
    # district and one of the peer district
    platform.add_system("sys.lucyen", "lucyen-secret", [yen_the])
    both = await s.dept.send_edoc(samples.edoc(SO_NOIVU, [MAU_A, yen_the], 185), SO_NOIVU)
    # Then: the first reaches Mậu A and is not passed on to Lục Yên (split horizon)
    await eventually(lambda: s.confirmed(both) == 1 and s.confirmed(theirs, "fail") == 1)
    [item] = await s.inbox(MAU_A)
    held = await s.hub.spool.deliveries(item["id"])
    assert [(d["recipient"], d["route"]) for d in held] == [(MAU_A, "mailbox")]
    # and the second is refused: nothing of it is this hub's to deliver
    refused = await s.hub.spool.events(0, 100, kinds=["refused"])
    assert [e.detail["code"] for e in refused] == ["not_served"]
    assert "000.01.44.H63 routes to peer.lucyen" in refused[0].detail["message"]
    assert len(platform.state.mailbox("sys.lucyen", "edoc")) == 1   # Lục Yên's own copy


async def test_backpressure_leaves_documents_on_the_platform_until_it_clears(platform, scene):
    s = await scene(platform, settings={"min_free_space": "1000000GiB"})
    doc_id = await s.dept.send_edoc(samples.edoc(SO_NOIVU, [MAU_A], 191), SO_NOIVU)
    # the hub refuses new documents for now: fetched, not taken in, not confirmed
    await eventually(lambda: s.fetched(doc_id) >= 2, what="fetched on two polls")
    assert s.confirmed(doc_id) == 0 and s.confirmed(doc_id, "fail") == 0
    assert "spool_full" in (s.adapter.health()["last_error"] or "")
    # When: the pressure clears
    s.hub.settings = s.hub.settings.replace(min_free_space="1KiB")
    assert await s.hub.pressure.refresh() is None
    # Then: it is taken in once and confirmed
    await eventually(lambda: s.confirmed(doc_id) == 1)
    [item] = await s.inbox(MAU_A)
    assert item["sender"] == SO_NOIVU and s.hub_mailbox() == []


async def test_a_slow_platform_gets_one_poll_at_a_time(platform, scene):
    s = await scene(platform)
    # Given: every call takes 150 ms (longer than the poll interval, within the timeout)
    platform.fail("slow", None, count=None, delay=0.15)
    doc_ids = [await s.dept.send_edoc(samples.edoc(SO_NOIVU, [MAU_A], n), SO_NOIVU)
               for n in (201, 202, 203)]
    sent = await s.submit(MAU_A, samples.edoc(MAU_A, [SO_NOIVU], 204))
    await s.state(MAU_A, sent["id"], "delivered")
    await eventually(lambda: all(s.confirmed(d) == 1 for d in doc_ids))
    # Then: polls never overlapped (each item fetched once), and each went across once
    assert [s.fetched(d) for d in doc_ids] == [1, 1, 1]
    assert len(await s.inbox(MAU_A)) == 3
    assert platform.counters.sends[sent["document_id"]] == 1
    assert s.adapter.health()["duplicates"] == 0


# ---------------------------------------------------------------- options

BASE = {"url": "http://127.0.0.1:9100/vxp", "system_id": HUB_SYSTEM}


@pytest.mark.parametrize("raw,message", [
    ({**BASE}, "exactly one of secret and secret_file"),
    ({**BASE, "secret": "s", "secret_file": "/x"}, "exactly one of secret and secret_file"),
    ({**BASE, "secret": "s", "poll_interval": 5}, "poll_interval: a duration needs a unit"),
    ({**BASE, "secret": "s", "token_url": "http://gw/token"}, "missing: client_id, client_secret"),
    ({**BASE, "secret": "s", "url": "127.0.0.1:9100"}, "url must be an http"),
    ({"url": BASE["url"], "secret": "s"}, "needs system_id"),
    ({**BASE, "secret": "s", "colour": "red"}, "unknown key(s) colour"),
    ({**BASE, "secret": "s", "timeout": "0s"}, "timeout must be positive"),
])
def test_options_are_checked_with_the_key_named(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_options(ProvincialAdapter, "provincial", raw)
    assert message in err.value.message and "[adapters.provincial]" in err.value.message


async def test_the_secret_file_is_read_at_start_and_must_be_private(tmp_path, platform):
    path = tmp_path / "vxp.secret"
    path.write_text(HUB_SECRET + "\n")
    path.chmod(0o644)
    adapter = ProvincialAdapter("provincial", {**BASE, "url": platform.url,
                                               "secret_file": str(path)})
    with pytest.raises(ConfigError, match="readable by every user.*chmod 600"):
        await adapter.start()
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    await adapter.start()
    try:
        assert await adapter.client.count_receive_edoc() == 0   # the secret is right
    finally:
        await adapter.stop()
    opts = parse_options(ProvincialAdapter, "provincial", {**BASE, "secret": "s",
                                                           "poll_interval": "250ms"})
    assert isinstance(opts, ProvincialOptions) and opts.poll_interval == 0.25 and opts.timeout == 30
