"""The spool interface: every operation any caller uses, and nothing else.

Where it sits: below the stages (cleanup stores, the queue manager leases
and settles, the API and CLI read, receipts and the audit log are kept here),
above the format.  Like Django's ``db/backends/base/``, a backend implements
this class (``spool/sqlite/`` now; a PostgreSQL backend beside it later) and
no caller writes SQL or reaches a backend's private names.

Records crossing the interface are typed: the dataclasses of
``spool.records`` for what callers hand in, and the ``TypedDict`` rows below
for what they get back (plain dicts at run time, so they serialise to JSON
as they are, but with every key and type declared).

Guarantees every backend keeps
    * A write resolves only after its durable commit.
    * Every change appends to one hash-chained event log in the same
      transaction; the chain head is read from the database inside that
      transaction, so several writers (nodes) keep one chain.
    * A delivery changes state only by a guarded update (expected state).
    * A lease has an owner (the node) and a deadline (``lease_until``).
    * Listeners added with ``add_listener`` are called after each commit
      with the events it wrote (wake-ups only: the database holds the truth).
"""
from __future__ import annotations

import abc
import asyncio
import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypedDict

from spool.payloads import PayloadStore
from spool.records import Event, NewEnvelope, StoreResult
from spool.states import State


class EnvelopeRow(TypedDict):
    id: str
    kind: str
    sender: str
    dedup_key: str
    document_id: str | None
    sha256: str
    size: int
    subject: str | None
    code: str | None
    status_code: str | None
    response_for: str | None
    signature: dict[str, Any]
    origin: str
    received_at: float
    #: What was unusual about it, accepted (axis normalisation): [{"code", "message", "path"}].
    irregularities: list[dict[str, Any]]


class LinkRow(TypedDict):
    """A link as seen from one document: ``type`` is ``revokes``, ``updates``,
    ``replaces`` (this one acts on ``id``) or ``revoked_by``, ``updated_by``,
    ``replaced_by`` (``id`` acts on this one)."""
    type: str
    id: str
    document_id: str | None
    #: The accepted event of the acting document: the link holds from then on.
    event_id: int
    detail: dict[str, Any]


class DeliveryRow(TypedDict, total=False):
    id: int
    envelope_id: str
    recipient: str
    route: str
    state: str
    attempts: int
    crashes: int
    next_attempt_at: float
    expires_at: float
    created_at: float
    updated_at: float
    last_error: str | None
    business_status: str | None
    business_status_at: float | None
    fetched_at: float | None
    lease_owner: str | None
    lease_until: float | None
    # joined from the envelope in due/expired/queue/inbox_item views
    sha256: str
    kind: str
    sender: str
    document_id: str | None
    size: int
    subject: str | None
    received_at: float


class StatusRow(TypedDict):
    organ: str
    status_code: str
    description: str | None
    timestamp: str | None
    status_envelope_id: str
    received_at: float


class InboxRow(TypedDict):
    id: str
    kind: str
    sender: str
    document_id: str | None
    subject: str | None
    code: str | None
    status_code: str | None
    size: int
    sha256: str
    received_at: float
    delivery_id: int
    fetched_at: float | None


class SentRow(TypedDict):
    """One delivery of a document (or status) an organisation sent, with its states."""
    id: str
    kind: str
    document_id: str | None
    subject: str | None
    code: str | None
    status_code: str | None
    received_at: float
    recipient: str
    route: str
    state: str
    updated_at: float
    fetched_at: float | None
    business_status: str | None
    business_status_at: float | None


class ReceiptSource(TypedDict):
    """What a receipt says about its document (from the envelope row)."""
    id: str
    sender: str
    dedup_key: str
    document_id: str | None
    sha256: str
    status_code: str | None
    sig: str | None


class ReceiptRow(TypedDict):
    seq: int
    id: str
    message_id: str
    event: str
    sender: str
    recipient: str | None
    state: str
    business_status: str | None
    at: float
    sha256: str | None
    sig: str | None


class ReceiptDoc(TypedDict):
    id: str
    message_id: str
    sender: str
    recipient: str | None
    xml: bytes


class CheckpointRow(TypedDict):
    id: int
    at: float
    event_id: int
    head_hash: str
    xml: bytes


class StateChange(TypedDict):
    id: int
    message_id: str
    organ: str
    state: str


class Stats(TypedDict):
    deliveries: list[tuple[str, str, int]]
    oldest_queued_at: float | None
    oldest_unfetched_at: float | None
    payload_bytes: int


class ReceiptQuery(TypedDict, total=False):
    """Filters of ``Spool.receipts``; all optional."""
    after: int
    limit: int
    #: An agency's view: only receipts of documents it sent or has a delivery of.
    visible_to: str
    message_id: str
    organ: str
    event: str
    state: str
    since: float
    until: float


class EventQuery(TypedDict, total=False):
    after: int
    limit: int
    upto: int
    organ: str
    message_id: str
    kinds: Sequence[str]
    state: str
    since: float
    until: float


#: A receipt to store: (id, event_id, message_id, event, sender, recipient,
#: state, business_status, at, xml).
ReceiptValues = tuple[str, int, str, str, str, "str | None", str, "str | None", float, bytes]
Listener = Callable[[list[Event]], None]


class Spool(abc.ABC):
    """The durable store of one hub (or of several nodes sharing a database)."""

    #: The backend's name (``sqlite``, ``postgres``), shown in metrics.
    backend: str
    #: Where payloads above the inline limit live (shared by every backend).
    payloads: PayloadStore
    #: Identifies this process's leases (``host:pid:random``).
    node_id: str

    # -- life cycle ------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self, *, read_only: bool = False) -> None:
        """Open for the hub; ``read_only``: only reads, nothing created or migrated."""
    @abc.abstractmethod
    async def close(self) -> None: ...
    @abc.abstractmethod
    async def ping(self) -> None: ...
    @abc.abstractmethod
    async def backup(self, dest: Path) -> dict[str, int]:
        """A consistent copy of the database, payload files and keys into ``dest``
        (new or empty) while the hub runs; counts of files copied."""

    # -- store and transitions -----------------------------------------------------
    @contextlib.contextmanager
    def announce(self) -> Iterator[None]:
        """An accept is on its way: a group-committing backend may wait for it."""
        yield

    @abc.abstractmethod
    async def store(self, rec: NewEnvelope) -> StoreResult:
        """Commit a new envelope, its payload and one delivery per recipient."""
    @abc.abstractmethod
    async def transition(self, delivery_id: int, expected: Sequence[State], new: State,
                         **fields: Any) -> bool:
        """Guarded state change; False when the delivery was not in ``expected``."""
    @abc.abstractmethod
    async def ack(self, organ: str, message_id: str) -> str: ...
    @abc.abstractmethod
    async def mark_fetched(self, delivery_id: int) -> None: ...
    @abc.abstractmethod
    def record_event(self, kind: str, *, message_id: str | None = None,
                     organ: str | None = None, **detail: Any) -> "asyncio.Future[Event]":
        """Append one event to the log (refusals, notes), in the next commit."""

    # -- leases ----------------------------------------------------------------------
    @abc.abstractmethod
    async def lease(self, ids: Sequence[int], until: float) -> list[int]:
        """Move due deliveries to ``active``, owned by this node until ``until``."""
    @abc.abstractmethod
    async def extend_leases(self, ids: Sequence[int], until: float) -> int:
        """Renew this node's leases of attempts still running."""
    @abc.abstractmethod
    async def reclaim_expired(self, now: float, crash_limit: int) -> tuple[int, int]:
        """Leases of any node past their deadline go back to the queue (or to
        ``corrupt`` after ``crash_limit``); returns (requeued, quarantined)."""
    @abc.abstractmethod
    async def recover(self, crash_limit: int) -> tuple[int, int]:
        """At start: reclaim this node's own leases and expired ones, never a
        live lease of another node."""
    @abc.abstractmethod
    async def requeue_active(self, reason: str) -> int:
        """Clean shutdown: hand back this node's leases without counting a crash."""

    # -- queue views and operators --------------------------------------------------
    @abc.abstractmethod
    async def due(self, now: float, routes: Sequence[str], limit: int) -> list[DeliveryRow]: ...
    @abc.abstractmethod
    async def expired(self, now: float, limit: int = 500) -> list[DeliveryRow]: ...
    @abc.abstractmethod
    async def next_due_at(self, routes: Sequence[str]) -> float | None: ...
    @abc.abstractmethod
    async def queue(self, *, states: Sequence[str] = (), route: str | None = None,
                    organ: str | None = None, older_than: float | None = None,
                    message_id: str | None = None, after: int = 0,
                    limit: int = 100) -> list[DeliveryRow]: ...
    @abc.abstractmethod
    async def operator_action(self, target: str, action: str, reason: str,
                              by: str) -> tuple[bool, list[dict[str, Any]]]: ...
    @abc.abstractmethod
    async def payload_paths(self) -> set[str]: ...
    @abc.abstractmethod
    async def retire_payloads(self, before: float) -> list[str]: ...

    # -- documents and the inbox ----------------------------------------------------
    @abc.abstractmethod
    async def envelope(self, message_id: str) -> EnvelopeRow | None: ...
    @abc.abstractmethod
    async def find_document(self, sender: str, document_id: str) -> EnvelopeRow | None: ...
    @abc.abstractmethod
    async def find_by_document_id(self, document_id: str) -> list[EnvelopeRow]:
        """Every edoc whose DocumentId is ``document_id`` (any sender)."""
    @abc.abstractmethod
    async def links_of(self, message_ids: Sequence[str]) -> dict[str, list[LinkRow]]:
        """Every link of these documents, both ways, in the order they were made."""
    async def links(self, message_id: str) -> list[LinkRow]:
        return (await self.links_of([message_id])).get(message_id, [])
    @abc.abstractmethod
    async def deliveries(self, message_id: str) -> list[DeliveryRow]: ...
    @abc.abstractmethod
    async def delivery(self, delivery_id: int) -> DeliveryRow | None: ...
    @abc.abstractmethod
    async def has_delivery(self, message_id: str, organ: str) -> bool: ...
    @abc.abstractmethod
    async def statuses(self, message_id: str) -> list[StatusRow]: ...
    @abc.abstractmethod
    async def payload(self, sha256: str, *, path_over: int | None = None) -> bytes | Path: ...
    @abc.abstractmethod
    async def inbox(self, organ: str, *, after: int = 0, limit: int = 100,
                    kind: str | None = None) -> list[InboxRow]:
        """What waits in ``organ``'s mailbox (``kind``: only edoc or only status)."""
    @abc.abstractmethod
    async def inbox_count(self, organ: str, *, kind: str | None = None) -> int:
        """How many items wait in ``organ``'s mailbox (of ``kind``, when given)."""
    @abc.abstractmethod
    async def sent(self, organ: str, *, kind: str | None = None, message_id: str | None = None,
                   limit: int = 500) -> list[SentRow]:
        """The deliveries of what ``organ`` sent, newest document first (the national-SDK
        door's getSentEdocList): one row per document and recipient."""
    @abc.abstractmethod
    async def inbox_item(self, organ: str, message_id: str) -> DeliveryRow | None: ...

    # -- events, receipts, checkpoints ----------------------------------------------
    @abc.abstractmethod
    async def events(self, after: int = 0, limit: int = 500, *, organ: str | None = None,
                     message_id: str | None = None, kinds: Sequence[str] = (),
                     state: str | None = None) -> list[Event]: ...
    @abc.abstractmethod
    async def query_events(self, query: EventQuery) -> list[Event]:
        """The audit view: events by id range, time, organ, message, kinds, state."""
    @abc.abstractmethod
    async def chain_entries(self, after: int, upto: int, limit: int) -> list[dict[str, Any]]:
        """Event rows as stored, ``detail`` as its stored text, for verifying the
        chain byte for byte (a parsed and re-serialised detail could hide an edit)."""
    @abc.abstractmethod
    async def event_head(self) -> tuple[int, str] | None:
        """The newest committed event's (id, hash), read from the database."""
    @abc.abstractmethod
    async def state_history(self, message_ids: Sequence[str],
                            before: int) -> list[StateChange]:
        """``state`` events of these documents with id < ``before``, in order."""
    @abc.abstractmethod
    async def delivery_pairs(self, message_ids: Sequence[str]) -> set[tuple[str, str]]:
        """(message id, recipient) of every delivery of these documents."""
    @abc.abstractmethod
    async def receipt_sources(self, message_ids: Sequence[str]) -> dict[str, ReceiptSource]: ...
    @abc.abstractmethod
    async def store_receipts(self, rows: Sequence[ReceiptValues], cursor_key: str,
                             cursor: int) -> None:
        """The receipts and the issuer's cursor, in one commit (the cursor never goes back)."""
    @abc.abstractmethod
    async def receipts(self, query: ReceiptQuery) -> list[ReceiptRow]: ...
    @abc.abstractmethod
    async def receipt(self, receipt_id: str) -> ReceiptDoc | None: ...
    @abc.abstractmethod
    async def checkpoint_head(self) -> tuple[int, str, int, int] | None:
        """(head event id, head hash, last checkpoint id, its event id), in one snapshot."""
    @abc.abstractmethod
    async def add_checkpoint(self, row: CheckpointRow) -> None: ...
    @abc.abstractmethod
    async def checkpoints(self, after: int = 0, limit: int | None = None) -> list[CheckpointRow]: ...

    # -- meta, stats, subscription ---------------------------------------------------
    @abc.abstractmethod
    async def get_meta(self, prefix: str) -> dict[str, str]:
        """Every meta key starting with ``prefix`` (a key itself is a prefix)."""
    @abc.abstractmethod
    async def update_meta(self, values: dict[str, str],
                          events: Sequence[tuple[str, str | None, dict[str, Any]]] = ()) -> None:
        """Set meta keys and append events (kind, organ, detail) in one commit."""
    @abc.abstractmethod
    async def has_events(self) -> bool: ...
    @abc.abstractmethod
    async def stats(self) -> Stats: ...
    @abc.abstractmethod
    async def payload_bytes(self) -> int: ...
    @abc.abstractmethod
    def add_listener(self, fn: Listener) -> None: ...
    @property
    @abc.abstractmethod
    def last_event_id(self) -> int: ...
    @abc.abstractmethod
    async def wait_for_events(self, after: int, timeout: float) -> bool: ...
