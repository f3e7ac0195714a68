"""The SQLite spool: durability, group commit, guarded transitions, the event chain."""
from __future__ import annotations

import asyncio
import hashlib
import sqlite3

import pytest

from hub.errors import ConflictError, NotFoundError, ValidationError
from spool import NewDelivery, NewEnvelope, State
from spool.sqlite.backend import SqliteSpool
from spool.ids import new_message_id
from spool.sqlite.migrations import MIGRATIONS
from spool.chain import GENESIS_HASH, event_hash
from support import eventually


def envelope(raw: bytes, doc: str = "D1", recipients=("R1",), sender: str = "S") -> NewEnvelope:
    return NewEnvelope(new_message_id(), "edoc", sender, doc, doc, hashlib.sha256(raw).hexdigest(),
                       raw, "subject", "1/UBND", None, None, {"result": "unsigned"}, "test",
                       [NewDelivery(r, "mailbox") for r in recipients])


@pytest.fixture
async def spool(tmp_path):
    sp = SqliteSpool(tmp_path, inline_limit=1024, commit_max_wait=0.005)
    await sp.open()
    yield sp
    await sp.close()


def spool_rows(sp: SqliteSpool, state: State, expected: int | None = None) -> list[tuple]:
    """Deliveries in ``state``, read with a separate connection (what is on disk)."""
    conn = sqlite3.connect(sp.db_path)
    rows = conn.execute("SELECT id, envelope_id, recipient FROM deliveries WHERE state = ?",
                        (state.value,)).fetchall()
    conn.close()
    if expected is not None:
        assert len(rows) == expected, rows
    return rows


async def test_schema_is_versioned_and_wal(spool):
    conn = sqlite3.connect(spool.db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_store_is_durable_and_visible_to_another_connection(spool):
    res = await spool.store(envelope(b"<x/>", recipients=("R1", "R2")))
    assert res.created
    rows = spool_rows(spool, State.QUEUED, expected=2)
    assert {r[2] for r in rows} == {"R1", "R2"}


async def test_small_payload_inline_large_as_file(spool):
    small, large = b"a" * 100, b"b" * 5000
    await spool.store(envelope(small, "D-small"))
    await spool.store(envelope(large, "D-large"))
    sha = hashlib.sha256(large).hexdigest()
    path = spool.payloads.path(sha)
    assert path.read_bytes() == large
    assert not list(path.parent.glob(".*.tmp"))  # atomic rename left no temporary
    assert await spool.payload(sha) == large
    assert await spool.payload(hashlib.sha256(small).hexdigest()) == small
    conn = sqlite3.connect(spool.db_path)
    assert conn.execute("SELECT data IS NULL, path FROM payloads WHERE sha256 = ?",
                        (sha,)).fetchone() == (1, spool.payloads.relpath(sha))
    conn.close()


async def test_duplicates_and_conflicts(spool):
    first = await spool.store(envelope(b"<one/>"))
    again = await spool.store(envelope(b"<one/>"))
    assert not again.created and again.id == first.id
    with pytest.raises(ConflictError):
        await spool.store(envelope(b"<two/>"))


async def test_concurrent_identical_submissions_become_one(spool):
    results = await asyncio.gather(*(spool.store(envelope(b"<same/>")) for _ in range(20)))
    assert len({r.id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    spool_rows(spool, State.QUEUED, expected=1)


async def test_group_commit_shares_transactions(spool):
    batches_before, ops_before = spool.batches, spool.batched_ops
    await asyncio.gather(*(spool.store(envelope(b"<d%d/>" % i, f"D{i}")) for i in range(200)))
    batches = spool.batches - batches_before
    assert spool.batched_ops - ops_before == 200
    assert batches < 50, f"{batches} commits for 200 concurrent stores"
    spool_rows(spool, State.QUEUED, expected=200)


async def test_one_failing_operation_does_not_sink_its_batch(spool):
    def boom(tx):
        tx.conn.execute("INSERT INTO statuses (envelope_id, organ, status_code, "
                        "status_envelope_id, received_at) VALUES ('x','y','01','z',0)")
        raise ValidationError("refused inside the batch", code="test_refusal")
    good = [spool.store(envelope(b"<g%d/>" % i, f"G{i}")) for i in range(5)]
    bad = spool.write(boom)
    results = await asyncio.gather(*good, bad, return_exceptions=True)
    assert isinstance(results[-1], ValidationError)
    assert all(r.created for r in results[:-1])
    conn = sqlite3.connect(spool.db_path)
    assert conn.execute("SELECT COUNT(*) FROM statuses").fetchone()[0] == 0  # rolled back
    conn.close()
    await spool_chain_ok(spool)


async def test_guarded_transition(spool):
    await spool.store(envelope(b"<t/>"))
    (delivery_id, _, _), = spool_rows(spool, State.QUEUED, expected=1)
    assert await spool.transition(delivery_id, (State.QUEUED,), State.ACTIVE)
    assert not await spool.transition(delivery_id, (State.QUEUED,), State.ACTIVE)
    assert await spool.transition(delivery_id, (State.ACTIVE,), State.DEFERRED,
                                  reason="timeout", last_error="timeout", attempts_inc=1)
    row = await spool.delivery(delivery_id)
    assert (row["state"], row["attempts"], row["last_error"]) == ("deferred", 1, "timeout")


async def test_ack_is_idempotent_and_guarded(spool):
    res = await spool.store(envelope(b"<a/>"))
    assert await spool.ack("R1", res.id) == "delivered"
    assert await spool.ack("R1", res.id) == "delivered"
    with pytest.raises(NotFoundError):
        await spool.ack("R2", res.id)


async def spool_chain_ok(spool):
    prev = GENESIS_HASH
    events = await spool.events(0, limit=100000)
    for n, ev in enumerate(events, 1):
        assert ev.id == n
        assert ev.prev_hash == prev
        import json
        assert ev.hash == event_hash(prev, ev.id, ev.at, ev.kind, ev.message_id, ev.delivery_id,
                                     ev.organ, ev.state, json.dumps(ev.detail, ensure_ascii=False,
                                                                    sort_keys=True, separators=(",", ":")))
        prev = ev.hash
    return events


async def test_event_chain_survives_reopen(tmp_path):
    sp = SqliteSpool(tmp_path)
    await sp.open()
    await sp.store(envelope(b"<1/>", "A"))
    await sp.close()
    sp = SqliteSpool(tmp_path)
    await sp.open()
    await sp.store(envelope(b"<2/>", "B"))
    events = await spool_chain_ok(sp)
    assert [e.kind for e in events] == ["accepted", "accepted"]
    await sp.close()


async def test_reopen_finds_everything(tmp_path):
    sp = SqliteSpool(tmp_path, inline_limit=10)
    await sp.open()
    res = await sp.store(envelope(b"<payload-on-disk/>"))
    await sp.close()
    sp = SqliteSpool(tmp_path, inline_limit=10)
    await sp.open()
    env = await sp.envelope(res.id)
    assert await sp.payload(env["sha256"]) == b"<payload-on-disk/>"
    await sp.close()


def test_message_ids_sort_by_time():
    a = new_message_id(1_700_000_000.0)
    b = new_message_id(1_700_000_000.5)
    assert len(a) == 26 and a < b


async def test_payload_bytes_is_kept_exact_without_scanning(tmp_path):
    # Given: a spool at schema 3 that already holds payloads (an upgrade)
    from spool.sqlite.migrations import _statements
    conn = sqlite3.connect(tmp_path / "spool.db", isolation_level=None)
    for number in range(3):
        for statement in _statements(MIGRATIONS[number]):
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.execute("INSERT INTO payloads (sha256, size, data, path, created_at) VALUES ('a', 7, x'00', NULL, 0)")
    conn.execute("INSERT INTO payloads (sha256, size, data, path, created_at) VALUES ('b', 5, NULL, NULL, 0)")
    conn.close()
    sp = SqliteSpool(tmp_path, inline_limit=1024, commit_max_wait=0.005)
    await sp.open()
    try:
        def scanned() -> int:
            c = sqlite3.connect(sp.db_path)
            n = c.execute("SELECT COALESCE(SUM(size), 0) FROM payloads "
                          "WHERE data IS NOT NULL OR path IS NOT NULL").fetchone()[0]
            c.close()
            return n
        # Then: the total starts from what was there (the retired row does not count)
        assert await sp.payload_bytes() == scanned() == 7
        # and follows inline and file payloads, duplicates, retention and re-sending
        small, large = envelope(b"s" * 100, "D1"), envelope(b"L" * 5000, "D2")
        for rec in (small, large, envelope(b"s" * 100, "D3")):
            await sp.store(rec)
        assert await sp.payload_bytes() == scanned() == 7 + 100 + 5000
        for row in spool_rows(sp, State.QUEUED):
            await sp.transition(row[0], (State.QUEUED,), State.DELIVERED)
        await sp.retire_payloads(sp.clock() + 1)
        assert await sp.payload_bytes() == scanned() < 7 + 100 + 5000
        after_retention = scanned()
        await sp.store(envelope(b"L" * 5000, "D4"))
        assert await sp.payload_bytes() == scanned() == after_retention + 5000
    finally:
        await sp.close()


async def test_checkpoints_run_beside_the_writer(spool):
    # The writer never checkpoints inside a COMMIT (wal_autocheckpoint=0); the
    # spool's own checkpointer folds the log into the database file soon after.
    from spool.sqlite import backend as spool_sqlite
    res = await spool.store(envelope(b"<x/>", "D-ck"))

    def in_database_file() -> int:
        # immutable=1 reads the database file alone, ignoring the write-ahead log
        conn = sqlite3.connect(f"file:{spool.db_path}?immutable=1", uri=True)
        try:
            return conn.execute("SELECT COUNT(*) FROM envelopes WHERE id = ?", (res.id,)).fetchone()[0]
        except sqlite3.DatabaseError:
            # not even the schema is in the file yet, or (immutable=1 takes no
            # lock) a checkpoint was writing it as we read: not there yet
            return 0
        finally:
            conn.close()
    assert in_database_file() == 0  # committed, in the log only
    await eventually(lambda: in_database_file() == 1, timeout=spool_sqlite.CHECKPOINT_SECONDS * 20,
                     what="the checkpointer folded the log into the database file")


async def test_the_log_starts_over_under_steady_traffic(tmp_path):
    # A passive checkpoint never folds the frames committed while it copies,
    # and SQLite only starts a log over once every frame is folded: with
    # writes that never pause, the log and its index (mapped into the hub's
    # memory) grew for as long as traffic lasted, ~25 KB per document here
    # (the soak's leak, bench/RESULTS.md).  A log past wal_restart_frames is
    # restarted instead, so its size stays bounded whatever the count.
    # Given: a spool that restarts its log past 1 MiB (256 frames), checking
    # every 50 ms (what a few checks' writes add to the log is the bound's slack)
    sp = SqliteSpool(tmp_path, commit_max_wait=0.002, checkpoint_seconds=0.05,
                     wal_restart_frames=256)
    await sp.open()
    wal, shm = sp.db_path.with_name("spool.db-wal"), sp.db_path.with_name("spool.db-shm")
    documents, stored, done = 6000, 0, asyncio.Event()
    largest = {"wal": 0, "shm": 0}

    async def sender(n: int) -> None:
        nonlocal stored
        while stored < documents:
            stored += 1
            raw = hashlib.sha256(str(stored).encode()).hexdigest().encode() * 50
            await sp.store(envelope(raw, f"D-{n}-{stored}", recipients=("R1", "R2")))

    async def poller() -> None:  # a mailbox recipient listing its inbox all along
        while not done.is_set():
            await sp.inbox("R1", limit=100)

    async def watch() -> None:
        while not done.is_set():
            for name, path in (("wal", wal), ("shm", shm)):
                if path.exists():
                    largest[name] = max(largest[name], path.stat().st_size)
            await asyncio.sleep(0.02)
    try:
        # When: 6,000 documents (~150 MiB of log without restarts) are stored by
        # 16 senders at once while the inbox is polled
        side = [asyncio.create_task(poller()), asyncio.create_task(watch())]
        await asyncio.gather(*(sender(n) for n in range(16)))
        done.set()
        await asyncio.gather(*side)
        # Then: the log stayed within a few checks' writes of the threshold,
        # and its index within a few 32 KiB blocks
        assert largest["wal"] < 40 * 2**20, largest
        assert largest["shm"] <= 128 * 2**10, largest
    finally:
        await sp.close()
