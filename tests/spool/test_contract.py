"""The spool contract: every operation of ``spool.base.Spool``, run against
every backend present.

Only the interface's public methods and the records of ``spool.records``
are used (no SQL, no backend's private names), so the same tests hold for
any backend: adding one is one entry in ``BACKENDS``.  A backend that is not
present yet is skipped with its reason; on CI (``CI=true``) a backend that
is present but cannot be reached fails instead of skipping.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import importlib
import os
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

from hub.clock import ManualClock
from hub.errors import ConflictError, HubError, NotFoundError, PayloadCorruptError, SpoolError
from spool.base import Spool
from spool.chain import GENESIS_HASH, event_hash
from spool.ids import new_message_id
from spool.records import AddedDelivery, NewDelivery, NewEnvelope, NewLink, StatusRecord
from spool.states import State

INLINE_LIMIT = 1024       #: payloads above this are files
LIFETIME = 1000.0         #: maximal_lifetime of the spools made here
CRASH_LIMIT = 3


# -- the backends ----------------------------------------------------------------------

@dataclasses.dataclass
class Backend:
    """How to make spools of one backend on one location (a data directory;
    a database too, for a server backend).  Several spools made on the same
    location share one store, as several nodes do."""

    name: str
    cls: type[Spool]
    location: Path
    #: Extra constructor arguments (a server backend's DSN).
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def make(self, clock: Callable[[], float], *, node_id: str = "node-a",
             location: Path | None = None) -> Spool:
        return self.cls(location or self.location, inline_limit=INLINE_LIMIT,  # type: ignore[call-arg]
                        commit_max_wait=0.001, maximal_lifetime=LIFETIME, node_id=node_id,
                        clock=clock, **self.options)

    def has_store(self, location: Path) -> bool:
        """Whether a store exists at ``location`` (read-only opens never make one)."""
        if self.name == "sqlite":
            return (location / "spool.db").exists()
        return any(location.glob("*.db"))


def sqlite_backend(tmp_path: Path) -> Backend:
    from spool.sqlite.backend import SqliteSpool
    return Backend("sqlite", SqliteSpool, tmp_path / "data")


def postgres_backend(tmp_path: Path) -> Backend:
    try:
        module = importlib.import_module("spool.postgres.backend")
    except ImportError:
        pytest.skip("the PostgreSQL backend (spool.postgres.backend.PostgresSpool) does not "
                    "exist yet")
    dsn = os.environ.get("LIENTHONG_TEST_POSTGRES")
    if not dsn:
        if os.environ.get("CI") == "true":
            pytest.fail("the PostgreSQL backend exists: CI must run its contract "
                        "(set LIENTHONG_TEST_POSTGRES to a DSN of a scratch database)")
        pytest.skip("set LIENTHONG_TEST_POSTGRES to a scratch database's DSN to run the "
                    "PostgreSQL backend's contract")
    return Backend("postgres", module.PostgresSpool, tmp_path / "data", {"dsn": dsn})


#: Every backend the contract runs on; a new backend is one line here.
BACKENDS = {"sqlite": sqlite_backend, "postgres": postgres_backend}


@pytest.fixture(params=list(BACKENDS))
def backend(request, tmp_path) -> Backend:
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@contextlib.asynccontextmanager
async def opened(spool: Spool, **kw: Any) -> AsyncIterator[Spool]:
    await spool.open(**kw)
    try:
        yield spool
    finally:
        await spool.close()


@pytest.fixture
async def sp(backend, clock) -> AsyncIterator[Spool]:
    """A fresh spool of the backend, opened, closed at the end."""
    async with opened(backend.make(clock)) as spool:
        yield spool


# -- records -------------------------------------------------------------------------------

def edoc(raw: bytes, doc: str = "D1", recipients=("R1",), sender: str = "S",
         route: str = "mailbox", receipt: tuple[str, float, bytes] | None = None,
         message_id: str | None = None) -> NewEnvelope:
    return NewEnvelope(message_id or new_message_id(), "edoc", sender, doc, doc,
                       hashlib.sha256(raw).hexdigest(), raw, f"about {doc}", "1/UBND", None, None,
                       {"result": "valid", "signer": sender}, "test",
                       [NewDelivery(r, route) for r in recipients], receipt=receipt)


def status(original: str, organ: str, to: str, code: str = "03") -> NewEnvelope:
    raw = f"<status of='{original}' code='{code}'/>".encode()
    sha = hashlib.sha256(raw).hexdigest()
    return NewEnvelope(new_message_id(), "status", organ, sha, None, sha, raw, None, None, code,
                       original, {"result": "unsigned"}, "test", [NewDelivery(to, "mailbox")],
                       status=StatusRecord(original, organ, code, "being handled",
                                           "2026-11-20T08:00:00+07:00"))


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


async def one_delivery(sp: Spool, message_id: str) -> int:
    (d,) = await sp.deliveries(message_id)
    return d["id"]


# -- store -------------------------------------------------------------------------------

async def test_store_new_same_again_and_conflict(sp):
    rec = edoc(b"<one/>", recipients=("R1", "R2"))
    first = await sp.store(rec)
    assert first.created and first.id == rec.id
    assert first.recipients == [{"organ": "R1", "route": "mailbox"},
                                {"organ": "R2", "route": "mailbox"}]
    # the same document again (another message id minted for it): the stored one
    again = await sp.store(edoc(b"<one/>", recipients=("R1", "R2")))
    assert (again.created, again.id, again.recipients) == (False, first.id, first.recipients)
    # the same DocumentId from the same sender with other bytes: a conflict
    with pytest.raises(ConflictError):
        await sp.store(edoc(b"<other/>"))
    # ... but from another sender it is another document
    assert (await sp.store(edoc(b"<other/>", sender="S2"))).created
    env = await sp.envelope(first.id)
    assert env is not None
    assert (env["sender"], env["document_id"], env["sha256"], env["size"], env["kind"]) == \
        ("S", "D1", sha(b"<one/>"), 6, "edoc")
    assert env["signature"] == {"result": "valid", "signer": "S"}
    assert await sp.envelope("nope") is None
    accepted = await sp.events(kinds=["accepted"])
    assert [e.message_id for e in accepted] == [first.id, (await sp.find_document("S2", "D1"))["id"]]


async def test_concurrent_identical_stores_become_one(sp):
    results = await asyncio.gather(*(sp.store(edoc(b"<same/>")) for _ in range(10)))
    assert len({r.id for r in results}) == 1 and sum(r.created for r in results) == 1
    assert len(await sp.deliveries(results[0].id)) == 1


async def test_store_commits_the_acceptance_receipt_with_the_envelope(sp):
    rec = edoc(b"<r/>", receipt=("RCPT-1", 123.0, b"<receipt/>"))
    res = await sp.store(rec)
    assert res.receipt_id == "RCPT-1"
    doc = await sp.receipt("RCPT-1")
    assert doc == {"id": "RCPT-1", "message_id": res.id, "sender": "S", "recipient": None,
                   "xml": b"<receipt/>"}
    # the duplicate answers with the same receipt
    assert (await sp.store(edoc(b"<r/>", receipt=("RCPT-2", 124.0, b"<x/>")))).receipt_id == "RCPT-1"
    assert await sp.receipt("RCPT-2") is None


async def test_a_status_is_recorded_on_the_original_deliveries(sp, clock):
    orig = await sp.store(edoc(b"<doc/>", recipients=("R1", "R2")))
    clock.advance(5)
    st = await sp.store(status(orig.id, "R1", "S"))
    assert st.created
    rows = await sp.statuses(orig.id)
    assert rows == [{"organ": "R1", "status_code": "03", "description": "being handled",
                     "timestamp": "2026-11-20T08:00:00+07:00", "status_envelope_id": st.id,
                     "received_at": clock.now}]
    by_organ = {d["recipient"]: d for d in await sp.deliveries(orig.id)}
    assert (by_organ["R1"]["business_status"], by_organ["R1"]["business_status_at"]) == ("03", clock.now)
    assert by_organ["R2"]["business_status"] is None
    (ev,) = await sp.events(kinds=["status_received"])
    assert (ev.message_id, ev.organ, ev.detail["status_code"], ev.detail["status_message_id"]) == \
        (orig.id, "R1", "03", st.id)
    env = await sp.envelope(st.id)
    assert env is not None and (env["kind"], env["response_for"], env["status_code"]) == \
        ("status", orig.id, "03")
    assert await sp.statuses(st.id) == []


# -- transitions, ack, fetched, events ------------------------------------------------------

async def test_transition_is_guarded_by_the_expected_state(sp, clock):
    res = await sp.store(edoc(b"<t/>"))
    did = await one_delivery(sp, res.id)
    before = sp.last_event_id
    assert not await sp.transition(did, (State.DEFERRED, State.HOLD), State.FAILED)
    assert sp.last_event_id == before  # a refused transition writes nothing
    assert (await sp.delivery(did))["state"] == "queued"
    clock.advance(3)
    assert await sp.transition(did, (State.QUEUED,), State.DEFERRED, reason="busy",
                               last_error="busy", attempts_inc=1, next_attempt_at=clock.now + 60)
    d = await sp.delivery(did)
    assert (d["state"], d["attempts"], d["last_error"], d["next_attempt_at"], d["updated_at"]) == \
        ("deferred", 1, "busy", clock.now + 60, clock.now)
    (ev,) = await sp.events(after=before)
    assert (ev.kind, ev.delivery_id, ev.message_id, ev.organ, ev.state, ev.detail) == \
        ("state", did, res.id, "R1", "deferred", {"route": "mailbox", "reason": "busy"})
    assert await sp.delivery(999_999) is None
    assert not await sp.transition(999_999, (State.QUEUED,), State.ACTIVE)


async def test_transition_guarded_by_the_lease_owner(sp, clock):
    res = await sp.store(edoc(b"<o/>", route="provincial"))
    did = await one_delivery(sp, res.id)
    assert await sp.lease([did], clock.now + 60) == [did]
    assert not await sp.transition(did, (State.ACTIVE,), State.DELIVERED, owned_by="someone-else")
    assert (await sp.delivery(did))["state"] == "active"
    assert await sp.transition(did, (State.ACTIVE,), State.DELIVERED, owned_by=sp.node_id,
                               note={"extra": 1})
    d = await sp.delivery(did)
    # leaving active ends the lease
    assert (d["state"], d["lease_owner"], d["lease_until"]) == ("delivered", None, None)
    assert (await sp.events(kinds=["state"]))[-1].detail["extra"] == 1


async def test_ack_twice_is_harmless_and_wrong_state_conflicts(sp):
    res = await sp.store(edoc(b"<a/>", recipients=("R1", "R2")))
    assert await sp.ack("R1", res.id) == "delivered"
    assert await sp.ack("R1", res.id) == "delivered"
    assert len(await sp.events(kinds=["state"], state="delivered")) == 1
    d = next(d for d in await sp.deliveries(res.id) if d["recipient"] == "R1")
    assert d["state"] == "delivered" and d["fetched_at"] is not None
    # held: cannot be acknowledged
    r2 = next(d for d in await sp.deliveries(res.id) if d["recipient"] == "R2")
    assert (await sp.operator_action(str(r2["id"]), "hold", "check", "op"))[1]
    with pytest.raises(ConflictError):
        await sp.ack("R2", res.id)
    with pytest.raises(NotFoundError):
        await sp.ack("R3", res.id)
    # a delivery on another route is not in a mailbox
    other = await sp.store(edoc(b"<b/>", "D2", route="provincial"))
    with pytest.raises(NotFoundError):
        await sp.ack("R1", other.id)


async def test_mark_fetched_keeps_the_first_time(sp, clock):
    res = await sp.store(edoc(b"<f/>"))
    did = await one_delivery(sp, res.id)
    assert (await sp.delivery(did))["fetched_at"] is None
    clock.advance(10)
    await sp.mark_fetched(did)
    first = clock.now
    clock.advance(10)
    await sp.mark_fetched(did)
    assert (await sp.delivery(did))["fetched_at"] == first
    (item,) = await sp.inbox("R1")
    assert item["fetched_at"] == first


async def test_record_event(sp, clock):
    ev = await sp.record_event("refused", message_id="M1", organ="S", code="bad_date", line=3)
    assert (ev.kind, ev.message_id, ev.organ, ev.detail, ev.at) == \
        ("refused", "M1", "S", {"code": "bad_date", "line": 3}, clock.now)
    assert (await sp.events()) == [ev]
    assert sp.last_event_id == ev.id == 1


# -- the event log -------------------------------------------------------------------------

async def make_some_history(sp: Spool, clock: ManualClock) -> list[str]:
    ids = []
    for n in range(3):
        clock.advance(1)
        res = await sp.store(edoc(b"<h%d/>" % n, f"H{n}", recipients=("R1", "R2")))
        ids.append(res.id)
    await sp.ack("R1", ids[0])
    await sp.record_event("refused", organ="S", code="Vietnamese: tiếng Việt")
    await sp.update_meta({"k": "v"}, [("note", "S", {"n": 1})])
    return ids


async def test_the_event_log_is_a_dense_hash_chain(sp, clock):
    assert not await sp.has_events() and await sp.event_head() is None
    await make_some_history(sp, clock)
    assert await sp.has_events()
    events = await sp.events(limit=10_000)
    entries = await sp.chain_entries(0, events[-1].id, 10_000)
    assert [e.id for e in events] == [r["id"] for r in entries] == list(range(1, len(events) + 1))
    prev = GENESIS_HASH
    for ev, row in zip(events, entries):
        assert isinstance(row["detail"], str)  # as stored, for a byte-exact check
        assert row["prev_hash"] == ev.prev_hash == prev
        assert row["hash"] == ev.hash == event_hash(
            prev, row["id"], row["at"], row["kind"], row["message_id"], row["delivery_id"],
            row["organ"], row["state"], row["detail"])
        prev = row["hash"]
    assert await sp.event_head() == (events[-1].id, events[-1].hash)
    # chain_entries pages by (after, upto, limit)
    assert [r["id"] for r in await sp.chain_entries(2, 5, 2)] == [3, 4]
    assert [r["id"] for r in await sp.chain_entries(3, 5, 100)] == [4, 5]


async def test_the_chain_continues_across_a_reopen_and_another_node(backend, clock):
    async with opened(backend.make(clock)) as a:
        await a.store(edoc(b"<1/>", "A"))
    async with opened(backend.make(clock, node_id="node-a")) as a, \
            opened(backend.make(clock, node_id="node-b")) as b:
        await a.store(edoc(b"<2/>", "B"))
        await b.store(edoc(b"<3/>", "C"))
        await a.record_event("note", organ="x")
        events = await b.events()
        assert [e.id for e in events] == [1, 2, 3, 4]
        assert all(e.prev_hash == p.hash for p, e in zip(events, events[1:]))
        assert await a.event_head() == await b.event_head() == (4, events[-1].hash)


async def test_event_filters_and_query_events(sp, clock):
    ids = await make_some_history(sp, clock)
    evs = await sp.events(limit=10_000)
    assert [e.id for e in await sp.events(after=2, limit=3)] == [3, 4, 5]
    assert {e.message_id for e in await sp.events(message_id=ids[1])} == {ids[1]}
    assert {e.organ for e in await sp.events(organ="R1")} == {"R1"}
    assert [e.kind for e in await sp.events(kinds=["refused", "note"])] == ["refused", "note"]
    assert [e.message_id for e in await sp.events(state="delivered")] == [ids[0]]
    q = await sp.query_events({"after": 1, "upto": 3})
    assert [e.id for e in q] == [2, 3]
    t0 = evs[0].at
    assert {e.at for e in await sp.query_events({"since": t0 + 1, "until": t0 + 2})} == {t0 + 1}
    assert [e.id for e in await sp.query_events({"kinds": ["accepted"], "organ": "S"})] == \
        [e.id for e in evs if e.kind == "accepted"]
    assert [e.id for e in await sp.query_events({"message_id": ids[0], "state": "delivered"})] == \
        [e.id for e in evs if e.message_id == ids[0] and e.state == "delivered"]
    assert len(await sp.query_events({"limit": 2})) == 2


async def test_state_history_and_delivery_pairs(sp, clock):
    ids = await make_some_history(sp, clock)
    head = sp.last_event_id
    hist = await sp.state_history([ids[0], ids[2]], head + 1)
    assert [(h["message_id"], h["organ"], h["state"]) for h in hist] == [(ids[0], "R1", "delivered")]
    assert await sp.state_history([ids[0]], hist[0]["id"]) == []
    assert await sp.state_history([], head) == []
    assert await sp.delivery_pairs([ids[0], ids[1]]) == {
        (ids[0], "R1"), (ids[0], "R2"), (ids[1], "R1"), (ids[1], "R2")}
    assert await sp.delivery_pairs([]) == set()


# -- leases ----------------------------------------------------------------------------------

async def store_dispatched(sp: Spool, n: int, tag: str = "L") -> list[int]:
    ids = []
    for i in range(n):
        res = await sp.store(edoc(b"<%s%d/>" % (tag.encode(), i), f"{tag}{i}", route="provincial"))
        ids.append(await one_delivery(sp, res.id))
    return ids


async def test_lease_sets_active_with_owner_and_deadline(sp, clock):
    a, b = await store_dispatched(sp, 2)
    assert await sp.lease([a, b], clock.now + 60) == [a, b]
    d = await sp.delivery(a)
    assert (d["state"], d["lease_owner"], d["lease_until"], d["attempts"]) == \
        ("active", sp.node_id, clock.now + 60, 1)
    # leased already: not again
    assert await sp.lease([a], clock.now + 60) == []
    assert await sp.due(clock.now, ["provincial"], 10) == []


async def test_extend_leases_renews_only_this_nodes(backend, clock):
    async with opened(backend.make(clock, node_id="node-a")) as a, \
            opened(backend.make(clock, node_id="node-b")) as b:
        mine, theirs = await store_dispatched(a, 2)
        await a.lease([mine], clock.now + 10)
        await b.lease([theirs], clock.now + 10)
        assert await a.extend_leases([mine, theirs], clock.now + 100) == 1
        assert (await a.delivery(mine))["lease_until"] == clock.now + 100
        assert (await a.delivery(theirs))["lease_until"] == clock.now + 10
        assert await a.extend_leases([], clock.now + 100) == 0


async def test_reclaim_expired_takes_back_only_expired_leases_and_quarantines(backend, clock):
    async with opened(backend.make(clock, node_id="node-a")) as a, \
            opened(backend.make(clock, node_id="node-b")) as b:
        short, long_, other = await store_dispatched(a, 3)
        await a.lease([short], clock.now + 10)
        await a.lease([long_], clock.now + 1000)
        await b.lease([other], clock.now + 10)
        assert await a.reclaim_expired(clock.now + 5, CRASH_LIMIT) == (0, 0)
        clock.advance(11)
        # any node's expired lease, not a live one
        assert await a.reclaim_expired(clock.now, CRASH_LIMIT) == (2, 0)
        for did in (short, other):
            d = await a.delivery(did)
            assert (d["state"], d["crashes"], d["lease_owner"], d["next_attempt_at"]) == \
                ("queued", 1, None, clock.now)
        assert (await a.delivery(long_))["state"] == "active"
        # the poison limit: active while crash_limit leases expired
        for crash in (2, 3):
            await a.lease([short], clock.now + 1)
            clock.advance(2)
            expect = (1, 0) if crash < CRASH_LIMIT else (0, 1)
            assert await b.reclaim_expired(clock.now, CRASH_LIMIT) == expect
        d = await a.delivery(short)
        assert (d["state"], d["crashes"]) == ("corrupt", 3)
        assert "3 crashes" in (await a.events(kinds=["state"], state="corrupt"))[-1].detail["reason"]


async def test_recover_takes_own_and_expired_leases_never_a_live_one_of_another_node(backend, clock):
    async with opened(backend.make(clock, node_id="node-a")) as a, \
            opened(backend.make(clock, node_id="node-b")) as b:
        mine_live, theirs_live, theirs_expired = await store_dispatched(a, 3)
        await a.lease([mine_live], clock.now + 1000)
        await b.lease([theirs_live], clock.now + 1000)
        await b.lease([theirs_expired], clock.now + 10)
        clock.advance(11)
    # When: node a starts again (b still runs: its live lease must stay)
    async with opened(backend.make(clock, node_id="node-a")) as a:
        assert await a.recover(CRASH_LIMIT) == (2, 0)
        states = {did: (await a.delivery(did))["state"]
                  for did in (mine_live, theirs_live, theirs_expired)}
        assert states == {mine_live: "queued", theirs_live: "active", theirs_expired: "queued"}
        assert (await a.delivery(theirs_live))["lease_owner"] == "node-b"
        assert (await a.delivery(mine_live))["crashes"] == 1
        assert await a.recover(CRASH_LIMIT) == (0, 0)


async def test_recover_quarantines_at_the_crash_limit(backend, clock):
    async with opened(backend.make(clock)) as a:
        (did,) = await store_dispatched(a, 1)
    for crash in range(1, CRASH_LIMIT + 1):
        async with opened(backend.make(clock)) as a:
            if crash > 1:
                assert await a.lease([did], clock.now + 1000) == [did]
            else:
                await a.lease([did], clock.now + 1000)
        async with opened(backend.make(clock)) as a:
            got = await a.recover(CRASH_LIMIT)
            assert got == ((1, 0) if crash < CRASH_LIMIT else (0, 1))
            d = await a.delivery(did)
            assert d["crashes"] == crash
            assert d["state"] == ("queued" if crash < CRASH_LIMIT else "corrupt")


async def test_requeue_active_hands_back_only_this_nodes_leases(backend, clock):
    async with opened(backend.make(clock, node_id="node-a")) as a, \
            opened(backend.make(clock, node_id="node-b")) as b:
        mine, theirs = await store_dispatched(a, 2)
        await a.lease([mine], clock.now + 60)
        await b.lease([theirs], clock.now + 60)
        assert await a.requeue_active("stopping") == 1
        d = await a.delivery(mine)
        assert (d["state"], d["crashes"], d["lease_owner"]) == ("queued", 0, None)
        assert (await a.events(kinds=["state"]))[-1].detail["reason"] == "stopping"
        assert (await a.delivery(theirs))["state"] == "active"
        assert await a.requeue_active("stopping") == 0


# -- queue views and operators --------------------------------------------------------------

async def test_due_expired_next_due_at(sp, clock):
    start = clock.now
    p1, p2 = await store_dispatched(sp, 2, "P")
    mailbox = await sp.store(edoc(b"<m/>", "M"))
    assert await sp.next_due_at(["provincial"]) == start
    assert await sp.next_due_at([]) is None
    assert await sp.next_due_at(["nothing-here"]) is None
    assert [d["id"] for d in await sp.due(clock.now, ["provincial"], 10)] == [p1, p2]
    assert [d["id"] for d in await sp.due(clock.now, ["provincial"], 1)] == [p1]
    assert await sp.due(clock.now, [], 10) == [] and await sp.due(clock.now, ["provincial"], 0) == []
    assert await sp.due(clock.now, ["mailbox"], 10) != []  # due() does not know which routes pull
    row = (await sp.due(clock.now, ["provincial"], 1))[0]
    assert (row["sha256"], row["kind"], row["sender"], row["document_id"], row["route"]) == \
        (sha(b"<P0/>"), "edoc", "S", "P0", "provincial")
    # deferred into the future: not due until then; the oldest promise first
    await sp.transition(p1, (State.QUEUED,), State.DEFERRED, next_attempt_at=start + 50)
    assert [d["id"] for d in await sp.due(clock.now, ["provincial"], 10)] == [p2]
    await sp.transition(p2, (State.QUEUED,), State.HOLD)
    assert await sp.next_due_at(["provincial"]) == start + 50
    assert [d["id"] for d in await sp.due(start + 50, ["provincial"], 10)] == [p1]
    # expired: queued or deferred past the lifetime; held ones never expire
    assert await sp.expired(start + LIFETIME - 1) == []
    expired = await sp.expired(start + LIFETIME)
    assert sorted(d["id"] for d in expired) == sorted([p1, await one_delivery(sp, mailbox.id)])
    assert len(await sp.expired(start + LIFETIME, limit=1)) == 1


async def test_queue_filters_and_paging(sp, clock):
    a = await sp.store(edoc(b"<q1/>", "Q1", recipients=("R1", "R2")))
    clock.advance(100)
    b = await sp.store(edoc(b"<q2/>", "Q2", recipients=("R3",), sender="S2", route="provincial"))
    rows = await sp.queue()
    assert [(r["envelope_id"], r["recipient"]) for r in rows] == [(a.id, "R1"), (a.id, "R2"), (b.id, "R3")]
    assert rows[0]["size"] == 5 and rows[0]["subject"] == "about Q1"
    assert [r["envelope_id"] for r in await sp.queue(route="provincial")] == [b.id]
    assert [r["recipient"] for r in await sp.queue(organ="R2")] == ["R2"]
    assert [r["recipient"] for r in await sp.queue(organ="S2")] == ["R3"]  # the sender's too
    assert [r["envelope_id"] for r in await sp.queue(older_than=clock.now - 50)] == [a.id, a.id]
    assert [r["recipient"] for r in await sp.queue(message_id=a.id)] == ["R1", "R2"]
    await sp.ack("R1", a.id)
    assert [r["recipient"] for r in await sp.queue(states=["delivered"])] == ["R1"]
    assert [r["recipient"] for r in await sp.queue(states=["queued", "delivered"])] == ["R1", "R2", "R3"]
    page1 = await sp.queue(limit=2)
    page2 = await sp.queue(after=page1[-1]["id"], limit=2)
    assert [r["id"] for r in page1 + page2] == [r["id"] for r in rows]


async def test_operator_actions(sp, clock):
    res = await sp.store(edoc(b"<op/>", recipients=("R1", "R2"), route="provincial"))
    r1, r2 = [d["id"] for d in await sp.deliveries(res.id)]
    assert await sp.operator_action("no-such-message", "hold", "x", "op") == (False, [])
    assert await sp.operator_action("999999", "hold", "x", "op") == (False, [])
    found, changed = await sp.operator_action(res.id, "hold", "check it", "op")
    assert found and [(c["delivery_id"], c["from"], c["state"]) for c in changed] == \
        [(r1, "queued", "hold"), (r2, "queued", "hold")]
    assert changed[0]["message_id"] == res.id and changed[0]["recipient"] == "R1"
    # what may not move does not: retry of a held delivery
    assert await sp.operator_action(str(r1), "retry", "", "op") == (True, [])
    clock.advance(7)
    _, changed = await sp.operator_action(str(r1), "release", "ok", "op")
    assert [c["state"] for c in changed] == ["queued"]
    d = await sp.delivery(r1)
    assert (d["state"], d["next_attempt_at"]) == ("queued", clock.now)
    await sp.transition(r1, (State.QUEUED,), State.DEFERRED, next_attempt_at=clock.now + 500)
    clock.advance(1)
    _, changed = await sp.operator_action(str(r1), "retry", "now", "op")
    assert changed and (await sp.delivery(r1))["next_attempt_at"] == clock.now
    before = sp.last_event_id
    _, changed = await sp.operator_action(res.id, "drop", "spam", "op")
    assert [c["state"] for c in changed] == ["failed", "failed"]
    d = await sp.delivery(r2)
    assert d["state"] == "failed" and d["last_error"] == "dropped by op: spam"
    evs = await sp.events(after=before)
    states = [e for e in evs if e.kind == "state"]
    assert len(states) == 2 and all(e.detail["notify"] is True for e in states)
    assert all("dropped by an operator: spam" == e.detail["notice"] for e in states)
    (op_ev,) = [e for e in evs if e.kind == "operator"]
    assert (op_ev.message_id, op_ev.organ, op_ev.detail["action"], op_ev.detail["changed"]) == \
        (res.id, "op", "drop", [r1, r2])
    # final: nothing moves it any more
    assert await sp.operator_action(res.id, "release", "", "op") == (True, [])


# -- payloads ----------------------------------------------------------------------------------

async def test_payload_inline_and_file(sp):
    small, large = b"s" * 100, b"L" * 5000
    await sp.store(edoc(small, "D-small"))
    await sp.store(edoc(large, "D-large"))
    assert await sp.payload(sha(small)) == small
    assert await sp.payload(sha(large)) == large
    path = await sp.payload(sha(large), path_over=1000)
    assert isinstance(path, Path) and path.read_bytes() == large
    assert await sp.payload(sha(large), path_over=10_000) == large
    got = await sp.payload(sha(small), path_over=10)  # inline: bytes (or a file of them)
    assert (got.read_bytes() if isinstance(got, Path) else got) == small
    assert await sp.payload_paths() == {sp.payloads.relpath(sha(large))}
    assert sp.payloads.path(sha(large)).read_bytes() == large
    with pytest.raises(NotFoundError):
        await sp.payload("0" * 64)


async def test_payload_file_that_no_longer_hashes_is_refused(sp):
    large = b"L" * 5000
    await sp.store(edoc(large, "D-large"))
    path = sp.payloads.path(sha(large))
    path.write_bytes(b"l" + large[1:])   # one byte changed on disk, size kept
    for path_over in (None, 1000):       # read as bytes, or handed out as a file
        with pytest.raises(PayloadCorruptError) as caught:
            await sp.payload(sha(large), path_over=path_over)
        assert caught.value.code == "payload_corrupt"
        assert caught.value.details["sha256"] == sha(large)


async def test_retire_payloads_and_payload_paths(sp, clock):
    small, large, kept = b"s" * 100, b"L" * 5000, b"K" * 3000
    done_small = await sp.store(edoc(small, "A"))
    done_large = await sp.store(edoc(large, "B"))
    waiting = await sp.store(edoc(kept, "C"))
    await sp.ack("R1", done_small.id)
    await sp.ack("R1", done_large.id)
    # final, but not since `before`: kept
    assert await sp.retire_payloads(clock.now) == []
    clock.advance(10)
    paths = await sp.retire_payloads(clock.now)
    assert paths == [sp.payloads.relpath(sha(large))]
    assert await sp.payload_paths() == {sp.payloads.relpath(sha(kept))}
    for raw in (small, large):
        with pytest.raises(NotFoundError):
            await sp.payload(sha(raw))
    assert await sp.payload(sha(kept)) == kept
    assert (await sp.envelope(done_large.id))["sha256"] == sha(large)  # metadata stays
    (ev,) = await sp.events(kinds=["retention"])
    assert ev.detail["count"] == 2
    assert await sp.retire_payloads(clock.now) == []  # nothing left to retire
    assert await sp.envelope(waiting.id) is not None


async def test_a_retired_payload_sent_again_is_stored_again(sp, clock):
    # Bug found by this contract (fixed in spool/sqlite/backend.py): a small
    # payload re-sent after retention kept its emptied row, and the new
    # document had no bytes ("removed by retention").
    small, large = b"s" * 100, b"L" * 5000
    for raw, doc in ((small, "A"), (large, "B")):
        await sp.ack("R1", (await sp.store(edoc(raw, doc))).id)
    clock.advance(10)
    await sp.retire_payloads(clock.now)
    await sp.store(edoc(small, "A2"))
    await sp.store(edoc(large, "B2"))
    assert await sp.payload(sha(small)) == small
    assert await sp.payload(sha(large)) == large
    assert await sp.payload_bytes() == 5100


async def test_payload_bytes_follows_stores_duplicates_and_retention(sp, clock):
    # Exact totals after each change: a backend whose running total drifts
    # (or is not kept at all) fails here, whatever it scans.
    assert await sp.payload_bytes() == 0
    small, large = b"s" * 100, b"L" * 5000
    await sp.store(edoc(small, "A"))
    assert await sp.payload_bytes() == 100
    await sp.store(edoc(large, "B"))
    assert await sp.payload_bytes() == 5100
    await sp.store(edoc(small, "A"))          # the same document again
    await sp.store(edoc(small, "A-copy"))     # another document, the same bytes
    await sp.store(edoc(large, "B-copy", sender="S2"))
    assert await sp.payload_bytes() == 5100
    for rec in (await sp.queue()):
        await sp.ack(rec["recipient"], rec["envelope_id"])
    clock.advance(10)
    await sp.retire_payloads(clock.now)
    assert await sp.payload_bytes() == 0
    assert await sp.retire_payloads(clock.now) == []
    assert await sp.payload_bytes() == 0
    await sp.store(edoc(large, "B-again"))
    assert await sp.payload_bytes() == 5000
    assert (await sp.stats())["payload_bytes"] == 5000


# -- documents and the inbox ------------------------------------------------------------------

async def test_inbox_paging_and_items(sp, clock):
    ids = []
    for n in range(5):
        ids.append((await sp.store(edoc(b"<i%d/>" % n, f"I{n}", recipients=("R1", "R2")))).id)
    await sp.store(edoc(b"<p/>", "P", recipients=("R1",), route="provincial"))  # not a mailbox's
    page1 = await sp.inbox("R1", limit=2)
    page2 = await sp.inbox("R1", after=page1[-1]["delivery_id"], limit=2)
    page3 = await sp.inbox("R1", after=page2[-1]["delivery_id"], limit=2)
    assert [i["id"] for i in page1 + page2 + page3] == ids
    item = page1[0]
    assert (item["kind"], item["sender"], item["document_id"], item["subject"], item["code"],
            item["size"], item["sha256"], item["fetched_at"]) == \
        ("edoc", "S", "I0", "about I0", "1/UBND", 5, sha(b"<i0/>"), None)
    await sp.ack("R1", ids[1])
    assert [i["id"] for i in await sp.inbox("R1")] == [ids[0], *ids[2:]]
    assert len(await sp.inbox("R2")) == 5 and await sp.inbox("nobody") == []
    got = await sp.inbox_item("R1", ids[0])
    assert got is not None and (got["envelope_id"], got["recipient"], got["state"], got["sha256"],
                                got["kind"], got["sender"]) == \
        (ids[0], "R1", "queued", sha(b"<i0/>"), "edoc", "S")
    assert (await sp.inbox_item("R1", ids[1]))["state"] == "delivered"  # still an item
    assert await sp.inbox_item("R3", ids[0]) is None


async def test_inbox_by_kind_counts_and_what_an_organisation_sent(sp, clock):
    a = await sp.store(edoc(b"<k1/>", "K1", recipients=("R1", "R2")))
    clock.advance(1)
    b = await sp.store(edoc(b"<k2/>", "K2", recipients=("R1",)))
    st = await sp.store(status(a.id, "R1", "S"))  # R1 answers S about K1
    # the mailbox by kind, and its counts
    assert [i["id"] for i in await sp.inbox("R1", kind="edoc")] == [a.id, b.id]
    assert await sp.inbox("R1", kind="status") == []
    assert [i["id"] for i in await sp.inbox("S", kind="status")] == [st.id]
    assert (await sp.inbox_count("R1"), await sp.inbox_count("R1", kind="edoc"),
            await sp.inbox_count("R1", kind="status"), await sp.inbox_count("S")) == (2, 2, 0, 1)
    await sp.ack("R1", a.id)
    assert await sp.inbox_count("R1") == 1
    # what S sent: newest document first, one row per recipient, with states
    rows = await sp.sent("S")
    assert [(r["id"], r["recipient"]) for r in rows] == [(b.id, "R1"), (a.id, "R1"), (a.id, "R2")]
    first = next(r for r in rows if r["id"] == a.id and r["recipient"] == "R1")
    assert (first["kind"], first["document_id"], first["state"], first["route"],
            first["business_status"]) == ("edoc", "K1", "delivered", "mailbox", "03")
    assert [r["id"] for r in await sp.sent("S", message_id=a.id)] == [a.id, a.id]
    assert await sp.sent("S", kind="status") == []
    assert [r["id"] for r in await sp.sent("R1", kind="status")] == [st.id]
    assert len(await sp.sent("S", limit=1)) == 1
    assert await sp.sent("nobody") == []


async def test_find_documents_and_deliveries(sp, clock):
    a = await sp.store(edoc(b"<a/>", "SHARED", recipients=("R1", "R2")))
    clock.advance(1)
    b = await sp.store(edoc(b"<b/>", "SHARED", sender="S2"))
    st = await sp.store(status(a.id, "R1", "S"))
    assert (await sp.find_document("S", "SHARED"))["id"] == a.id
    assert (await sp.find_document("S2", "SHARED"))["id"] == b.id
    assert await sp.find_document("S3", "SHARED") is None
    # statuses are not documents
    assert await sp.find_document("R1", sha(b"<status of='%s' code='03'/>" % a.id.encode())) is None
    assert [e["id"] for e in await sp.find_by_document_id("SHARED")] == [a.id, b.id]
    assert await sp.find_by_document_id("nothing") == []
    ds = await sp.deliveries(a.id)
    assert [(d["recipient"], d["route"], d["state"], d["attempts"], d["crashes"]) for d in ds] == \
        [("R1", "mailbox", "queued", 0, 0), ("R2", "mailbox", "queued", 0, 0)]
    assert ds[0]["expires_at"] == ds[0]["created_at"] + LIFETIME
    assert await sp.delivery(ds[1]["id"]) == ds[1]
    assert await sp.deliveries("nope") == []
    assert await sp.has_delivery(a.id, "R2") and not await sp.has_delivery(a.id, "S")
    assert await sp.has_delivery(st.id, "S")


# -- links (revocations, updates, replacements) and irregularities ------------------------------

async def test_links_and_added_deliveries_commit_with_the_new_envelope(sp):
    orig = await sp.store(edoc(b"<orig/>", "O", recipients=("R1",)))
    upd = edoc(b"<upd/>", "U", recipients=("R1", "R2"))
    upd.irregularities = [{"code": "extra_trace_headers", "message": "relayed", "path": None}]
    upd.links = [NewLink("updates", orig.id, {"added": ["R3", "R1"], "removed": ["R2"]})]
    # R1 has the original already: no second delivery of it
    upd.added_deliveries = [AddedDelivery(orig.id, "R3", "mailbox"),
                            AddedDelivery(orig.id, "R1", "mailbox")]
    got = await sp.store(upd)
    assert got.added == [{"organ": "R3", "route": "mailbox", "id": orig.id}]
    assert [d["recipient"] for d in await sp.deliveries(orig.id)] == ["R1", "R3"]
    assert (await sp.envelope(upd.id))["irregularities"] == upd.irregularities
    assert (await sp.envelope(orig.id))["irregularities"] == []
    links = await sp.links_of([orig.id, upd.id, "nope"])
    (back,) = links[orig.id]
    (fwd,) = links[upd.id]
    assert (back["type"], back["id"], back["document_id"]) == ("updated_by", upd.id, "U")
    assert (fwd["type"], fwd["id"], fwd["document_id"]) == ("updates", orig.id, "O")
    assert fwd["detail"] == back["detail"] == {"added": ["R3", "R1"], "removed": ["R2"]}
    assert links["nope"] == []
    (accepted,) = await sp.events(kinds=["accepted"], message_id=upd.id)
    assert fwd["event_id"] == accepted.id
    assert accepted.detail["links"] == [{"type": "updates", "id": orig.id}]
    assert [e.kind for e in await sp.events(message_id=orig.id, kinds=["linked", "delivery_added"])] \
        == ["linked", "delivery_added"]
    assert await sp.links(orig.id) == links[orig.id]


async def test_a_revoked_document_takes_no_further_link(sp):
    orig = await sp.store(edoc(b"<o/>", "O"))
    rev = edoc(b"<r/>", "R")
    rev.links = [NewLink("revokes", orig.id)]
    await sp.store(rev)
    again = edoc(b"<r2/>", "R2")
    again.links = [NewLink("updates", orig.id)]
    with pytest.raises(ConflictError) as caught:
        await sp.store(again)
    assert caught.value.code == "document_revoked"
    assert await sp.find_document("S", "R2") is None  # nothing of it committed
    assert [link["type"] for link in await sp.links(orig.id)] == ["revoked_by"]


# -- receipts ----------------------------------------------------------------------------------

def receipt_row(rid: str, event_id: int, message_id: str, event: str, sender: str,
                recipient: str | None, state: str, at: float) -> tuple:
    return (rid, event_id, message_id, event, sender, recipient, state, None, at,
            f"<receipt id='{rid}'/>".encode())


async def test_receipts_store_query_and_cursor(sp, clock):
    a = await sp.store(edoc(b"<ra/>", "RA", recipients=("R1",)))
    b = await sp.store(edoc(b"<rb/>", "RB", recipients=("R2",), sender="S2"))
    await sp.ack("R1", a.id)
    t = clock.now
    rows = [receipt_row("X1", 1, a.id, "accepted", "S", None, "queued", t),
            receipt_row("X2", 2, b.id, "accepted", "S2", None, "queued", t + 1),
            receipt_row("X3", 3, a.id, "delivered", "S", "R1", "delivered", t + 2)]
    await sp.store_receipts(rows, "receipts.cursor", 3)
    assert await sp.get_meta("receipts.cursor") == {"receipts.cursor": "3"}
    # the same receipts again (a restart after the commit): stored once; the cursor never goes back
    await sp.store_receipts(rows[:1], "receipts.cursor", 1)
    assert await sp.get_meta("receipts.cursor") == {"receipts.cursor": "3"}
    everything = await sp.receipts({})
    assert [r["id"] for r in everything] == ["X1", "X2", "X3"]
    assert everything[0]["sha256"] == sha(b"<ra/>") and everything[0]["sig"] == "valid"
    assert everything[2]["recipient"] == "R1" and everything[2]["state"] == "delivered"
    seqs = [r["seq"] for r in everything]
    assert seqs == sorted(seqs)
    assert [r["id"] for r in await sp.receipts({"after": seqs[0], "limit": 1})] == ["X2"]
    # an agency sees receipts of what it sent or has a delivery of
    assert [r["id"] for r in await sp.receipts({"visible_to": "S"})] == ["X1", "X3"]
    assert [r["id"] for r in await sp.receipts({"visible_to": "R1"})] == ["X1", "X3"]
    assert [r["id"] for r in await sp.receipts({"visible_to": "R2"})] == ["X2"]
    assert await sp.receipts({"visible_to": "R9"}) == []
    assert [r["id"] for r in await sp.receipts({"message_id": a.id})] == ["X1", "X3"]
    assert [r["id"] for r in await sp.receipts({"organ": "R1"})] == ["X3"]
    assert [r["id"] for r in await sp.receipts({"organ": "S2"})] == ["X2"]
    assert [r["id"] for r in await sp.receipts({"event": "delivered"})] == ["X3"]
    assert [r["id"] for r in await sp.receipts({"state": "queued"})] == ["X1", "X2"]
    assert [r["id"] for r in await sp.receipts({"since": t + 1, "until": t + 2})] == ["X2"]
    doc = await sp.receipt("X3")
    assert doc == {"id": "X3", "message_id": a.id, "sender": "S", "recipient": "R1",
                   "xml": b"<receipt id='X3'/>"}
    assert await sp.receipt("none") is None
    await sp.store_receipts([], "receipts.cursor", 9)
    assert await sp.get_meta("receipts.cursor") == {"receipts.cursor": "9"}


async def test_receipt_sources(sp):
    a = await sp.store(edoc(b"<rs/>", "RS"))
    st = await sp.store(status(a.id, "R1", "S"))
    got = await sp.receipt_sources([a.id, st.id, "missing"])
    assert set(got) == {a.id, st.id}
    assert got[a.id] == {"id": a.id, "sender": "S", "dedup_key": "RS", "document_id": "RS",
                         "sha256": sha(b"<rs/>"), "status_code": None, "sig": "valid"}
    assert (got[st.id]["status_code"], got[st.id]["sig"], got[st.id]["document_id"]) == \
        ("03", "unsigned", None)
    assert await sp.receipt_sources([]) == {}


# -- checkpoints and meta ---------------------------------------------------------------------

async def test_checkpoints(sp, clock):
    assert await sp.checkpoint_head() is None
    await make_some_history(sp, clock)
    head_id, head_hash = await sp.event_head()
    assert await sp.checkpoint_head() == (head_id, head_hash, 0, 0)
    await sp.add_checkpoint({"id": 1, "at": clock.now, "event_id": 3, "head_hash": "h3",
                             "xml": b"<c1/>"})
    await sp.add_checkpoint({"id": 2, "at": clock.now + 1, "event_id": head_id,
                             "head_hash": head_hash, "xml": b"<c2/>"})
    assert await sp.checkpoint_head() == (head_id, head_hash, 2, head_id)
    cps = await sp.checkpoints()
    assert [(c["id"], c["event_id"], c["head_hash"], c["xml"]) for c in cps] == \
        [(1, 3, "h3", b"<c1/>"), (2, head_id, head_hash, b"<c2/>")]
    assert [c["id"] for c in await sp.checkpoints(after=1)] == [2]
    assert [c["id"] for c in await sp.checkpoints(limit=1)] == [1]
    with pytest.raises(HubError):  # checkpoint ids are unique
        await sp.add_checkpoint({"id": 2, "at": 0.0, "event_id": 1, "head_hash": "x", "xml": b""})


async def test_meta_prefix_and_update_with_events_atomically(sp):
    assert await sp.get_meta("issuer.") == {}
    await sp.update_meta({"issuer.a": "1", "issuer.b": "2", "other": "x"},
                         [("key_rotated", "HUB", {"serial": "01"})])
    assert await sp.get_meta("issuer.") == {"issuer.a": "1", "issuer.b": "2"}
    assert await sp.get_meta("issuer.a") == {"issuer.a": "1"}
    assert await sp.get_meta("") == {"issuer.a": "1", "issuer.b": "2", "other": "x"}
    (ev,) = await sp.events(kinds=["key_rotated"])
    assert (ev.organ, ev.detail) == ("HUB", {"serial": "01"})
    await sp.update_meta({"issuer.a": "3"})
    assert (await sp.get_meta("issuer.a")) == {"issuer.a": "3"}
    # all or nothing: an event that cannot be written keeps the values out too
    before = sp.last_event_id
    with pytest.raises(HubError):
        await sp.update_meta({"issuer.a": "4", "new": "y"},
                             [("fine", None, {}), ("broken", None, {"x": object()})])
    assert await sp.get_meta("issuer.a") == {"issuer.a": "3"}
    assert await sp.get_meta("new") == {}
    assert await sp.event_head() == (before, (await sp.events(after=before - 1))[0].hash)


async def test_stats(sp, clock):
    t0 = clock.now
    await sp.store(edoc(b"<s1/>", "S1", recipients=("R1", "R2")))
    clock.advance(5)
    p = await sp.store(edoc(b"<s2/>", "S2", route="provincial"))
    clock.advance(5)
    await sp.store(edoc(b"<s3/>", "S3", route="provincial"))
    a = await sp.find_document("S", "S1")
    await sp.ack("R1", a["id"])
    await sp.lease([await one_delivery(sp, p.id)], clock.now + 60)
    st = await sp.stats()
    assert sorted(st["deliveries"]) == [("active", "provincial", 1), ("delivered", "mailbox", 1),
                                        ("queued", "mailbox", 1), ("queued", "provincial", 1)]
    assert st["oldest_queued_at"] == t0 + 10
    assert st["oldest_unfetched_at"] == t0
    assert st["payload_bytes"] == await sp.payload_bytes() == 15
    await sp.ping()


# -- subscription -----------------------------------------------------------------------------

async def test_listeners_are_called_after_commit_with_the_events(sp):
    seen: list[tuple[list[int], int]] = []
    sp.add_listener(lambda events: seen.append(([e.id for e in events], sp.last_event_id)))
    sp.add_listener(lambda events: 1 / 0)  # a failing listener never stops the spool
    res = await sp.store(edoc(b"<l/>"))
    assert seen == [([1], 1)]
    await sp.ack("R1", res.id)
    assert seen[-1] == ([2], 2)
    assert [e.id for e in await sp.events()] == [1, 2]  # committed: readers see them


async def test_wait_for_events_wakes_and_times_out(sp):
    assert sp.last_event_id == 0
    assert not await sp.wait_for_events(0, 0.05)
    waiter = asyncio.ensure_future(sp.wait_for_events(0, 10))
    await asyncio.sleep(0)
    assert not waiter.done()
    ev = await sp.record_event("note")
    assert await asyncio.wait_for(waiter, 5) is True
    assert sp.last_event_id == ev.id
    assert await sp.wait_for_events(ev.id - 1, 0)  # already there: no wait
    assert not await sp.wait_for_events(ev.id, 0.01)


# -- life cycle -----------------------------------------------------------------------------

async def test_backup_copy_opens_read_only_with_the_same_events(backend, sp, clock, tmp_path):
    ids = await make_some_history(sp, clock)
    dest = tmp_path / "copy"
    await sp.backup(dest)
    await sp.record_event("after-the-backup")
    async with opened(backend.make(clock, location=dest), read_only=True) as copy:
        assert await copy.events(limit=10_000) == (await sp.events(limit=10_000))[:-1]
        assert await copy.event_head() == ((await sp.event_head())[0] - 1,
                                           (await sp.events())[-2].hash)
        assert [d["state"] for d in await copy.deliveries(ids[0])] == ["delivered", "queued"]


async def test_read_only_refuses_writes_and_creates_nothing(backend, clock, tmp_path):
    empty = tmp_path / "empty"
    with pytest.raises(HubError):
        async with opened(backend.make(clock, location=empty), read_only=True):
            pass
    assert not backend.has_store(empty)
    async with opened(backend.make(clock)) as sp:
        res = await sp.store(edoc(b"<ro/>"))
    async with opened(backend.make(clock), read_only=True) as ro:
        assert (await ro.envelope(res.id))["id"] == res.id
        assert len(await ro.events()) == 1
        with pytest.raises(SpoolError):
            await ro.store(edoc(b"<ro2/>", "D2"))
        with pytest.raises(SpoolError):
            await ro.record_event("note")
        with pytest.raises(SpoolError):
            await ro.ack("R1", res.id)
        with pytest.raises(SpoolError):
            await ro.lease([1], clock.now + 10)
    async with opened(backend.make(clock)) as sp:
        assert [e.kind for e in await sp.events()] == ["accepted"]
        assert (await sp.delivery(1))["state"] == "queued"


def test_every_operation_of_the_interface_is_exercised():
    """A new abstract method of ``Spool`` needs a test here."""
    source = Path(__file__).read_text(encoding="utf-8")
    missing = [name for name in sorted(Spool.__abstractmethods__) if f".{name}(" not in source
               and f".{name} " not in source]
    assert missing == []
