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


#: A link as stored (from the new document) and as seen from the other end.
LINK_TYPES = {"revokes": "revoked_by", "updates": "updated_by", "replaces": "replaced_by"}
#: A document's standing, from the links that point at it (first match wins).
STANDINGS = (("revoked_by", "revoked"), ("replaced_by", "replaced"), ("updated_by", "updated"))


def standing(link_types: "list[str] | set[str]") -> str:
    """``current`` | ``revoked`` | ``replaced`` | ``updated``, from a document's link types."""
    for link_type, name in STANDINGS:
        if link_type in link_types:
            return name
    return "current"


@dataclasses.dataclass(slots=True)
class NewLink:
    """A business document acting on an earlier one, stored with the new envelope."""

    #: ``revokes`` | ``updates`` | ``replaces``
    type: str
    #: The message id of the document acted on.
    to_id: str
    #: e.g. an update's ``{"added": [...], "removed": [...]}``
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(slots=True)
class AddedDelivery:
    """A new delivery of an EARLIER document, made by this one (an update's added receiver)."""

    envelope_id: str
    recipient: str
    route: str


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
    #: What was unusual about it (axis normalisation): [{"code", "message", "path"}].
    irregularities: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: The documents it revokes, updates or replaces (committed in the same transaction).
    links: list[NewLink] = dataclasses.field(default_factory=list)
    #: Deliveries of those documents it adds (an update's ReceiverType 1).
    added_deliveries: list[AddedDelivery] = dataclasses.field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.raw)


@dataclasses.dataclass(slots=True)
class StoreResult:
    id: str
    created: bool
    recipients: list[dict[str, str]]
    receipt_id: str | None = None
    #: Deliveries of earlier documents made by this one: [{"organ", "route", "id"}].
    added: list[dict[str, str]] = dataclasses.field(default_factory=list)


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
