"""Leases while the hub runs (issue 9.3), through the queue manager and a manual clock.

A delivery being attempted is ``active``, leased to this node until
``lease_time`` ahead.  Shown here:

* one transient error while settling no longer leaves a delivery active
  forever: the lifetime sweep takes the expired lease back and the next scan
  delivers it;
* an attempt still running past ``lease_time`` keeps its lease (the sweep
  renews it) and is not attempted twice; if another node took the lease
  meanwhile, the late outcome does not overwrite what happened since;
* crash recovery at start takes back only this node's leases and expired
  ones, never another node's live lease.

The transient error is real, not a mock: a trigger in the spool database
refuses the write that records ``delivered`` (as a full disk or an I/O error
would), once; the test removes it again after the attempt.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest

from adapters.base import DeliveryRequest, Outcome
from adapters.mailbox import MailboxAdapter
from adapters.stub import StubAdapter
from hub.auth import Identity
from hub.cleanup import accept as cleanup
from hub.edxml import samples
from hub.node import open_hub
from spool.sqlite.backend import SqliteSpool
from support import MAU_A, SO_NOIVU

LEASE = 600.0  #: lease_time of these hubs, seconds


class GatedAdapter(StubAdapter):
    """A stub whose attempts wait until the test opens the gate."""

    def __init__(self, name: str) -> None:
        super().__init__(name, {})
        self.gate = asyncio.Event()
        self.started = asyncio.Event()

    async def deliver(self, req: DeliveryRequest) -> Outcome:
        self.started.set()
        await asyncio.wait_for(self.gate.wait(), 30)
        return await super().deliver(req)


@pytest.fixture
def lease_settings(make_settings):
    return lambda **kw: make_settings(lease_time=f"{int(LEASE)}s", maximal_lifetime="1d",
                                      minimal_backoff="60s", **kw)


def adapters(provincial):
    return {"mailbox": MailboxAdapter("mailbox", {}), "provincial": provincial}


async def send(hub, n: int):
    return await cleanup.accept(hub, samples.edoc(MAU_A, [SO_NOIVU], n), Identity(MAU_A, "agency"))


async def delivery(hub, message_id):
    (d,) = await hub.spool.deliveries(message_id)
    return d


class RefuseDelivered:
    """The database refuses to record ``delivered`` while this is in place."""

    def __init__(self, db) -> None:
        self.db = db

    def __enter__(self) -> "RefuseDelivered":
        conn = sqlite3.connect(self.db, timeout=10)
        conn.execute("CREATE TRIGGER test_refuse_delivered BEFORE UPDATE OF state ON deliveries "
                     "WHEN NEW.state = 'delivered' BEGIN "
                     "SELECT RAISE(ABORT, 'disk I/O error (injected by the test)'); END")
        conn.close()
        return self

    def __exit__(self, *exc) -> None:
        conn = sqlite3.connect(self.db, timeout=10)
        conn.execute("DROP TRIGGER IF EXISTS test_refuse_delivered")
        conn.close()


async def test_an_outcome_that_could_not_be_recorded_is_reclaimed_and_delivered(
        lease_settings, clock, caplog):
    stub = StubAdapter("provincial", {})
    async with open_hub(lease_settings(), clock=clock, run_queue=True, queue_auto=False,
                        adapters=adapters(stub)) as hub:
        res = await send(hub, 1)
        # Given: the destination takes the document, but recording that fails once
        with caplog.at_level(logging.ERROR, logger="hub.qmgr"), RefuseDelivered(hub.spool.db_path):
            assert await hub.qmgr.scan() == 1
            await hub.qmgr.drain()
        assert len(stub.delivered) == 1
        assert any("settling failed" in r.getMessage() for r in caplog.records)
        d = await delivery(hub, res.id)
        assert (d["state"], d["lease_owner"], d["lease_until"]) == \
            ("active", hub.spool.node_id, clock.now + LEASE)
        # Then: while the lease runs nothing takes it, and nothing attempts it again
        clock.advance(LEASE - 1)
        assert await hub.qmgr.expire() == 0
        assert await hub.qmgr.scan() == 0
        assert (await delivery(hub, res.id))["state"] == "active"
        # When: the lease has expired, the lifetime sweep takes it back ...
        clock.advance(2)
        assert await hub.qmgr.reclaim() == 1
        d = await delivery(hub, res.id)
        assert (d["state"], d["crashes"], d["lease_owner"]) == ("queued", 1, None)
        (ev,) = await hub.spool.events(message_id=res.id, kinds=["state"], state="queued")
        assert "lease expired" in ev.detail["reason"]
        # ... and the next scan delivers it (at least once: the destination has it twice)
        assert await hub.qmgr.scan() == 1
        await hub.qmgr.drain()
        d = await delivery(hub, res.id)
        assert (d["state"], d["attempts"], d["lease_owner"]) == ("delivered", 2, None)
        assert [r.delivery_id for r in stub.delivered] == [d["id"], d["id"]]


async def test_the_lifetime_sweep_reclaims_through_expire(lease_settings, clock):
    # the scheduler calls expire(); it reclaims before it looks for lifetimes
    stub = StubAdapter("provincial", {})
    async with open_hub(lease_settings(), clock=clock, run_queue=True, queue_auto=False,
                        adapters=adapters(stub)) as hub:
        res = await send(hub, 2)
        with RefuseDelivered(hub.spool.db_path):
            await hub.qmgr.scan()
            await hub.qmgr.drain()
        clock.advance(LEASE + 1)
        assert await hub.qmgr.expire() == 0  # nothing failed: the delivery is queued again
        assert (await delivery(hub, res.id))["state"] == "queued"
        await hub.qmgr.scan()
        await hub.qmgr.drain()
        assert (await delivery(hub, res.id))["state"] == "delivered"


async def test_an_attempt_running_past_lease_time_keeps_its_lease(lease_settings, clock):
    gated = GatedAdapter("provincial")
    async with open_hub(lease_settings(), clock=clock, run_queue=True, queue_auto=False,
                        adapters=adapters(gated)) as hub:
        res = await send(hub, 3)
        assert await hub.qmgr.scan() == 1
        await asyncio.wait_for(gated.started.wait(), 10)
        # When: the attempt is still running after two lease times, swept meanwhile
        for _ in range(2):
            clock.advance(LEASE + 1)
            assert await hub.qmgr.expire() == 0
            d = await delivery(hub, res.id)
            assert (d["state"], d["lease_owner"], d["lease_until"], d["crashes"]) == \
                ("active", hub.spool.node_id, clock.now + LEASE, 0)
            assert await hub.qmgr.scan() == 0
        # Then: it ends once, delivered by its only attempt
        gated.gate.set()
        await hub.qmgr.drain()
        d = await delivery(hub, res.id)
        assert (d["state"], d["attempts"]) == ("delivered", 1)
        assert len(gated.attempts) == 1


async def test_a_late_outcome_does_not_overwrite_a_lease_another_node_took(lease_settings, clock):
    gated = GatedAdapter("provincial")
    settings = lease_settings(node_id="node-a")
    async with open_hub(settings, clock=clock, run_queue=True, queue_auto=False,
                        adapters=adapters(gated)) as hub:
        res = await send(hub, 4)
        await hub.qmgr.scan()
        await asyncio.wait_for(gated.started.wait(), 10)
        # Given: node a hangs past its lease (no sweep of its own); node b reclaims it
        # and is attempting it now
        clock.advance(LEASE + 1)
        other = SqliteSpool(settings.data_path, node_id="node-b", clock=clock)
        await other.open()
        try:
            assert await other.reclaim_expired(clock.now, settings.crash_limit) == (1, 0)
            did = (await delivery(hub, res.id))["id"]
            assert await other.lease([did], clock.now + LEASE) == [did]
            # When: node a's attempt ends after all
            gated.gate.set()
            await hub.qmgr.drain()
        finally:
            await other.close()
        # Then: its outcome is not recorded over node b's lease
        d = await delivery(hub, res.id)
        assert (d["state"], d["lease_owner"], d["crashes"]) == ("active", "node-b", 1)
        states = [e.state for e in await hub.spool.events(message_id=res.id, kinds=["state"])]
        assert states == ["active", "queued", "active"]


async def test_recovery_at_start_takes_only_own_and_expired_leases(lease_settings, clock):
    settings_a, settings_b = lease_settings(node_id="node-a"), lease_settings(node_id="node-b")
    # Given: three deliveries leased while no queue manager runs:
    # node b's live lease, node b's lease that will expire, node a's own (a crashed)
    async with open_hub(settings_b, clock=clock) as hub:
        ids = []
        for n in (11, 12, 13):
            ids.append((await delivery(hub, (await send(hub, n)).id))["id"])
        theirs_live, theirs_expired, mine = ids
        assert await hub.spool.lease([theirs_live], clock.now + 10 * LEASE) == [theirs_live]
        assert await hub.spool.lease([theirs_expired], clock.now + LEASE) == [theirs_expired]
    async with open_hub(settings_a, clock=clock) as hub:
        assert await hub.spool.lease([mine], clock.now + 10 * LEASE) == [mine]
    clock.advance(LEASE + 1)
    # When: node a starts its queue manager
    stub = StubAdapter("provincial", {})
    async with open_hub(settings_a, clock=clock, run_queue=True, queue_auto=False,
                        adapters=adapters(stub)) as hub:
        states = {i: (await hub.spool.delivery(i))["state"] for i in ids}
        # Then: its own and the expired lease are queued again; node b's live one stays
        assert states == {theirs_live: "active", mine: "queued", theirs_expired: "queued"}
        assert (await hub.spool.delivery(theirs_live))["lease_owner"] == "node-b"
        assert await hub.qmgr.scan() == 2
        await hub.qmgr.drain()
        assert sorted(r.delivery_id for r in stub.delivered) == sorted([mine, theirs_expired])
        assert (await hub.spool.delivery(theirs_live))["state"] == "active"
    # and at node a's clean stop node b's lease is still not handed back
    async with open_hub(settings_a, clock=clock) as hub:
        assert (await hub.spool.delivery(theirs_live))["lease_owner"] == "node-b"
