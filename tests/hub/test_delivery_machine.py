"""The delivery state machine under random operation (hypothesis, stateful).

A real hub (``open_hub`` with the queue manager driven by hand and a manual
clock; a mailbox and a stub adapter on the ``provincial`` route) takes random
steps: documents submitted (again, too), fetched and acknowledged (twice),
statuses sent back, operator hold/release/retry/drop, queue scans, the stub
deferring or refusing for a while, the clock moving (backoff, lease expiry,
lifetime expiry), an outcome the spool could not record, and an unclean stop
(leases left active, reopened with recovery).

After every step:

* nothing accepted is lost: every accepted message id has its envelope, the
  original bytes, and one delivery per recipient;
* a mailbox never shows a message twice, and the stub is never asked to
  deliver a mailbox delivery;
* delivery to the push route is at least once and at most once per lost
  outcome: with ``S(d)`` the stub's successful deliveries of delivery ``d``
  and ``L(d)`` those whose outcome could not be recorded (the spool refused
  the write, then either the hub stopped uncleanly or the lease expired),
  ``S(d) <= 1 + L(d)``, and a ``delivered`` push delivery has ``S(d) >= 1``;
* every ``state`` event of the log moves a delivery along a move listed in
  spool/states.py's docstring (the old state is the delivery's previous
  ``state`` event, ``queued`` at acceptance);
* the audit chain verifies.

Sizes: the ``ci`` profile (tests/conftest.py, the default) runs a fixed set
of examples; ``HYPOTHESIS_PROFILE=long`` many more, randomised.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path

from hypothesis import settings as hsettings, strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, invariant, precondition, rule,
                                 run_state_machine_as_test)

import spool.states
from adapters.mailbox import MailboxAdapter
from adapters.stub import StubAdapter
from hub.audit.auditor import verify_spool
from hub.auth import Identity
from hub.cleanup import accept as cleanup
from hub.clock import ManualClock
from hub.config import build_settings
from hub.edxml import samples
from hub.errors import ConflictError
from hub.node import open_hub
from support import AN_BINH, MAU_A, SO_NOIVU, VP_UBND

LOCAL = (MAU_A, AN_BINH, VP_UBND, "000.03.48.H63")  #: mailbox units, senders and recipients
PUSH = "provincial"                                  #: the stub's route (SO_NOIVU is on it)
FINAL = {"delivered", "failed", "corrupt"}


def allowed_moves() -> set[tuple[str, str]]:
    """The ``from -> to`` lines of spool/states.py's docstring."""
    moves = set(re.findall(r"^\s+(\w+)\s+->\s+(\w+)\s", spool.states.__doc__ or "", re.M))
    assert len(moves) >= 10, "spool/states.py lists the moves of a delivery"
    return moves


MOVES = allowed_moves()


class RefuseDelivered:
    """While in place, the spool's database refuses to record ``delivered``
    (as a full disk would): an outcome the adapter reached is not recorded."""

    def __init__(self, db: Path) -> None:
        self.db = db

    def __enter__(self) -> "RefuseDelivered":
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as conn:
            conn.execute("CREATE TRIGGER machine_refuse_delivered BEFORE UPDATE OF state ON deliveries "
                         "WHEN NEW.state = 'delivered' BEGIN "
                         "SELECT RAISE(ABORT, 'disk I/O error (injected by the test)'); END")
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as conn:
            conn.execute("DROP TRIGGER IF EXISTS machine_refuse_delivered")


class DeliveryMachine(RuleBasedStateMachine):
    #: Development keys (set by the test from its fixture).
    keys: Path

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = Path(tempfile.mkdtemp(prefix="lt-machine-"))
        self.clock = ManualClock()
        self.settings = build_settings({
            "data_dir": str(self.tmp / "var"), "cpu_workers": 0,
            "hub_key_file": str(self.keys / "hub.key"), "hub_cert_file": str(self.keys / "hub.pem"),
            "trust_ca_file": str(self.keys / "ca.pem"),
            "minimal_backoff": "60s", "maximal_backoff": "1000s", "maximal_lifetime": "1d",
            "lease_time": "600s", "crash_limit": 3})
        self.stack: contextlib.AsyncExitStack | None = None
        self.hub = None
        self.stub: StubAdapter | None = None
        self.fail_times, self.refuse = 0, False
        #: message id -> (raw, sender, recipients) of what was accepted
        self.accepted: dict[str, tuple[bytes, str, frozenset[str]]] = {}
        self.edocs: list[str] = []
        self.successes: collections.Counter[int] = collections.Counter()
        self.lost: collections.Counter[int] = collections.Counter()
        self.seen_stub = 0
        self.last_state: dict[int, str] = {}
        self.event_cursor = 0
        self.n = 0
        self.run(self.open())

    # -- plumbing ------------------------------------------------------------------

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    async def open(self) -> None:
        self.stub = StubAdapter(PUSH, {})
        self.stub.fail_times, self.stub.refuse = self.fail_times, self.refuse
        self.seen_stub = 0
        self.stack = contextlib.AsyncExitStack()
        self.hub = await self.stack.enter_async_context(open_hub(
            self.settings, clock=self.clock, run_queue=True, queue_auto=False,
            adapters={"mailbox": MailboxAdapter("mailbox", {}), PUSH: self.stub}))

    async def close(self, *, clean: bool = True) -> None:
        if not clean:
            self.hub.qmgr = None  # no clean stop: its leases stay active, as after kill -9
        await self.stack.aclose()
        self.hub = self.stack = None

    def teardown(self) -> None:
        try:
            if self.stack is not None:
                self.run(self.close())
        finally:
            self.loop.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def count_stub(self, *, lost: bool = False) -> None:
        """Account the stub's successful deliveries since last looked."""
        for req in self.stub.delivered[self.seen_stub:]:
            self.successes[req.delivery_id] += 1
            if lost:
                self.lost[req.delivery_id] += 1
        self.seen_stub = len(self.stub.delivered)

    async def queue_run(self) -> None:
        await self.hub.qmgr.scan()
        await self.hub.qmgr.drain()
        await self.hub.notices.catch_up()

    def pick(self, i: int, items: list[str]) -> str:
        return items[i % len(items)]

    # -- rules ---------------------------------------------------------------------

    @rule(sender=st.sampled_from(LOCAL),
          to=st.sets(st.sampled_from((*LOCAL, SO_NOIVU)), min_size=1, max_size=3))
    def submit(self, sender: str, to: set[str]) -> None:
        recipients = sorted(to - {sender}) or [SO_NOIVU]
        self.n += 1
        raw = samples.edoc(sender, recipients, f"sm{self.n}", size=1024)
        res = self.run(cleanup.accept(self.hub, raw, Identity(sender, "agency")))
        assert res.created and res.id not in self.accepted
        self.accepted[res.id] = (raw, sender, frozenset(recipients))
        self.edocs.append(res.id)

    @precondition(lambda self: self.accepted)
    @rule(i=st.integers(0, 1 << 16))
    def resubmit(self, i: int) -> None:
        message_id = self.pick(i, list(self.accepted))
        raw, sender, _ = self.accepted[message_id]
        res = self.run(cleanup.accept(self.hub, raw, Identity(sender, "agency")))
        assert (res.id, res.created) == (message_id, False)

    def mailbox_pair(self, i: int, j: int) -> tuple[str, str] | None:
        pairs = [(m, r) for m, (_, _, rs) in self.accepted.items() for r in sorted(rs) if r in LOCAL]
        return pairs[(i * 7 + j) % len(pairs)] if pairs else None

    @precondition(lambda self: self.accepted)
    @rule(i=st.integers(0, 1 << 16), j=st.integers(0, 3))
    def fetch(self, i: int, j: int) -> None:
        pair = self.mailbox_pair(i, j)
        if pair is None:
            return
        message_id, organ = pair
        item = self.run(self.hub.spool.inbox_item(organ, message_id))
        if item is not None:
            self.run(self.hub.spool.mark_fetched(item["id"]))

    @precondition(lambda self: self.accepted)
    @rule(i=st.integers(0, 1 << 16), j=st.integers(0, 3), twice=st.booleans())
    def ack(self, i: int, j: int, twice: bool) -> None:
        pair = self.mailbox_pair(i, j)
        if pair is None:
            return
        message_id, organ = pair
        for _ in range(2 if twice else 1):
            try:
                state = self.run(self.hub.spool.ack(organ, message_id))
            except ConflictError as exc:  # held, dropped, expired: not acknowledgeable
                assert exc.code == "not_deliverable"
                state = exc.details["state"]
                assert state != "delivered"
            else:
                assert state == "delivered"

    @precondition(lambda self: self.edocs)
    @rule(i=st.integers(0, 1 << 16), code=st.sampled_from(("01", "03", "05", "06")))
    def status(self, i: int, code: str) -> None:
        message_id = self.pick(i, self.edocs)
        raw, sender, recipients = self.accepted[message_id]
        local = sorted(r for r in recipients if r in LOCAL)
        if not local or sender not in LOCAL:
            return
        by = local[i % len(local)]
        env = self.run(self.hub.spool.envelope(message_id))
        reply = samples.status(by, sender, env["document_id"], code)
        res = self.run(cleanup.accept(self.hub, reply, Identity(by, "agency")))
        if res.created:
            self.accepted[res.id] = (reply, by, frozenset({sender}))

    @precondition(lambda self: self.accepted)
    @rule(i=st.integers(0, 1 << 16), action=st.sampled_from(("hold", "release", "retry", "drop")))
    def operator(self, i: int, action: str) -> None:
        message_id = self.pick(i, list(self.accepted))
        found, _changed = self.run(self.hub.spool.operator_action(message_id, action, "machine",
                                                                  "operator"))
        assert found

    @rule()
    def queue_scan(self) -> None:
        self.run(self.queue_run())
        self.count_stub()

    @rule(fail_times=st.integers(0, 3), refuse=st.sampled_from((False, False, False, True)))
    def stub_behaviour(self, fail_times: int, refuse: bool) -> None:
        self.fail_times, self.refuse = fail_times, refuse
        self.stub.fail_times, self.stub.refuse = fail_times, refuse

    @rule(seconds=st.sampled_from((30, 61, 601, 1001, 86_401)))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.run(self.hub.qmgr.reclaim())
        self.run(self.hub.qmgr.expire())
        self.run(self.hub.notices.catch_up())

    @rule()
    def outcome_not_recorded(self) -> None:
        """The stub delivers, the spool cannot record it: the lease stays until it expires."""
        with RefuseDelivered(self.hub.spool.db_path):
            self.run(self.queue_run())
            self.count_stub(lost=True)

    @rule(lose_outcomes=st.booleans(), lease_queued=st.booleans())
    def crash(self, lose_outcomes: bool, lease_queued: bool) -> None:
        """An unclean stop with deliveries active, then a start with recovery."""
        if lose_outcomes:
            with RefuseDelivered(self.hub.spool.db_path):
                self.run(self.queue_run())
                self.count_stub(lost=True)
        if lease_queued:  # leased for an attempt that never started
            due = self.run(self.hub.spool.due(self.clock.now, [PUSH], 5))
            self.run(self.hub.spool.lease([d["id"] for d in due], self.clock.now + 600))
        self.run(self.close(clean=False))
        self.run(self.open())

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def nothing_accepted_is_lost(self) -> None:
        async def check() -> None:
            for message_id, (raw, _sender, recipients) in self.accepted.items():
                env = await self.hub.spool.envelope(message_id)
                assert env is not None, message_id
                assert await self.hub.spool.payload(env["sha256"]) == raw
                got = {d["recipient"] for d in await self.hub.spool.deliveries(message_id)}
                assert got == set(recipients), (message_id, got, recipients)
        self.run(check())

    @invariant()
    def delivered_once_per_mailbox_at_least_once_by_push(self) -> None:
        async def check() -> None:
            for organ in LOCAL:
                ids = [i["id"] for i in await self.hub.spool.inbox(organ, limit=1000)]
                assert len(ids) == len(set(ids)), (organ, ids)
            assert all(req.route == PUSH for req in self.stub.attempts)
            for message_id, (_raw, _sender, recipients) in self.accepted.items():
                for d in await self.hub.spool.deliveries(message_id):
                    if d["route"] != PUSH:
                        continue
                    got = self.successes[d["id"]]
                    assert got <= 1 + self.lost[d["id"]], (d, got, self.lost[d["id"]])
                    if d["state"] == "delivered":
                        assert got >= 1, d
        self.run(check())

    @invariant()
    def states_move_only_along_allowed_moves(self) -> None:
        async def check() -> None:
            while True:
                events = await self.hub.spool.events(self.event_cursor, 500)
                if not events:
                    return
                for ev in events:
                    self.event_cursor = ev.id
                    if ev.kind != "state" or ev.delivery_id is None:
                        continue
                    old = self.last_state.get(ev.delivery_id, "queued")
                    assert (old, ev.state) in MOVES, (ev.delivery_id, old, ev.state, ev.detail)
                    self.last_state[ev.delivery_id] = ev.state
        self.run(check())

    @invariant()
    def the_audit_chain_verifies(self) -> None:
        report = self.run(verify_spool(self.hub.spool, [self.hub.keys.cert]))
        assert report.ok, report


def machine_settings() -> hsettings:
    """Small and fixed under the default ``ci`` profile; large under ``long``."""
    if os.environ.get("HYPOTHESIS_PROFILE") == "long":
        return hsettings(max_examples=200, stateful_step_count=80)
    return hsettings(max_examples=40, stateful_step_count=40)


def test_the_delivery_state_machine(dev_keys):
    DeliveryMachine.keys = dev_keys
    run_state_machine_as_test(DeliveryMachine, settings=machine_settings())


def test_the_moves_are_the_documented_ones():
    # the docstring's list covers the operator's moves and both ends of the diagram
    for action, (sources, target) in spool.states.OPERATOR_MOVES.items():
        for source in sources:
            assert (source.value, target.value) in MOVES, action
    states = {s.value for s in spool.states.State}
    assert {a for a, _ in MOVES} | {b for _, b in MOVES} == states
    assert not {a for a, _ in MOVES} & FINAL  # nothing leaves a final state
