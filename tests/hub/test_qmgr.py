"""The queue manager: dispatch, backoff, lifetimes, refusals, limits, crash recovery.

A stub adapter stands in for the external system; a manual clock drives
backoff and lifetimes, so nothing here sleeps for long.
"""
from __future__ import annotations

import logging
import sqlite3

import pytest

from adapters.mailbox import MailboxAdapter
from adapters.stub import StubAdapter
from hub.cleanup import accept as cleanup
from hub.edxml import samples
from hub.auth import Identity
from hub.node import open_hub
from hub.qmgr import backoff
from support import MAU_A, SO_NOIVU, VP_UBND, eventually

SO_TAICHINH = "000.00.05.H63"


@pytest.fixture
def stub():
    return StubAdapter("provincial", {})


@pytest.fixture
def queue_settings(make_settings):
    return make_settings(minimal_backoff="60s", maximal_backoff="1000s", maximal_lifetime="1d",
                         destination_concurrency=2, global_concurrency=3)


@pytest.fixture
async def qhub(queue_settings, clock, stub):
    async with open_hub(queue_settings, clock=clock, run_queue=True, queue_auto=False,
                        adapters={"mailbox": MailboxAdapter("mailbox", {}), "provincial": stub}) as hub:
        yield hub


async def send(hub, n: int, recipients=(SO_NOIVU,), sender=MAU_A):
    return await cleanup.accept(hub, samples.edoc(sender, list(recipients), n), Identity(sender, "agency"))


async def run(hub):
    started = await hub.qmgr.scan()
    await hub.qmgr.drain()
    await hub.notices.catch_up()  # failure notices follow the event log
    return started


async def delivery(hub, message_id, recipient=SO_NOIVU):
    return next(d for d in await hub.spool.deliveries(message_id) if d["recipient"] == recipient)


async def inbox_statuses(hub, organ):
    await hub.notices.catch_up()
    return [i for i in await hub.spool.inbox(organ) if i["kind"] == "status"]


def test_backoff_grows_exponentially_within_bounds():
    assert backoff(1, 60, 4000, lambda: 0.0) == 60
    assert backoff(1, 60, 4000, lambda: 1.0) == 60
    assert backoff(3, 60, 4000, lambda: 1.0) == 240
    assert backoff(3, 60, 4000, lambda: 0.0) == 120  # jitter halves at most
    assert backoff(20, 60, 4000, lambda: 1.0) == 4000
    assert backoff(20, 60, 4000, lambda: 0.0) == 2000
    values = {backoff(4, 60, 4000) for _ in range(50)}
    assert len(values) > 1 and all(240 <= v <= 480 for v in values)


async def test_delivered_on_first_attempt(qhub, stub):
    res = await send(qhub, 1)
    assert await run(qhub) == 1
    d = await delivery(qhub, res.id)
    assert (d["state"], d["attempts"]) == ("delivered", 1)
    assert stub.delivered[0].raw == await qhub.spool.payload(
        (await qhub.spool.envelope(res.id))["sha256"])
    assert stub.delivered[0].message_id == res.id


async def test_mailbox_route_is_never_dispatched(qhub, stub):
    await send(qhub, 2, recipients=(VP_UBND,))
    assert await run(qhub) == 0
    assert stub.attempts == []


async def test_deferred_retries_with_backoff_until_delivered(qhub, stub, clock):
    stub.fail_times = 2
    res = await send(qhub, 3)
    await run(qhub)
    d = await delivery(qhub, res.id)
    assert (d["state"], d["attempts"]) == ("deferred", 1)
    assert d["next_attempt_at"] == pytest.approx(clock.now + 60)
    assert "stub failure 1" in d["last_error"]
    # not due yet: nothing happens
    clock.advance(59)
    assert await run(qhub) == 0
    clock.advance(1)
    assert await run(qhub) == 1
    d = await delivery(qhub, res.id)
    assert d["state"] == "deferred" and d["attempts"] == 2
    assert clock.now + 60 <= d["next_attempt_at"] <= clock.now + 120
    clock.advance(120)
    await run(qhub)
    d = await delivery(qhub, res.id)
    assert (d["state"], d["attempts"], d["last_error"]) == ("delivered", 3, None)


async def test_permanent_refusal_fails_at_once_and_tells_the_sender(qhub, stub):
    stub.refuse = True
    res = await send(qhub, 4)
    await run(qhub)
    d = await delivery(qhub, res.id)
    assert d["state"] == "failed" and "stub told to refuse" in d["last_error"]
    assert d["business_status"] == "02"
    notices = await inbox_statuses(qhub, MAU_A)
    assert len(notices) == 1 and notices[0]["status_code"] == "02"
    raw = (await qhub.spool.payload(notices[0]["sha256"])).decode()
    assert "stub told to refuse" in raw and SO_NOIVU in raw
    # the notice is a real edXML status that cleanup accepts: it is in the spool as such
    env = await qhub.spool.envelope(notices[0]["id"])
    assert env["sender"] == qhub.hub_id and env["response_for"] == res.id


async def test_lifetime_expiry_fails_and_notifies(qhub, stub, clock):
    stub.fail_times = 10_000
    res = await send(qhub, 5)
    await run(qhub)
    clock.advance(86400 + 1)
    assert await qhub.qmgr.expire() == 1
    d = await delivery(qhub, res.id)
    assert d["state"] == "failed" and "maximal_lifetime" in d["last_error"]
    assert "stub failure" in d["last_error"]
    notices = await inbox_statuses(qhub, MAU_A)
    assert [n["status_code"] for n in notices] == ["02"]


async def test_unfetched_mailbox_document_expires(qhub, clock):
    res = await send(qhub, 6, recipients=(VP_UBND,))
    clock.advance(86400 + 1)
    await qhub.qmgr.expire()
    d = await delivery(qhub, res.id, VP_UBND)
    assert d["state"] == "failed" and "never fetched" in d["last_error"]
    assert [n["status_code"] for n in await inbox_statuses(qhub, MAU_A)] == ["02"]


async def test_no_notice_about_a_notice(qhub, stub, clock):
    # a status relayed to a department that refuses it fails quietly (no loop of notices)
    stub.refuse = True
    doc = await cleanup.accept(qhub, samples.edoc(SO_NOIVU, [MAU_A], 1), Identity(SO_NOIVU, "agency"))
    await cleanup.accept(qhub, samples.status(MAU_A, SO_NOIVU, doc.document_id, "01"),
                         Identity(MAU_A, "agency"))
    await run(qhub)
    conn = sqlite3.connect(qhub.spool.db_path)
    assert conn.execute("SELECT COUNT(*) FROM envelopes WHERE sender = ?", (qhub.hub_id,)).fetchone()[0] == 0
    conn.close()


async def test_concurrency_limits(qhub, stub, clock):
    stub.delay = 0.2
    for n in range(6):
        await send(qhub, 100 + n, recipients=(SO_NOIVU,))
    started = await qhub.qmgr.scan()
    assert started == 2  # destination_concurrency
    assert qhub.qmgr.per_route["provincial"] == 2
    assert await qhub.qmgr.scan() == 0
    await qhub.qmgr.drain()
    total = 2
    while total < 6:
        got = await qhub.qmgr.scan()
        assert got <= 2
        total += got
        await qhub.qmgr.drain()
    assert len(stub.delivered) == 6


async def test_global_limit_across_routes(queue_settings, clock):
    slow = {name: StubAdapter(name, {"delay": "0.2s"}) for name in ("provincial", "peer.lucyen")}
    async with open_hub(queue_settings, clock=clock, run_queue=True, queue_auto=False,
                        adapters={"mailbox": MailboxAdapter("mailbox", {}), **slow}) as hub:
        for n in range(4):
            await send(hub, 200 + n, recipients=(SO_NOIVU, "000.00.44.H63"))
        assert await hub.qmgr.scan() == 3  # global_concurrency, spread over both routes
        assert set(hub.qmgr.per_route.values()) <= {1, 2}
        await hub.qmgr.drain()


async def test_crash_recovery_requeues_then_quarantines(queue_settings, clock, caplog):
    adapters = lambda: {"mailbox": MailboxAdapter("mailbox", {}), "provincial": StubAdapter("provincial", {})}  # noqa: E731
    async with open_hub(queue_settings, clock=clock, run_queue=True, queue_auto=False,
                        adapters=adapters()) as hub:
        res = await send(hub, 7)
        db = hub.spool.db_path
    for crash in range(1, 4):
        # Given: the delivery is active when the process dies (we leave the row leased)
        conn = sqlite3.connect(db)
        conn.execute("UPDATE deliveries SET state = 'active' WHERE envelope_id = ?", (res.id,))
        conn.commit()
        conn.close()
        # When: the hub starts again
        with caplog.at_level(logging.WARNING, logger="hub.qmgr"):
            async with open_hub(queue_settings, clock=clock, run_queue=True, queue_auto=False,
                                adapters=adapters()) as hub:
                d = await delivery(hub, res.id)
                events = await hub.spool.events(0, 1000, message_id=res.id, kinds=["state"])
        # Then: it is queued again twice, and the third time quarantined
        assert d["crashes"] == crash
        if crash < 3:
            assert d["state"] == "queued"
        else:
            assert d["state"] == "corrupt"
            assert events[-1].state == "corrupt" and "3 crashes" in events[-1].detail["reason"]
            assert any("corrupt" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


async def test_clean_stop_hands_back_active_deliveries(queue_settings, clock):
    slow = StubAdapter("provincial", {"delay": "5s"})
    async with open_hub(queue_settings, clock=clock, run_queue=True, queue_auto=False,
                        adapters={"mailbox": MailboxAdapter("mailbox", {}), "provincial": slow}) as hub:
        res = await send(hub, 8)
        await hub.qmgr.scan()
        assert (await delivery(hub, res.id))["state"] == "active"
        await hub.qmgr.stop(grace=0.1)
        hub.qmgr = None
        d = await delivery(hub, res.id)
    assert (d["state"], d["crashes"]) == ("queued", 0)


async def test_restart_loses_no_pending_retry(queue_settings, clock):
    stub = StubAdapter("provincial", {"fail_times": 1})
    async with open_hub(queue_settings, clock=clock, run_queue=True, queue_auto=False,
                        adapters={"mailbox": MailboxAdapter("mailbox", {}), "provincial": stub}) as hub:
        res = await send(hub, 9)
        await run(hub)
        due = (await delivery(hub, res.id))["next_attempt_at"]
    clock.advance(61)
    stub2 = StubAdapter("provincial", {})
    async with open_hub(queue_settings, clock=clock, run_queue=True, queue_auto=False,
                        adapters={"mailbox": MailboxAdapter("mailbox", {}), "provincial": stub2}) as hub:
        assert due <= clock.now
        await run(hub)
        assert (await delivery(hub, res.id))["state"] == "delivered"
        assert len(stub2.delivered) == 1


async def test_the_live_loop_delivers_without_help(queue_settings):
    # the real loop and timers, on the wall clock
    stub = StubAdapter("provincial", {})
    async with open_hub(queue_settings, run_queue=True,
                        adapters={"mailbox": MailboxAdapter("mailbox", {}), "provincial": stub}) as hub:
        res = await send(hub, 10)
        async def delivered():
            return (await delivery(hub, res.id))["state"] == "delivered"
        await eventually(delivered, timeout=5, what="the live loop delivered it")
        assert (await delivery(hub, res.id))["state"] == "delivered"
        assert hub.qmgr.scheduler is not None and hub.qmgr.scheduler.running


async def test_housekeeping_retires_old_payloads_and_sweeps_orphans(make_settings, clock):
    import os
    import time
    settings = make_settings(delivered_retention="1d", inline_payload_limit="1KiB")
    async with open_hub(settings, clock=clock, run_queue=True, queue_auto=False,
                        adapters={"mailbox": MailboxAdapter("mailbox", {})}) as hub:
        done = await cleanup.accept(hub, samples.edoc(MAU_A, [VP_UBND], 1, size=4000), Identity(MAU_A, "agency"))
        waiting = await cleanup.accept(hub, samples.edoc(MAU_A, [VP_UBND], 2, size=4000), Identity(MAU_A, "agency"))
        await hub.spool.ack(VP_UBND, done.id)
        # a crash between a payload's write and its commit leaves an orphan file
        orphan = hub.spool.payloads.root / "ab" / "cd" / ("abcd" + "0" * 60)
        orphan.parent.mkdir(parents=True)
        orphan.write_bytes(b"orphan")
        os.utime(orphan, (time.time() - 7200, time.time() - 7200))
        clock.advance(2 * 86400)
        assert await hub.qmgr.housekeeping() == 2
        assert not orphan.exists()
        done_env, waiting_env = await hub.spool.envelope(done.id), await hub.spool.envelope(waiting.id)
        assert not hub.spool.payloads.path(done_env["sha256"]).exists()  # final and old: retired
        assert await hub.spool.payload(waiting_env["sha256"])  # still queued: kept
        with pytest.raises(Exception):
            await hub.spool.payload(done_env["sha256"])
        assert (await hub.spool.envelope(done.id))["document_id"]  # metadata stays
