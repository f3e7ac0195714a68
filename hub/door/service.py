"""The national-SDK door: software written for the axis's SDKVXP talks to the hub.

Where it sits: an ingress beside the HTTP API (``hub.api.door`` is its HTTP
edge; this module knows no HTTP).  A request's signature headers are checked
with ``hub.vxp.protocol.verify_request`` against the secret of the signed
``systemid`` (``hub.door.credentials``); the system id names one
organisation of the directory, which the request then acts as, with the
``agency`` role, exactly as a bearer token would:

* ``sendEdoc`` hands the file to cleanup (``accept``, origin ``door``): one
  path into the spool, the same checks, receipts and audit events as
  ``POST /v1/envelopes``; its ``DocId`` is the hub's message id;
* ``getReceivedEdocList``/``getEdoc``/``updateStatus`` are the organisation's
  mailbox, the same one as ``GET /v1/inbox`` (``done`` acknowledges: the
  delivery becomes ``delivered``; ``processing`` and ``fail`` are recorded as
  a ``door_status`` event and leave the item in the mailbox);
* ``getSentEdocList`` shows the deliveries of what it sent, with their states;
* the agency lists show the hub's directory; ``registerAgency`` and
  ``deleteAgency`` are refused (the directory is the hub's, not the caller's).

Refusals raise ``DoorRefusal`` (or any ``hub.errors.HubError``): the edge
answers ``status: FAIL`` with the error's ``code`` as ``ErrorCode``.
Verification codes are those of ``hub.vxp.protocol``; the door adds
``from_mismatch``, ``bad_request``, ``bad_status``, ``not_found``,
``not_allowed``, and cleanup's codes come through as they are.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Awaitable, Callable

from hub.auth import Identity
from hub.cleanup.accept import accept
from hub.context import HubContext
from hub.door.credentials import DoorSecrets
from hub.door.refusals import RefusalLog
from hub.errors import AuthError, ConflictError, HubError, NotFoundError, PayloadCorruptError
from hub.quarantine import quarantine
from hub.vxp.protocol import PREFIX, SIGN_HEADER, VN_TZ, VerifiedRequest, VxpAuthError, verify_request
from spool.base import InboxRow, SentRow
from spool.states import State

#: Most items one list answer carries (the SDK has no paging: acknowledged
#: items leave the mailbox, so the next call shows the next ones).
LIST_LIMIT = 500
#: Bodies above this are hashed (and documents encoded) in a thread, off the event loop.
HASH_INLINE = 1 << 20
MESSAGE_TYPES = ("edoc", "status")
STATUSES = ("done", "fail", "processing")
#: The hub's delivery states, as the SDK's sendStatusDesc (ASCII, as the axis writes them).
STATE_DESC = {"queued": "Cho nhan", "active": "Dang gui", "deferred": "Dang gui lai",
              "delivered": "Da nhan", "failed": "Loi", "hold": "Tam giu", "corrupt": "Loi"}


class DoorRefusal(HubError):
    """Raised when the door refuses an SDK call; ``recorded``: already in the audit log."""

    code = "bad_request"
    http_status = 400

    def __init__(self, code: str, message: str, *, http_status: int = 400,
                 recorded: bool = False) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.recorded = recorded


@dataclasses.dataclass(frozen=True, slots=True)
class Caller:
    """A verified request and the organisation behind its system id."""

    organ: str
    request: VerifiedRequest

    @property
    def identity(self) -> Identity:
        return Identity(self.organ, "agency")


def stamp(t: float | None) -> str:
    """Epoch seconds as the axis writes times (ISO 8601 with milliseconds, +07:00)."""
    if t is None:
        return ""
    return datetime.fromtimestamp(t, VN_TZ).isoformat(timespec="milliseconds")


class Door:
    """The door's state (credentials, refusal budget) and its operations."""

    def __init__(self, hub: HubContext) -> None:
        self.hub = hub
        directory = hub.directory

        def local(organ: str) -> bool:
            entry = directory.get(organ)
            return entry is not None and entry.is_local

        self.secrets = DoorSecrets(hub.settings.data_path, local)
        self.refusals = RefusalLog(hub.spool, hub.clock)
        self.loaded_at = hub.clock()

    # ---------------------------------------------------------------- authentication

    def _verify(self, headers: Mapping[str, str], body: bytes | None) -> VerifiedRequest:
        s = self.hub.settings
        return verify_request(headers, self.secrets.secret_for, now=self.hub.clock(),
                              max_age=s.door_max_timestamp_age, max_future=s.door_max_clock_skew,
                              body=body)

    async def authenticate(self, headers: Mapping[str, str], body: bytes | None) -> Caller:
        """The caller, or ``VxpAuthError``.  A MAC that fails is tried once more
        after re-reading the credentials (a secret rotated this very second)."""
        def check() -> VerifiedRequest:
            try:
                return self._verify(headers, body)
            except VxpAuthError as exc:
                if exc.code == "bad_mac" and self.secrets.refresh(force=True):
                    return self._verify(headers, body)
                raise
        if body is not None and len(body) > HASH_INLINE:
            verified = await asyncio.to_thread(check)
        else:
            verified = check()
        organ = self.secrets.organ_of(verified.system_id)
        if organ is None:  # removed between the two reads
            raise VxpAuthError("unknown_system", f"unknown system {verified.system_id!r}")
        return Caller(organ, verified)

    def refused(self, exc: HubError, *, operation: str, remote: str,
                headers: Mapping[str, str], caller: Caller | None = None) -> None:
        """Put a refusal in the audit log (within the budget of ``hub.door.refusals``).

        Before the signature verified, the organisation is the one the request
        claims to be (``verified: false``): its own view shows who tried its name."""
        if isinstance(exc, DoorRefusal) and exc.recorded:
            return
        if caller is not None:
            system_id: str | None = caller.request.system_id
            organ: str | None = caller.organ
        else:
            system_id = claimed_system_id(headers)
            organ = self.secrets.organ_of(system_id) if system_id else None
        self.refusals.record(code=exc.code, message=exc.message, remote=remote, organ=organ,
                             system_id=system_id, operation=operation,
                             verified=caller is not None)

    # ---------------------------------------------------------------- operations

    async def send_edoc(self, caller: Caller) -> dict[str, Any]:
        v = caller.request
        signed_from = v.get("from")
        if signed_from is not None and signed_from != caller.organ:
            raise DoorRefusal("from_mismatch", f"from {signed_from!r} is not the organisation of "
                              f"system {v.system_id} ({caller.organ})", http_status=403)
        _messagetype(v)
        if not v.file:
            raise DoorRefusal("empty_body", "sendEdoc without a file: send an edXML envelope")
        try:
            result = await accept(self.hub, v.file, caller.identity, origin="door")
        except HubError as exc:  # accept recorded the refusal itself
            raise DoorRefusal(exc.code, exc.message, http_status=exc.http_status,
                              recorded=True) from exc
        return {"DocId": result.id}

    async def received_list(self, caller: Caller) -> dict[str, Any]:
        kind = _messagetype(caller.request)
        items = await self.hub.spool.inbox(caller.organ, limit=LIST_LIMIT, kind=kind)
        return {"data": [self._received_item(caller.organ, i) for i in items]}

    @staticmethod
    def _received_item(organ: str, item: InboxRow) -> dict[str, object]:
        fetched = item["fetched_at"] is not None
        return {"docId": item["id"], "serviceType": "eDoc", "messageType": item["kind"],
                "created_time": stamp(item["received_at"]),
                "updated_time": stamp(item["fetched_at"] or item["received_at"]),
                "from": item["sender"], "to": organ,
                "status": "processing" if fetched else "initial",
                "status_desc": "Dang xu ly" if fetched else "Moi"}

    async def _mailbox_item(self, caller: Caller) -> tuple[str, Any]:
        doc_id = _doc_id(caller.request)
        item = await self.hub.spool.inbox_item(caller.organ, doc_id)
        if item is None:
            raise DoorRefusal("not_found", f"message {doc_id} is not in the mailbox of "
                              f"{caller.organ}", http_status=404)
        return doc_id, item

    async def get_edoc(self, caller: Caller) -> dict[str, Any]:
        raw = await self.document(caller)
        encoded = (base64.b64encode(raw) if len(raw) <= HASH_INLINE
                   else await asyncio.to_thread(base64.b64encode, raw))
        return {"data": encoded.decode("ascii")}

    async def document(self, caller: Caller) -> bytes:
        """The original bytes of a mailbox item (getEdoc, downloadEdoc); marks it fetched."""
        doc_id, item = await self._mailbox_item(caller)
        try:
            raw = await self.hub.spool.payload(item["sha256"])
        except PayloadCorruptError as exc:  # never the wrong bytes: quarantined, as the inbox does
            await quarantine(self.hub, exc, delivery_id=item["id"], message_id=doc_id,
                             organ=caller.organ, expected=(State.QUEUED,), where="door")
            raise
        assert isinstance(raw, bytes)
        await self.hub.spool.mark_fetched(item["id"])
        return raw

    async def update_status(self, caller: Caller) -> dict[str, Any]:
        status = caller.request.get("status") or ""
        if status not in STATUSES:
            raise DoorRefusal("bad_status", f"status must be one of {', '.join(STATUSES)}, "
                              f"not {status!r}")
        doc_id, _item = await self._mailbox_item(caller)
        if status == "done":
            try:
                await self.hub.spool.ack(caller.organ, doc_id)
            except (NotFoundError, ConflictError) as exc:
                raise DoorRefusal(exc.code, exc.message, http_status=exc.http_status) from exc
        else:
            await self.hub.spool.record_event("door_status", message_id=doc_id,
                                              organ=caller.organ, status=status, origin="door")
        return {}

    async def sent_list(self, caller: Caller) -> dict[str, Any]:
        v = caller.request
        rows = await self.hub.spool.sent(caller.organ, kind=_messagetype(v), message_id=v.doc_id,
                                         limit=LIST_LIMIT)
        return {"data": [self._sent_item(caller.organ, r) for r in rows]}

    @staticmethod
    def _sent_item(organ: str, row: SentRow) -> dict[str, object]:
        received = row["fetched_at"] or (row["updated_at"] if row["state"] == "delivered" else None)
        business = row["business_status"] or ""
        return {"serviceType": "eDoc", "messageType": row["kind"], "senderDocId": row["id"],
                "receiverDocId": row["id"], "fromCode": organ, "toCode": row["recipient"],
                "title": row["subject"] or "", "notation": row["code"] or "",
                "sentTime": stamp(row["received_at"]), "receivedTime": stamp(received),
                "sendStatus": row["state"], "sendStatusDesc": STATE_DESC.get(row["state"], ""),
                "receiveStatus": business,
                "receiveStatusDesc": f"edXML status {business}" if business else ""}

    async def count_edoc(self, caller: Caller) -> dict[str, Any]:
        return {"count": await self.hub.spool.inbox_count(caller.organ, kind="edoc")}

    async def count_status(self, caller: Caller) -> dict[str, Any]:
        return {"count": await self.hub.spool.inbox_count(caller.organ, kind="status")}

    def _agencies(self) -> list[dict[str, object]]:
        organs = list(self.hub.directory)
        ids = {o.id: str(n) for n, o in enumerate(organs, 1)}
        return [{"id": ids[o.id], "pid": ids.get(o.parent or "", "0"), "code": o.id,
                 "name": o.name, "mail": o.email or "", "oldCode": "", "code102": o.id,
                 "kind": o.kind} for o in organs]

    async def agencies(self, caller: Caller) -> dict[str, Any]:
        return {"data": [{k: a[k] for k in ("id", "pid", "code", "name", "mail", "oldCode")}
                         for a in self._agencies()]}

    async def agencies_qd20(self, caller: Caller) -> dict[str, Any]:
        return {"data": [{k: a[k] for k in ("id", "code", "name", "mail", "code102")}
                         for a in self._agencies()]}

    async def units(self, caller: Caller) -> dict[str, Any]:
        modified = stamp(self.loaded_at)
        return {"data": [{"id": a["id"], "pid": a["pid"], "code": a["code"], "name": a["name"],
                          "mail": a["mail"], "version": 1, "centerCode": self.hub.hub_id,
                          "deleted": False, "modifyDate": modified,
                          "isAgency": a["kind"] != "hub"} for a in self._agencies()]}

    async def not_allowed(self, caller: Caller) -> dict[str, Any]:
        raise DoorRefusal("not_allowed", "the directory of organisations is the hub's: ask the "
                          "hub's operator to add or remove an agency", http_status=403)


Operation = Callable[[Door, Caller], Awaitable[dict[str, Any]]]

#: Every operation the door answers with a JSON object (downloadEdoc answers the bytes).
OPERATIONS: dict[str, Operation] = {
    "sendEdoc": Door.send_edoc, "getReceivedEdocList": Door.received_list,
    "getEdoc": Door.get_edoc, "updateStatus": Door.update_status,
    "getSentEdocList": Door.sent_list, "getAgenciesList": Door.agencies,
    "getAgenciesListQD20": Door.agencies_qd20, "getSynchronizeUnit": Door.units,
    "countReceiveEdoc": Door.count_edoc, "countReceiveStatus": Door.count_status,
    "registerAgency": Door.not_allowed, "deleteAgency": Door.not_allowed,
}


def _messagetype(v: VerifiedRequest) -> str:
    kind = v.get("messagetype") or "edoc"
    if kind not in MESSAGE_TYPES:
        raise DoorRefusal("bad_request", f"messagetype must be edoc or status, not {kind!r}")
    return kind


def _doc_id(v: VerifiedRequest) -> str:
    doc_id = v.doc_id
    if not doc_id:
        raise DoorRefusal("bad_request", "no docId")
    return doc_id


def claimed_system_id(headers: Mapping[str, str]) -> str | None:
    """The system id a refused request claims, for the audit log: the signed
    member when the sign-header parses, else the wire header."""
    wire = None
    for name, value in headers.items():
        lowered = name.lower()
        if lowered == SIGN_HEADER.lower():
            try:
                member = json.loads(value).get(PREFIX + "systemid")
            except (ValueError, AttributeError):
                continue
            if isinstance(member, str):
                return member
        elif lowered == (PREFIX + "systemid").lower():
            wire = value
    return wire


def is_auth_error(exc: HubError) -> bool:
    return isinstance(exc, AuthError)
