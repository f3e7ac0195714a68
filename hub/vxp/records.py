"""Typed records of the platform's list answers (spec section 4), and their parsing.

Used by ``hub.vxp.client``; pure.  The SDK reads every field with Gson's
``getAsString`` (so numbers are accepted as strings) and treats every key as
optional; these records do the same, except that a received item without a
``docId`` is useless to a poller and is reported as a bad answer.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import NewType, TypeVar

#: A document's id on the platform (``DocId`` of the sendEdoc answer; uuid4-like).
DocId = NewType("DocId", str)


class RecordError(ValueError):
    """Raised when a list answer's ``data`` is not an array of objects as expected."""


def as_string(item: Mapping[str, object], key: str) -> str | None:
    """Gson's ``getAsString``: strings as is, numbers and booleans in Java's spelling."""
    value = item.get(key)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _as_int(item: Mapping[str, object], key: str) -> int | None:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _as_bool(item: Mapping[str, object], key: str) -> bool | None:
    value = item.get(key)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class ReceivedEdoc:
    """One item of getReceivedEdocList: a document or status waiting for this system."""

    doc_id: DocId
    service_type: str | None = None
    message_type: str | None = None
    created_time: str | None = None
    updated_time: str | None = None
    from_: str | None = None
    to: str | None = None
    status: str | None = None
    status_desc: str | None = None

    @classmethod
    def from_json(cls, item: Mapping[str, object]) -> ReceivedEdoc:
        doc_id = as_string(item, "docId")
        if not doc_id:
            raise RecordError("received item without docId")
        return cls(DocId(doc_id), as_string(item, "serviceType"), as_string(item, "messageType"),
                   as_string(item, "created_time"), as_string(item, "updated_time"),
                   as_string(item, "from"), as_string(item, "to"), as_string(item, "status"),
                   as_string(item, "status_desc"))


@dataclasses.dataclass(frozen=True, slots=True)
class SentEdoc:
    """One item of getSentEdocList: one recipient of a document this system sent."""

    sender_doc_id: str | None = None
    receiver_doc_id: str | None = None
    service_type: str | None = None
    message_type: str | None = None
    from_code: str | None = None
    to_code: str | None = None
    title: str | None = None
    notation: str | None = None
    sent_time: str | None = None
    received_time: str | None = None
    send_status: str | None = None
    send_status_desc: str | None = None
    receive_status: str | None = None
    receive_status_desc: str | None = None

    @classmethod
    def from_json(cls, item: Mapping[str, object]) -> SentEdoc:
        return cls(*(as_string(item, key) for key in (
            "senderDocId", "receiverDocId", "serviceType", "messageType", "fromCode", "toCode",
            "title", "notation", "sentTime", "receivedTime", "sendStatus", "sendStatusDesc",
            "receiveStatus", "receiveStatusDesc")))


@dataclasses.dataclass(frozen=True, slots=True)
class Agency:
    """One agency of getAgenciesList (``old_code``) or getAgenciesListQD20 (``code102``)."""

    id: str | None = None
    pid: str | None = None
    code: str | None = None
    name: str | None = None
    mail: str | None = None
    old_code: str | None = None
    code102: str | None = None

    @classmethod
    def from_json(cls, item: Mapping[str, object]) -> Agency:
        return cls(*(as_string(item, key) for key in (
            "id", "pid", "code", "name", "mail", "oldCode", "code102")))


@dataclasses.dataclass(frozen=True, slots=True)
class SyncUnit:
    """One unit of getSynchronizeUnit."""

    id: str | None = None
    pid: str | None = None
    code: str | None = None
    name: str | None = None
    mail: str | None = None
    version: int | None = None
    center_code: str | None = None
    deleted: bool | None = None
    modify_date: str | None = None
    is_agency: bool | None = None

    @classmethod
    def from_json(cls, item: Mapping[str, object]) -> SyncUnit:
        s = as_string
        return cls(s(item, "id"), s(item, "pid"), s(item, "code"), s(item, "name"),
                   s(item, "mail"), _as_int(item, "version"), s(item, "centerCode"),
                   _as_bool(item, "deleted"), s(item, "modifyDate"), _as_bool(item, "isAgency"))


R = TypeVar("R")


def parse_list(data: object, make: Callable[[Mapping[str, object]], R]) -> list[R]:
    """``data`` of a list answer as records; RecordError if it is not an array of objects."""
    if data is None:
        return []
    if not isinstance(data, list):
        raise RecordError("data is not an array")
    out: list[R] = []
    for item in data:
        if not isinstance(item, dict):
            raise RecordError("data holds a non-object")
        out.append(make(item))
    return out
