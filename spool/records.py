"""What the spool stores and hands back, as plain dataclasses.

These are the only types that cross between cleanup/qmgr and a spool backend,
so the SQLite and PostgreSQL backends stay interchangeable.
"""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(slots=True)
class NewDelivery:
    recipient: str
    route: str


@dataclasses.dataclass(slots=True)
class StatusRecord:
    """A business status received from ``organ`` about ``envelope_id``."""

    envelope_id: str
    organ: str
    status_code: str
    description: str | None
    timestamp: str | None


@dataclasses.dataclass(slots=True)
class NewEnvelope:
    id: str
    kind: str
    sender: str
    dedup_key: str
    document_id: str | None
    sha256: str
    #: The bytes, or a large body already on disk (``spool.payloads.SpooledBody``).
    raw: Any
    subject: str | None
    code: str | None
    status_code: str | None
    response_for: str | None
    signature: dict[str, Any]
    origin: str
    deliveries: list[NewDelivery]
    status: StatusRecord | None = None
    #: The signed acceptance receipt, committed with the envelope: (id, at, xml).
    receipt: tuple[str, float, bytes] | None = None

    @property
    def size(self) -> int:
        return len(self.raw)


@dataclasses.dataclass(slots=True)
class StoreResult:
    id: str
    created: bool
    recipients: list[dict[str, str]]
    receipt_id: str | None = None


@dataclasses.dataclass(slots=True)
class Event:
    """One line of the spool's append-only, hash-chained event log."""

    id: int
    at: float
    kind: str
    message_id: str | None
    delivery_id: int | None
    organ: str | None
    state: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
