"""The SQLite spool backend: the embedded default (aiosqlite, WAL).

Where it sits: cleanup hands it accepted envelopes (``store``); the queue
manager and the API change delivery states through it (``transition``,
``ack``); everything else reads.  It holds the whole truth of the hub.

Strategy
    * One writer connection, one reader connection.  WAL lets readers run
      beside the writer; ``synchronous=FULL`` makes every COMMIT durable.
    * Group commit: every write is a small synchronous function queued to the
      writer task.  The writer takes everything waiting (up to
      ``commit_max_batch``; it waits at most ``commit_max_wait`` for accepts
      announced as on their way), runs the whole batch in the database thread
      in ONE transaction, each operation inside its own SAVEPOINT (one bad
      operation fails alone), and COMMITs once: one fsync for many documents.
      Only then are the callers' futures resolved, so nothing is acknowledged
      before it is durable.
    * Checkpoints beside the writer: a connection of its own folds the
      write-ahead log into the database file every ``CHECKPOINT_SECONDS``
      (PASSIVE, never blocking anyone), and starts the log over (RESTART)
      once it is ``WAL_RESTART_FRAMES`` long.  Under steady traffic a
      passive checkpoint never catches the writer up, and SQLite only
      rewinds a log that was folded completely: the log (and its index,
      mapped into the hub's memory) would otherwise grow for as long as
      traffic lasts.
    * Every change appends to ``events`` in the same transaction: a dense,
      hash-chained log (each row carries the hash of the one before).  The
      live tail, the audit log and receipts are all read from it.

Diagnostics
    ``SpoolError`` when the database cannot be written (the caller answers
    503 and the sender retries); ``ConflictError`` for a DocumentId re-used
    with other content.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import aiosqlite

from hub.errors import ConflictError, HubError, NotFoundError, SpoolError
from hub.private import FILE_MODE, private_dir, private_file, tighten
from spool.sqlite.migrations import migrate
from spool.payloads import PayloadStore, SpooledBody
from spool.records import LINK_TYPES, Event, NewEnvelope, StoreResult
from spool.base import (DeliveryRow, EnvelopeRow, InboxRow, LinkRow, SentRow, Spool, Stats,
                        StatusRow)
from spool.sqlite.log import LogMixin
from spool.sqlite.queue import QueueMixin
from spool.sqlite.tx import EVENT_COLUMNS, Chain, Tx, row_to_event, transition
from spool.states import State

log = logging.getLogger("hub.spool")

WriteFn = Callable[[Tx], Any]


class _Op:
    __slots__ = ("fn", "future", "announced")

    def __init__(self, fn: WriteFn, future: asyncio.Future[Any], announced: bool = False) -> None:
        self.fn = fn
        self.future = future
        #: Queued by an accept that announced itself: it has arrived, stop waiting for it.
        self.announced = announced


#: How often the checkpointer folds the write-ahead log into the database.
CHECKPOINT_SECONDS = 0.25
#: A log this many frames long (64 MiB of pages) is started over: see ``_fold``.
WAL_RESTART_FRAMES = 16384
#: SQLite's default page size, which the spool keeps (bytes).
PAGE = 4096
#: Before a restart, passive passes again (at most this many) while more than
#: this many frames are left to fold.
CATCH_UP_PASSES, CATCH_UP_FRAMES = 4, 256
#: The longest a restart holds the writer back waiting for a reader (milliseconds).
RESTART_WAIT_MS = 200
#: What ``close`` allows the last checkpoint to wait for readers (milliseconds).
CLOSE_WAIT_MS = 10000


class SqliteSpool(QueueMixin, LogMixin, Spool):
    backend = "sqlite"

    def __init__(self, data_dir: Path, *, inline_limit: int = 65536,
                 commit_max_wait: float = 0.002, commit_max_batch: int = 256,
                 maximal_lifetime: float = 5 * 86400, node_id: str = "",
                 checkpoint_seconds: float = CHECKPOINT_SECONDS,
                 wal_restart_frames: int = WAL_RESTART_FRAMES,
                 clock: Callable[[], float] = time.time) -> None:
        self.data_dir = Path(data_dir)
        self.db_path = self.data_dir / "spool.db"
        self.payloads = PayloadStore(self.data_dir / "payloads")
        self.inline_limit = inline_limit
        self.commit_max_wait = commit_max_wait
        self.commit_max_batch = commit_max_batch
        self.maximal_lifetime = maximal_lifetime
        self.checkpoint_seconds = checkpoint_seconds
        self.wal_restart_frames = wal_restart_frames
        self.clock = clock
        self.node_id = node_id or f"{socket.gethostname()}:{self.data_dir.resolve()}"
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None
        self._ck: aiosqlite.Connection | None = None
        self._ck_task: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[_Op | None] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._expecting = 0
        self._committed_event_id = 0  # what readers can see
        self._new_event = asyncio.Event()
        self._listeners: list[Callable[[list[Event]], None]] = []
        self.batches = 0
        self.batched_ops = 0

    # -- life cycle --------------------------------------------------------

    async def open(self, *, read_only: bool = False) -> None:
        """Open for the hub; ``read_only`` opens only a reader, for offline
        tools (``lienthong audit verify --db``): nothing is created or migrated."""
        if read_only:
            if not self.db_path.exists():
                raise NotFoundError(f"no spool database at {self.db_path}")
            self._r = await aiosqlite.connect(f"{self.db_path.resolve().as_uri()}?mode=ro",
                                              uri=True, isolation_level=None)
            self._r.row_factory = sqlite3.Row
            return
        private_dir(self.data_dir)
        # -wal and -shm take the database file's mode: make it private before SQLite does.
        private_file(self.db_path)
        for side in ("-wal", "-shm"):
            tighten(Path(f"{self.db_path}{side}"), FILE_MODE)
        self._w = await aiosqlite.connect(self.db_path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON",
                       "busy_timeout=10000", "cache_size=-65536"):
            await self._w.execute(f"PRAGMA {pragma}")
        await self._in_writer(migrate)
        self._r = await aiosqlite.connect(self.db_path, isolation_level=None)
        self._r.row_factory = sqlite3.Row
        await self._r.execute("PRAGMA busy_timeout=10000")
        await self._r.execute("PRAGMA query_only=ON")
        row = await self._one("SELECT MAX(id) AS id FROM events")
        self._committed_event_id = row["id"] or 0 if row is not None else 0
        # Checkpoints off the writer's path: SQLite's automatic checkpoint runs
        # inside the COMMIT that crosses the threshold, and on a large spool
        # it writes pages all over the database file while every accept in
        # that batch waits.  A connection of its own checkpoints instead
        # (PASSIVE: concurrent with the writer and readers, never blocking;
        # only a long log's restart holds the writer back briefly, ``_fold``).
        await self._w.execute("PRAGMA wal_autocheckpoint=0")
        # After a restart the writer's next commit cuts a log file that grew
        # long while a reader held it back down to this size.
        await self._w.execute(f"PRAGMA journal_size_limit={2 * self.wal_restart_frames * PAGE}")
        self._ck = await aiosqlite.connect(self.db_path, isolation_level=None)
        await self._ck.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
        self._ck_task = asyncio.create_task(self._checkpointer(), name="spool-checkpoint")
        self._writer_task = asyncio.create_task(self._writer(), name="spool-writer")

    async def _checkpointer(self) -> None:
        conn = self._ck
        assert conn is not None
        while True:
            await asyncio.sleep(self.checkpoint_seconds)
            try:
                await conn._execute(_fold, conn._conn, self.wal_restart_frames)
            except sqlite3.Error as exc:
                log.warning("spool checkpoint failed (will retry): %s", exc)

    async def close(self) -> None:
        if self._writer_task is not None:
            await self._queue.put(None)
            await self._writer_task
            self._writer_task = None
        if self._ck_task is not None:
            self._ck_task.cancel()
            await asyncio.gather(self._ck_task, return_exceptions=True)
            self._ck_task = None
        if self._ck is not None:
            await self._ck.execute(f"PRAGMA busy_timeout={CLOSE_WAIT_MS}")
            await self._ck.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            await self._ck.close()
            self._ck = None
        for conn in (self._r, self._w):
            if conn is not None:
                await conn.close()
        self._r = self._w = None

    async def _in_writer(self, fn: Callable[..., Any], *args: Any) -> Any:
        # One hop into aiosqlite's database thread for a whole batch, instead
        # of one per statement: the writer's cost is then SQLite's, not ours.
        conn = self._w
        assert conn is not None
        return await conn._execute(fn, conn._conn, *args)

    # -- the writer ----------------------------------------------------------

    @contextlib.contextmanager
    def announce(self) -> Iterator[None]:
        """Tell the writer an accept is on its way, so it may wait for it briefly."""
        self._expecting += 1
        try:
            yield
        finally:
            self._expecting -= 1

    def write(self, fn: WriteFn, *, announced: bool = False) -> "asyncio.Future[Any]":
        """Queue ``fn(tx)`` for the next group commit; resolves after COMMIT."""
        if self._writer_task is None:
            raise SpoolError("the spool is not open")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Op(fn, fut, announced))
        return fut

    async def _writer(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            arrived = int(first.announced)
            deadline = loop.time() + self.commit_max_wait
            while len(batch) < self.commit_max_batch:
                try:
                    op = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    # Wait only for accepts still on their way: one whose store is
                    # already in this batch is not coming again (a lone accept
                    # would otherwise wait out commit_max_wait for itself).
                    if self._expecting <= arrived or loop.time() >= deadline:
                        break
                    await asyncio.sleep(min(0.0005, max(0.0, deadline - loop.time())))
                    continue
                if op is None:
                    stopping = True
                    break
                batch.append(op)
                arrived += op.announced
            await self._commit_batch(batch)

    async def _commit_batch(self, batch: list[_Op]) -> None:
        try:
            results = await self._in_writer(self._run_batch, [op.fn for op in batch])
        except Exception as exc:  # the COMMIT itself failed: nobody is acknowledged
            log.error("spool commit failed for %d operations: %s", len(batch), exc)
            err = SpoolError(f"the spool could not commit: {exc}")
            for op in batch:
                if not op.future.done():
                    op.future.set_exception(err)
            return
        self.batches += 1
        self.batched_ops += len(batch)
        published: list[Event] = []
        for op, (ok, value, events) in zip(batch, results):
            published.extend(events)
            if op.future.done():
                continue
            if ok:
                op.future.set_result(value)
            else:
                op.future.set_exception(value)
        if published:
            self._publish(published)

    def _run_batch(self, conn: sqlite3.Connection, fns: Sequence[WriteFn]) -> list[tuple[bool, Any, list[Event]]]:
        now = self.clock()
        results: list[tuple[bool, Any, list[Event]]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            chain = Chain(conn)
            for fn in fns:
                saved = (chain.id, chain.hash)
                conn.execute("SAVEPOINT op")
                tx = Tx(conn, now, chain)
                try:
                    value = fn(tx)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    chain.id, chain.hash = saved
                    if not isinstance(exc, HubError):
                        log.exception("spool operation failed")
                        exc = SpoolError(f"spool operation failed: {exc}")
                    results.append((False, exc, []))
                else:
                    conn.execute("RELEASE op")
                    results.append((True, value, tx.events))
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return results

    # -- events ----------------------------------------------------------------

    def add_listener(self, fn: Callable[[list[Event]], None]) -> None:
        self._listeners.append(fn)

    def _publish(self, events: list[Event]) -> None:
        self._committed_event_id = max(self._committed_event_id, events[-1].id)
        for fn in self._listeners:
            try:
                fn(events)
            except Exception:  # a listener never stops the spool
                log.exception("event listener failed")
        self._new_event.set()
        self._new_event = asyncio.Event()

    @property
    def last_event_id(self) -> int:
        """The newest committed event (readers can see it)."""
        return self._committed_event_id

    async def wait_for_events(self, after: int, timeout: float) -> bool:
        """Wait until an event newer than ``after`` is committed (or timeout)."""
        if self._committed_event_id > after:
            return True
        waiter = self._new_event
        try:
            await asyncio.wait_for(waiter.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- writes ---------------------------------------------------------------

    async def store(self, rec: NewEnvelope) -> StoreResult:
        """Commit a new envelope, its payload and one delivery per recipient."""
        payload_rel = None
        if rec.size > self.inline_limit:
            payload_rel = await asyncio.to_thread(self.payloads.put, rec.sha256, rec.raw)
        elif isinstance(rec.raw, SpooledBody):  # an inline_limit above the HTTP spill size
            rec.raw = await asyncio.to_thread(rec.raw.read)
        return await self.write(lambda tx: _store(tx, rec, payload_rel, self.inline_limit,
                                                  self.maximal_lifetime), announced=True)

    async def transition(self, delivery_id: int, expected: Sequence[State], new: State,
                         **fields: Any) -> bool:
        """Guarded state change; False when the delivery was not in ``expected``."""
        return await self.write(lambda tx: transition(tx, delivery_id, expected, new, **fields))

    def record_event(self, kind: str, *, message_id: str | None = None,
                     organ: str | None = None, **detail: Any) -> "asyncio.Future[Event]":
        return self.write(lambda tx: tx.event(kind, message_id=message_id, organ=organ, **detail))

    async def backup(self, dest: Path) -> dict[str, int]:
        """A consistent copy of the data directory into ``dest`` (new or empty),
        safe while the hub runs: ``spool.db`` through SQLite's online backup
        API on the reader (one snapshot; the writer goes on meanwhile), then
        the payload files, keys and secrets.  Payload files are immutable once
        renamed into place, so copying them after the snapshot gives every row
        its file, unless retention deleted it in between (its payload was due
        to go anyway).  Files in flight (``payloads/incoming``, ``outgoing``)
        and ``run/`` are left out.  Works on a spool opened ``read_only``."""
        dest = Path(dest)
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise SpoolError(f"backup destination {dest} is not an empty directory",
                             code="backup_failed")
        dest.mkdir(parents=True, exist_ok=True)

        def copy(conn: sqlite3.Connection) -> None:
            target = sqlite3.connect(dest / "spool.db")
            try:
                conn.backup(target)
                target.execute("PRAGMA journal_mode=WAL")
            finally:
                target.close()
        conn = self._r
        assert conn is not None
        try:
            await conn._execute(copy, conn._conn)
        except sqlite3.Error as exc:
            raise SpoolError(f"cannot back up {self.db_path}: {exc}", code="backup_failed") from None
        return await asyncio.to_thread(self._copy_files, dest)

    def _copy_files(self, dest: Path) -> dict[str, int]:
        import shutil
        copied = {"payloads": 0, "files": 0}
        skip = (self.data_dir / "payloads" / "incoming", self.data_dir / "payloads" / "outgoing")
        for part in ("payloads", "keys", "secrets"):
            root = self.data_dir / part
            for path in sorted(root.rglob("*")) if root.is_dir() else []:
                if any(path == d or d in path.parents for d in skip) or not path.is_file():
                    continue
                target = dest / path.relative_to(self.data_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copy2(path, target)
                except FileNotFoundError:  # deleted since the listing (retention, sweep)
                    continue
                copied["payloads" if part == "payloads" else "files"] += 1
        return copied

    async def ack(self, organ: str, message_id: str) -> str:
        """The mailbox owner confirms it has the document: ``delivered``."""
        return await self.write(lambda tx: _ack(tx, organ, message_id))

    async def mark_fetched(self, delivery_id: int) -> None:
        await self.write(lambda tx: tx.conn.execute(
            "UPDATE deliveries SET fetched_at = COALESCE(fetched_at, ?) WHERE id = ?",
            (tx.now, delivery_id)))

    # -- reads ------------------------------------------------------------------

    # A read is one hop into the reader's thread (execute, fetch and close
    # together), not aiosqlite's three: each hop is two thread wake-ups, and
    # on a busy hub those cost more than the queries.

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        conn = self._r
        assert conn is not None
        return await conn._execute(_fetch, conn._conn, sql, params, True)

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        conn = self._r
        assert conn is not None
        return await conn._execute(_fetch, conn._conn, sql, params, False)

    async def envelope(self, message_id: str) -> EnvelopeRow | None:
        row = await self._one("SELECT * FROM envelopes WHERE id = ?", (message_id,))
        return _envelope_dict(row) if row is not None else None

    async def find_document(self, sender: str, document_id: str) -> EnvelopeRow | None:
        row = await self._one("SELECT * FROM envelopes WHERE sender = ? AND dedup_key = ? "
                              "AND kind = 'edoc'", (sender, document_id))
        return _envelope_dict(row) if row is not None else None

    async def find_by_document_id(self, document_id: str) -> list[EnvelopeRow]:
        rows = await self._all("SELECT * FROM envelopes WHERE document_id = ? AND kind = 'edoc' "
                               "ORDER BY received_at", (document_id,))
        return [_envelope_dict(r) for r in rows]

    async def links_of(self, message_ids: Sequence[str]) -> dict[str, list[LinkRow]]:
        out: dict[str, list[LinkRow]] = {m: [] for m in message_ids}
        if not message_ids:
            return out
        marks = ",".join("?" * len(message_ids))
        rows = await self._all(
            f"SELECT l.id AS n, l.from_id AS me, l.type, l.to_id AS other, e.document_id, "
            f"l.event_id, l.detail, 0 AS back FROM links l JOIN envelopes e ON e.id = l.to_id "
            f"WHERE l.from_id IN ({marks}) UNION ALL "
            f"SELECT l.id, l.to_id, l.type, l.from_id, e.document_id, l.event_id, l.detail, 1 "
            f"FROM links l JOIN envelopes e ON e.id = l.from_id WHERE l.to_id IN ({marks}) "
            f"ORDER BY 1, 8", (*message_ids, *message_ids))
        for r in rows:
            out[r["me"]].append(LinkRow(
                type=LINK_TYPES[r["type"]] if r["back"] else r["type"], id=r["other"],
                document_id=r["document_id"], event_id=r["event_id"],
                detail=json.loads(r["detail"])))
        return out

    async def deliveries(self, message_id: str) -> list[DeliveryRow]:
        rows = await self._all("SELECT * FROM deliveries WHERE envelope_id = ? ORDER BY id",
                               (message_id,))
        return [DeliveryRow(**r) for r in rows]  # type: ignore[typeddict-item]

    async def delivery(self, delivery_id: int) -> DeliveryRow | None:
        row = await self._one("SELECT * FROM deliveries WHERE id = ?", (delivery_id,))
        return DeliveryRow(**row) if row is not None else None  # type: ignore[typeddict-item]

    async def has_delivery(self, message_id: str, organ: str) -> bool:
        return await self._one("SELECT 1 FROM deliveries WHERE envelope_id = ? AND recipient = ?",
                               (message_id, organ)) is not None

    async def statuses(self, message_id: str) -> list[StatusRow]:
        rows = await self._all("SELECT organ, status_code, description, timestamp, "
                               "status_envelope_id, received_at FROM statuses "
                               "WHERE envelope_id = ? ORDER BY id", (message_id,))
        return [StatusRow(**r) for r in rows]  # type: ignore[typeddict-item]

    async def payload(self, sha256: str, *, path_over: int | None = None) -> bytes | Path:
        """The payload's bytes; with ``path_over``, the file's path instead when
        it is larger than that (read it, never change it).  A payload file
        whose bytes no longer hash to ``sha256`` raises ``PayloadCorruptError``."""
        row = await self._one("SELECT data, path, size FROM payloads WHERE sha256 = ?", (sha256,))
        if row is None:
            raise NotFoundError(f"payload {sha256} is not in the spool")
        if row["data"] is not None:
            return bytes(row["data"])
        if row["path"] is None:
            raise NotFoundError(f"payload {sha256} was removed by retention")
        # A file is checked against its digest on every read (a flipped bit on
        # disk must never reach a recipient): hashed as it is read, or, for a
        # file handed out by path, read through once before.
        if path_over is not None and row["size"] > path_over:
            return await asyncio.to_thread(self.payloads.verify, row["path"], sha256)
        return await asyncio.to_thread(self.payloads.get, row["path"], sha256)

    async def inbox(self, organ: str, *, after: int = 0, limit: int = 100,
                    kind: str | None = None) -> list[InboxRow]:
        """What waits in ``organ``'s mailbox, in commit order.

        Paged on the delivery id, which the single writer assigns in commit
        order, so a client that keeps its cursor between polls never skips a
        document committed after its last poll (message ids are minted before
        the commit and need not arrive in order)."""
        only = " AND e.kind = ?" if kind else ""
        rows = await self._all(
            "SELECT e.id, e.kind, e.sender, e.document_id, e.subject, e.code, e.status_code, "
            "e.size, e.sha256, e.received_at, d.id AS delivery_id, d.fetched_at "
            "FROM deliveries d JOIN envelopes e ON e.id = d.envelope_id "
            "WHERE d.recipient = ? AND d.route = 'mailbox' AND d.state = 'queued' "
            f"AND d.id > ?{only} ORDER BY d.id LIMIT ?",
            (organ, after, *((kind,) if kind else ()), limit))
        return [InboxRow(**r) for r in rows]  # type: ignore[typeddict-item]

    async def inbox_count(self, organ: str, *, kind: str | None = None) -> int:
        only = " AND e.kind = ?" if kind else ""
        row = await self._one(
            "SELECT COUNT(*) AS n FROM deliveries d JOIN envelopes e ON e.id = d.envelope_id "
            f"WHERE d.recipient = ? AND d.route = 'mailbox' AND d.state = 'queued'{only}",
            (organ, *((kind,) if kind else ())))
        return int(row["n"]) if row else 0

    async def sent(self, organ: str, *, kind: str | None = None, message_id: str | None = None,
                   limit: int = 500) -> list[SentRow]:
        where: list[str] = ["e.sender = ?"]
        params: list[Any] = [organ]
        if kind:
            where.append("e.kind = ?")
            params.append(kind)
        if message_id:
            where.append("e.id = ?")
            params.append(message_id)
        rows = await self._all(
            "SELECT e.id, e.kind, e.document_id, e.subject, e.code, e.status_code, e.received_at, "
            "d.recipient, d.route, d.state, d.updated_at, d.fetched_at, d.business_status, "
            "d.business_status_at FROM envelopes e JOIN deliveries d ON d.envelope_id = e.id "
            f"WHERE {' AND '.join(where)} ORDER BY e.received_at DESC, e.id DESC, d.id LIMIT ?",
            (*params, limit))
        return [SentRow(**r) for r in rows]  # type: ignore[typeddict-item]

    async def inbox_item(self, organ: str, message_id: str) -> DeliveryRow | None:
        row = await self._one(
            "SELECT d.*, e.sha256, e.kind, e.sender FROM deliveries d "
            "JOIN envelopes e ON e.id = d.envelope_id "
            "WHERE d.envelope_id = ? AND d.recipient = ? AND d.route = 'mailbox'",
            (message_id, organ))
        return DeliveryRow(**row) if row is not None else None  # type: ignore[typeddict-item]

    async def events(self, after: int = 0, limit: int = 500, *, organ: str | None = None,
                     message_id: str | None = None, kinds: Sequence[str] = (),
                     state: str | None = None) -> list[Event]:
        where: list[str] = ["id > ?"]
        params: list[Any] = [after]
        if organ:
            where.append("organ = ?")
            params.append(organ)
        if message_id:
            where.append("message_id = ?")
            params.append(message_id)
        if state:
            where.append("state = ?")
            params.append(state)
        if kinds:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            params.extend(kinds)
        rows = await self._all(f"SELECT {EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} "
                               f"ORDER BY id LIMIT ?", (*params, limit))
        return [row_to_event(r) for r in rows]

    async def stats(self) -> Stats:
        """Counts for metrics and readiness: deliveries by state and route, the oldest queued."""
        rows = await self._all("SELECT state, route, COUNT(*) AS n FROM deliveries "
                               "GROUP BY state, route")
        oldest = await self._one("SELECT MIN(created_at) AS t FROM deliveries "
                                 "WHERE state IN ('queued', 'deferred') AND route != 'mailbox'")
        oldest_mailbox = await self._one("SELECT MIN(created_at) AS t FROM deliveries "
                                         "WHERE state = 'queued' AND route = 'mailbox'")
        return {"deliveries": [(r["state"], r["route"], r["n"]) for r in rows],
                "oldest_queued_at": oldest["t"] if oldest else None,
                "oldest_unfetched_at": oldest_mailbox["t"] if oldest_mailbox else None,
                "payload_bytes": await self.payload_bytes()}

    async def payload_bytes(self) -> int:
        """Bytes of payload the spool holds (backpressure reads only this): the
        total the triggers of migration 4 keep, not a sum over every payload row."""
        row = await self._one("SELECT payload_bytes AS n FROM spool_totals WHERE id = 1")
        return row["n"] if row else 0

    async def ping(self) -> None:
        await self._one("SELECT 1")


def _fold(conn: sqlite3.Connection, restart_frames: int) -> tuple[int, int, int]:
    """One checkpoint (in the checkpointer's thread): (busy, log frames, frames folded).

    PASSIVE copies what it can while the writer goes on, so it does the bulk
    of the work.  It can never fold the frames committed during its own
    copy, though, and SQLite starts a log over only once every frame in it
    is folded and no reader still reads from it: under steady traffic that
    moment never comes.  So a log past ``restart_frames`` gets a RESTART,
    which holds the writer back while it folds what PASSIVE left and waits
    (at most the connection's ``busy_timeout``) for readers to leave the
    log; the writer's next transaction then writes from its start.  Passive
    passes run again first, so that what is left is the frames of one short
    pass, not all that was committed while a pass copied pages all over a
    large database: on a spool of 1,000,000 deliveries a restart still
    holds the writer ~100 ms (the database file's fsync of those pages),
    about once a second under full load.  A restart that found a reader
    still there (busy) is tried again next time.
    """
    busy, frames, folded = _fetch(conn, "PRAGMA wal_checkpoint(PASSIVE)", (), True)
    if frames < restart_frames:
        return busy, frames, folded
    # What RESTART folds, it folds holding the writer back: first let passive
    # passes catch up with what was committed while the last one copied.
    for _ in range(CATCH_UP_PASSES):
        if frames - folded <= CATCH_UP_FRAMES:
            break
        busy, frames, folded = _fetch(conn, "PRAGMA wal_checkpoint(PASSIVE)", (), True)
    return _fetch(conn, "PRAGMA wal_checkpoint(RESTART)", (), True)


def _fetch(conn: sqlite3.Connection, sql: str, params: Sequence[Any], one: bool) -> Any:
    cur = conn.execute(sql, params)
    try:
        return cur.fetchone() if one else cur.fetchall()
    finally:
        cur.close()


def _envelope_dict(row: sqlite3.Row) -> EnvelopeRow:
    d = dict(row)
    d["signature"] = json.loads(d["signature"])
    d["irregularities"] = json.loads(d["irregularities"])
    return EnvelopeRow(**d)  # type: ignore[typeddict-item]


# -- write operations (run in the database thread, inside a SAVEPOINT) ---------

def _store(tx: Tx, rec: NewEnvelope, payload_rel: str | None, inline_limit: int,
           lifetime: float) -> StoreResult:
    c = tx.conn
    row = c.execute("SELECT id, sha256 FROM envelopes WHERE sender = ? AND dedup_key = ?",
                    (rec.sender, rec.dedup_key)).fetchone()
    if row is not None:
        if row[1] == rec.sha256:
            recips = c.execute("SELECT recipient, route FROM deliveries WHERE envelope_id = ? "
                               "ORDER BY id", (row[0],)).fetchall()
            receipt = c.execute("SELECT id FROM receipts WHERE message_id = ? AND event = 'accepted'",
                                (row[0],)).fetchone()
            return StoreResult(row[0], False, [{"organ": r, "route": rt} for r, rt in recips],
                               receipt[0] if receipt else None)
        raise ConflictError(
            f"DocumentId {rec.document_id!r} was already sent by {rec.sender} with other content",
            details={"document_id": rec.document_id, "existing_id": row[0]})
    inline = rec.raw if payload_rel is None else None
    c.execute("INSERT OR IGNORE INTO payloads (sha256, size, data, path, created_at) "
              "VALUES (?,?,?,?,?)", (rec.sha256, rec.size, inline, payload_rel, tx.now))
    if payload_rel is not None:  # an earlier copy may have been inline or retired
        c.execute("UPDATE payloads SET path = ? WHERE sha256 = ? AND data IS NULL",
                  (payload_rel, rec.sha256))
    else:  # an earlier copy's bytes may have been retired: this document brings them back
        c.execute("UPDATE payloads SET data = ? WHERE sha256 = ? AND data IS NULL "
                  "AND path IS NULL", (inline, rec.sha256))
    _check_not_revoked(tx, rec)
    c.execute("INSERT INTO envelopes (id, kind, sender, dedup_key, document_id, sha256, size, "
              "subject, code, status_code, response_for, signature, origin, received_at, "
              "irregularities) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
              (rec.id, rec.kind, rec.sender, rec.dedup_key, rec.document_id, rec.sha256, rec.size,
               rec.subject, rec.code, rec.status_code, rec.response_for,
               json.dumps(rec.signature, ensure_ascii=False), rec.origin, tx.now,
               json.dumps(rec.irregularities, ensure_ascii=False)))
    c.executemany("INSERT INTO deliveries (envelope_id, recipient, route, state, next_attempt_at, "
                  "expires_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                  [(rec.id, d.recipient, d.route, State.QUEUED.value, tx.now, tx.now + lifetime,
                    tx.now, tx.now) for d in rec.deliveries])
    recipients = [{"organ": d.recipient, "route": d.route} for d in rec.deliveries]
    extra: dict[str, Any] = {}
    if rec.irregularities:
        extra["irregularities"] = rec.irregularities
    if rec.links:
        extra["links"] = [{"type": link.type, "id": link.to_id} for link in rec.links]
    accepted = tx.event("accepted", message_id=rec.id, organ=rec.sender, state=State.QUEUED.value,
                        kind_of=rec.kind, document_id=rec.document_id, sha256=rec.sha256,
                        size=rec.size, recipients=recipients,
                        signature=rec.signature.get("result"), origin=rec.origin, **extra)
    added = _links(tx, rec, accepted.id, lifetime)
    receipt_id = None
    if rec.receipt is not None:
        receipt_id, at, xml = rec.receipt
        c.execute("INSERT INTO receipts (id, event_id, message_id, event, sender, recipient, state, "
                  "business_status, at, xml) VALUES (?,?,?,?,?,?,?,?,?,?)",
                  (receipt_id, accepted.id, rec.id, "accepted", rec.sender, None,
                   State.QUEUED.value, rec.status_code, at, xml))
    if rec.status is not None:
        s = rec.status
        c.execute("INSERT INTO statuses (envelope_id, organ, status_code, description, timestamp, "
                  "status_envelope_id, received_at) VALUES (?,?,?,?,?,?,?)",
                  (s.envelope_id, s.organ, s.status_code, s.description, s.timestamp, rec.id, tx.now))
        c.execute("UPDATE deliveries SET business_status = ?, business_status_at = ? "
                  "WHERE envelope_id = ? AND recipient = ?",
                  (s.status_code, tx.now, s.envelope_id, s.organ))
        tx.event("status_received", message_id=s.envelope_id, organ=s.organ,
                 status_code=s.status_code, status_message_id=rec.id, description=s.description)
    return StoreResult(rec.id, True, recipients, receipt_id, added)


def _check_not_revoked(tx: Tx, rec: NewEnvelope) -> None:
    for link in rec.links:
        row = tx.conn.execute("SELECT from_id FROM links WHERE to_id = ? AND type = 'revokes'",
                              (link.to_id,)).fetchone()
        if row is not None:
            raise ConflictError(f"document {link.to_id} was revoked by {row[0]}: it can be "
                                f"neither revoked, updated nor replaced any more",
                                code="document_revoked",
                                details={"id": link.to_id, "revoked_by": row[0]})


def _links(tx: Tx, rec: NewEnvelope, event_id: int, lifetime: float) -> list[dict[str, str]]:
    """The new document's links, a ``linked`` event on each document acted on,
    and the deliveries of those documents it adds (``delivery_added`` events)."""
    c = tx.conn
    for link in rec.links:
        c.execute("INSERT INTO links (from_id, type, to_id, event_id, detail) VALUES (?,?,?,?,?)",
                  (rec.id, link.type, link.to_id, event_id,
                   json.dumps(link.detail, ensure_ascii=False)))
        tx.event("linked", message_id=link.to_id, organ=rec.sender, type=LINK_TYPES[link.type],
                 by=rec.id, document_id=rec.document_id)
    added = []
    for d in rec.added_deliveries:
        cur = c.execute("INSERT OR IGNORE INTO deliveries (envelope_id, recipient, route, state, "
                        "next_attempt_at, expires_at, created_at, updated_at) "
                        "VALUES (?,?,?,?,?,?,?,?)",
                        (d.envelope_id, d.recipient, d.route, State.QUEUED.value, tx.now,
                         tx.now + lifetime, tx.now, tx.now))
        if cur.rowcount != 1:
            continue  # the recipient has it already
        tx.event("delivery_added", message_id=d.envelope_id, delivery_id=cur.lastrowid,
                 organ=d.recipient, state=State.QUEUED.value, route=d.route, by=rec.id)
        added.append({"organ": d.recipient, "route": d.route, "id": d.envelope_id})
    return added


def _ack(tx: Tx, organ: str, message_id: str) -> str:
    row = tx.conn.execute("SELECT id, state FROM deliveries WHERE envelope_id = ? AND recipient = ? "
                          "AND route = 'mailbox'", (message_id, organ)).fetchone()
    if row is None:
        raise NotFoundError(f"message {message_id} is not in the inbox of {organ}")
    delivery_id, state = row
    if state == State.DELIVERED.value:
        return state  # acknowledging twice is harmless
    if state != State.QUEUED.value:
        raise ConflictError(f"message {message_id} cannot be acknowledged: its delivery is {state}",
                            code="not_deliverable", details={"state": state})
    tx.conn.execute("UPDATE deliveries SET fetched_at = COALESCE(fetched_at, ?) WHERE id = ?",
                    (tx.now, delivery_id))
    transition(tx, delivery_id, (State.QUEUED,), State.DELIVERED, reason="acknowledged by recipient")
    return State.DELIVERED.value

