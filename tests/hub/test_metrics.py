"""GET /metrics: Prometheus text exposition, read back with a small strict parser."""
from __future__ import annotations

import asyncio
import re
import time

import pytest
from support import HUB_ID, MAU_A, SO_NOIVU, VP_UBND, submit

from adapters.mailbox import MailboxAdapter
from adapters.stub import StubAdapter
from hub.edxml import samples
from hub.api.app import HUB, create_app
from hub.metrics import BUCKETS, accepted_at
from spool.ids import new_message_id

XML = {"Content-Type": "application/xml"}
LUC_YEN = "000.00.44.H63"  # a peer district's hub (route peer.lucyen)

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"({_NAME})(?:\{{(.*)\}})? (\S+)\Z")
_LABEL = re.compile(rf'({_NAME})="((?:[^"\\]|\\.)*)"(,|\Z)')


def parse(text: str) -> tuple[dict[str, str], dict[tuple[str, frozenset], float]]:
    """Families (name → type) and samples ((name, labels) → value); asserts the format."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    helps: set[str] = set()
    values: dict[tuple[str, frozenset], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, f"HELP twice for {name}"
            helps.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in {"counter", "gauge", "histogram", "summary", "untyped"}
            assert name not in types, f"TYPE twice for {name}"
            types[name] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, raw_labels, raw_value = m.groups()
            labels = _labels(raw_labels or "")
            family = re.sub(r"_(bucket|sum|count)\Z", "", name)
            assert name in types or types.get(family) == "histogram", f"undeclared: {name}"
            key = (name, frozenset(labels.items()))
            assert key not in values, f"duplicate sample {line!r}"
            values[key] = float(raw_value)  # float() reads +Inf and NaN too
    assert helps == set(types)
    return types, values


def _labels(raw: str) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(raw):
        m = _LABEL.match(raw, pos)
        assert m, f"bad labels {raw!r}"
        out[m.group(1)] = re.sub(r"\\(.)", lambda e: {"n": "\n"}.get(e.group(1), e.group(1)),
                                 m.group(2))
        pos = m.end()
    return out


class Scrape:
    def __init__(self, text: str) -> None:
        self.types, self.values = parse(text)

    def __call__(self, name: str, **labels: str) -> float | None:
        return self.values.get((name, frozenset(labels.items())))

    def series(self, name: str) -> dict[frozenset, float]:
        return {labels: v for (n, labels), v in self.values.items() if n == name}

    def check_histogram(self, name: str, **labels: str) -> tuple[list[float], float]:
        """Buckets are cumulative, end at +Inf and +Inf equals the count; → (counts, count)."""
        buckets = {dict(lbl)["le"]: v for lbl, v in self.series(f"{name}_bucket").items()
                   if {k: x for k, x in lbl if k != "le"} == labels}
        bounds = sorted(buckets, key=float)
        assert [float(b) for b in bounds] == [*BUCKETS, float("inf")]
        assert bounds[-1] == "+Inf"
        counts = [buckets[b] for b in bounds]
        assert counts == sorted(counts), "buckets must be cumulative"
        count = self(f"{name}_count", **labels)
        assert counts[-1] == count
        assert self(f"{name}_sum", **labels) >= 0
        return counts, count


async def scrape(client) -> Scrape:
    resp = await client.get("/metrics")  # no token: metrics are served to the loopback scraper
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return Scrape(await resp.text())


async def scrape_until(client, ready, timeout: float = 5.0) -> Scrape:
    """Scrape until ``ready(m)``: refusals and queue work commit after the HTTP answer."""
    deadline = time.monotonic() + timeout
    while True:
        m = await scrape(client)
        if ready(m):
            return m
        assert time.monotonic() < deadline, "metrics never reached the expected values"
        await asyncio.sleep(0.02)




def test_accepted_at_reads_the_message_id_clock():
    assert accepted_at(new_message_id(1_800_000_000.123)) == pytest.approx(1_800_000_000.123)
    assert accepted_at("not-a-ulid!") is None
    assert accepted_at(None) is None


async def test_fresh_hub_exposes_every_family(client):
    m = await scrape(client)
    ((labels, value),) = m.series("lienthong_build_info").items()
    assert value == 1
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", dict(labels)["version"])
    assert m.types["lienthong_delivery_latency_seconds"] == "histogram"
    assert m.types["lienthong_envelopes_accepted_total"] == "counter"
    assert m.types["lienthong_deliveries"] == "gauge"
    assert m("lienthong_mailbox_waiting") == 0
    assert m("lienthong_oldest_queued_age_seconds") == 0
    assert m.series("lienthong_envelopes_accepted_total") == {}


async def test_counters_and_gauges_after_accepts_refusals_and_an_ack(client, auth):
    # Given: two documents for the office, one acknowledged and answered with a status,
    # and two refusals
    first = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 1))
    await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 2))
    ack = await client.post(f"/v1/inbox/{first['id']}/ack", headers=auth(VP_UBND))
    assert ack.status == 200
    await submit(client, auth, VP_UBND,
                 samples.status(VP_UBND, MAU_A, first["document_id"], "03"))
    await submit(client, auth, VP_UBND, samples.edoc(MAU_A, [VP_UBND], 3), status=403)
    await submit(client, auth, MAU_A, b"<edXML><unclosed></edXML>", status=422)

    # When: Prometheus scrapes
    m = await scrape_until(client, lambda m: len(m.series("lienthong_envelopes_refused_total")) == 2)

    # Then: the counters count what was committed
    assert m("lienthong_envelopes_accepted_total", kind="edoc") == 2
    assert m("lienthong_envelopes_accepted_total", kind="status") == 1
    assert m("lienthong_envelopes_refused_total", code="sender_mismatch") == 1
    assert m("lienthong_envelopes_refused_total", code="xml_malformed") == 1
    assert m("lienthong_statuses_received_total", status_code="03") == 1
    assert m("lienthong_delivery_attempts_total", route="mailbox", outcome="delivered") == 1
    assert m("lienthong_spool_commits_total") >= 1
    assert m("lienthong_spool_committed_operations_total") >= m("lienthong_spool_commits_total")
    # and the gauges what the spool holds: the second document and the status wait
    assert m("lienthong_deliveries", state="delivered", route="mailbox") == 1
    assert m("lienthong_deliveries", state="queued", route="mailbox") == 2
    assert m("lienthong_deliveries", state="failed", route="mailbox") == 0
    assert m("lienthong_mailbox_waiting") == 2
    assert m("lienthong_mailbox_oldest_waiting_age_seconds") >= 0
    assert m.series("lienthong_queue_depth") == {}  # the mailbox is not a push queue
    assert m("lienthong_spool_payload_bytes") > 0
    assert m("lienthong_event_log_last_id") == client.app[HUB].spool.last_event_id
    # the ack's latency is one observation in the mailbox histogram
    _counts, count = m.check_histogram("lienthong_delivery_latency_seconds", route="mailbox")
    assert count == 1
    assert m("lienthong_delivery_latency_seconds_sum", route="mailbox") < 60


async def test_push_routes_attempts_outcomes_and_depth(aiohttp_client, make_settings):
    # Given: the provincial platform accepts, a peer hub refuses, another defers
    adapters = {"mailbox": MailboxAdapter("mailbox", {}),
                "provincial": StubAdapter("provincial", {}),
                "peer.lucyen": StubAdapter("peer.lucyen", {"refuse": True}),
                "peer.yenbinh": StubAdapter("peer.yenbinh", {"fail_times": 5})}
    settings = make_settings(minimal_backoff="600s", maximal_backoff="600s")
    client = await aiohttp_client(create_app(settings, adapters=adapters))
    token = client.app[HUB].tokens.issue(MAU_A)
    raw = samples.edoc(MAU_A, [SO_NOIVU, LUC_YEN, "000.00.50.H63"], 1)
    resp = await client.post("/v1/envelopes", data=raw,
                             headers={"Authorization": f"Bearer {token}", **XML})
    assert resp.status == 202

    # When: the queue manager has made one attempt on each route (a scrape reads the
    # gauges before the counters, so wait for both to show it)
    outcomes = (("provincial", "delivered"), ("peer.lucyen", "failed"), ("peer.yenbinh", "deferred"))

    def settled(m: Scrape) -> bool:
        return all(m("lienthong_delivery_attempts_total", route=r, outcome=o) == 1
                   and m("lienthong_deliveries", state=o, route=r) == 1 for r, o in outcomes)
    m = await scrape_until(client, settled)

    # Then
    for route in ("provincial", "peer.lucyen", "peer.yenbinh"):
        assert m("lienthong_delivery_attempts_total", route=route, outcome="started") == 1
    assert m("lienthong_deliveries", state="delivered", route="provincial") == 1
    assert m("lienthong_deliveries", state="failed", route="peer.lucyen") == 1
    assert m("lienthong_deliveries", state="deferred", route="peer.yenbinh") == 1
    assert m("lienthong_queue_depth", route="peer.yenbinh") == 1
    assert m("lienthong_queue_depth", route="provincial") == 0
    assert m("lienthong_oldest_queued_age_seconds") > 0
    _counts, count = m.check_histogram("lienthong_delivery_latency_seconds", route="provincial")
    assert count == 1
    assert m("lienthong_delivery_latency_seconds_count", route="peer.lucyen") is None


async def test_metrics_need_no_token_but_events_do(client, auth):
    assert (await client.get("/metrics")).status == 200
    assert (await client.get("/v1/events?once=1")).status == 401
    assert (await client.get("/v1/events?once=1", headers=auth(HUB_ID, "operator"))).status == 200
