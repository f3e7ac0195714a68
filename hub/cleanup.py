"""Cleanup: the only way into the spool (Postfix's cleanup).

Every ingress, the HTTP API or an adapter, hands raw bytes and an
authenticated identity to ``accept()``.  In order:

1. size limit (before anything is parsed);
2. hardened parse (no DTD, no entities, no network, depth limit) and XSD
   validation against ``schemas/edxml.xsd`` (``hub.xmlsafe``);
3. field extraction and semantic checks (``hub.edxml``): cardinalities, dates,
   codes, OrganId policy;
4. checks against the hub's knowledge: the sender is known and is the
   authenticated organisation, every recipient resolves to a route, a status
   message answers a document the spool holds;
5. sender signature check (policy per organisation);
6. one durable transaction (``spool.store``): payload, envelope, one delivery
   per recipient, business status, event log.  Duplicates are found there,
   atomically: the same sender + DocumentId + bytes again is the same
   message; other bytes under the same DocumentId is a conflict.

Refusals raise ``hub.errors`` exceptions with stable codes and are written to
the event log (kind ``refused``) for the audit trail.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any

from hub import edxml, xmlsafe
from hub.auth import Identity
from hub.context import HubContext
from hub.errors import BackpressureError, ForbiddenError, HubError, ValidationError
from spool import NewDelivery, NewEnvelope, StatusRecord
from spool.ids import new_message_id

log = logging.getLogger("hub.cleanup")

#: Envelopes above this size are parsed in a worker thread, not on the event loop.
_BIG = 256 * 1024


@dataclasses.dataclass(slots=True)
class Inspected:
    """What cleanup learnt from the bytes alone (picklable: may come from a worker)."""

    envelope: edxml.Envelope
    sha256: str
    signature: dict[str, Any]


@dataclasses.dataclass(slots=True)
class AcceptResult:
    id: str
    created: bool
    kind: str
    document_id: str | None
    recipients: list[dict[str, str]]

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "document_id": self.document_id,
                "recipients": self.recipients, "receipt_url": f"/v1/receipts?document={self.id}"}


def inspect(raw: bytes, max_size: int, max_depth: int, strict: bool) -> Inspected:
    """Steps 1–3: pure CPU work on the bytes, no hub state."""
    tree = xmlsafe.parse(raw, max_size=max_size, max_depth=max_depth)
    xmlsafe.validate(tree)
    env = edxml.extract(tree, strict=strict)
    signature = {"result": "unsigned", "detail": "no signature"}
    if env.signatures:
        signature = {"result": "recorded", "detail": f"signature element(s) present: "
                     f"{', '.join(env.signatures)}; not verified"}
    return Inspected(env, hashlib.sha256(raw).hexdigest(), signature)


async def accept(hub: HubContext, raw: bytes, identity: Identity, *,
                 origin: str = "http", notice_for: str | None = None) -> AcceptResult:
    """Take one envelope into the spool, or refuse it with a stable error code.

    ``notice_for`` is for the hub's own failure notices (status 02 from the hub
    itself): the recipient whose delivery failed, on which the status is recorded.
    """
    try:
        return await _accept(hub, raw, identity, origin, notice_for)
    except HubError as exc:
        _record_refusal(hub, identity, origin, exc)
        raise


async def _accept(hub: HubContext, raw: bytes, identity: Identity, origin: str,
                  notice_for: str | None) -> AcceptResult:
    s = hub.settings
    if len(raw) > s.max_envelope_size:
        raise ValidationError(f"envelope of {len(raw)} bytes exceeds max_envelope_size "
                              f"({s.max_envelope_size})", code="envelope_too_large",
                              http_status=413)
    check_backpressure(hub)
    with hub.spool.announce():
        strict = s.organ_id_policy == "strict"
        ins: Inspected = await hub.run_cpu(inspect, raw, s.max_envelope_size, s.max_xml_depth,
                                           strict, big=len(raw) > _BIG)
        env = ins.envelope
        _check_sender(hub, env, identity)
        if env.kind == "status":
            rec = await _status_record(hub, env, ins, raw, origin, notice_for)
        else:
            rec = _edoc_record(hub, env, ins, raw, origin)
        result = await hub.spool.store(rec)
    if result.created:
        hub.wake_qmgr(result.recipients)
        log.info("%s accepted %s from %s (%s) for %s", result.id, env.kind, env.sender,
                 env.document_id or env.status_code, ",".join(r["organ"] for r in result.recipients))
    else:
        log.info("%s re-submitted by %s: same message", result.id, env.sender)
    return AcceptResult(result.id, result.created, env.kind, env.document_id, result.recipients)


def check_backpressure(hub: HubContext) -> None:
    """Refuse new work (503) while the spool is over quota or the disk nearly full."""
    pressure = getattr(hub, "pressure", None)
    if pressure is not None and pressure.reason:
        raise BackpressureError(f"the hub is not accepting new envelopes: {pressure.reason}",
                                details={"retry_after": pressure.retry_after})


def _check_sender(hub: HubContext, env: edxml.Envelope, identity: Identity) -> None:
    if env.sender != identity.organ:
        raise ForbiddenError(f"envelope is from {env.sender} but you are {identity.organ}",
                             code="sender_mismatch",
                             details={"path": "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/From/OrganId",
                                      "from": env.sender, "authenticated": identity.organ})
    if hub.directory.get(env.sender) is None:
        raise ValidationError(f"sender {env.sender} is not in the directory", code="unknown_sender")


def _deliveries(hub: HubContext, recipients: list[str], *, path: str) -> list[NewDelivery]:
    out = []
    for index, organ in enumerate(recipients, 1):
        try:
            route = hub.directory.resolve(organ)
        except ValidationError as exc:
            exc.details.setdefault("path", f"{path}[{index}]/OrganId")
            raise
        out.append(NewDelivery(organ, route.name))
    return out


def _edoc_record(hub: HubContext, env: edxml.Envelope, ins: Inspected, raw: bytes,
                 origin: str) -> NewEnvelope:
    deliveries = _deliveries(hub, env.recipients,
                             path="/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/To")
    assert env.document_id is not None
    return NewEnvelope(new_message_id(), "edoc", env.sender, env.document_id, env.document_id,
                       ins.sha256, raw, env.subject, env.code, None, None, ins.signature, origin,
                       deliveries)


async def _status_record(hub: HubContext, env: edxml.Envelope, ins: Inspected, raw: bytes,
                         origin: str, notice_for: str | None) -> NewEnvelope:
    rf = env.response_for[0]
    path = "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/ResponseFor"
    original = await hub.spool.find_document(rf.organ_id, rf.document_id)
    if original is None:
        raise ValidationError(
            f"status {env.status_code} answers document {rf.document_id!r} of {rf.organ_id}, "
            f"which this hub never carried", code="unknown_document",
            details={"path": path, "organ_id": rf.organ_id, "document_id": rf.document_id})
    recipients_of_original = [d["recipient"] for d in await hub.spool.deliveries(original["id"])]
    about = env.sender
    if env.sender == hub.hub_id and origin == "hub":
        # The hub's own failure notice: to the sender, recorded on the failed delivery.
        targets, about = [original["sender"]], notice_for or env.sender
    elif env.sender == original["sender"]:
        # The sender speaks about its own document (13: recall): tell every recipient.
        targets = recipients_of_original
    elif env.sender in recipients_of_original:
        targets = [original["sender"]]
    else:
        raise ForbiddenError(f"{env.sender} did not receive document {rf.document_id!r} and "
                             f"cannot send a status about it", code="not_a_recipient",
                             details={"path": path})
    deliveries = _deliveries(hub, targets, path=path)
    status = StatusRecord(original["id"], about, env.status_code or "", env.description,
                          env.timestamp.strftime("%Y/%m/%d %H:%M:%S") if env.timestamp else None)
    return NewEnvelope(new_message_id(), "status", env.sender, f"status:{ins.sha256}",
                       rf.document_id, ins.sha256, raw, env.description, None, env.status_code,
                       original["id"], ins.signature, origin, deliveries, status)


def _record_refusal(hub: HubContext, identity: Identity, origin: str, exc: HubError) -> None:
    if exc.http_status >= 500:
        return
    detail = {"code": exc.code, "message": exc.message[:500], "origin": origin}
    try:
        fut = hub.spool.write(lambda tx: tx.event("refused", organ=identity.organ, **detail))
    except HubError:
        return
    fut.add_done_callback(lambda f: f.exception())  # logged by the spool if it fails
