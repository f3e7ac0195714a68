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
5. sender signature check (``hub.signing``; policy per organisation:
   required, verify_if_present, record_only), against the certificate the
   trust store pins for the sender — never the one the signature carries;
   what the axis normalised (``Envelope.irregularities``) is kept, not refused;
5b. a revocation, update or replacement finds the documents it acts on
   (``hub.cleanup.business``): links and added deliveries join the commit;
6. one durable transaction (``spool.store``): payload, envelope, one delivery
   per recipient, business status, event log.  Duplicates are found there,
   atomically: the same sender + DocumentId + bytes again is the same
   message; other bytes under the same DocumentId is a conflict.

Refusals raise ``hub.errors`` exceptions with stable codes and are written to
the event log (kind ``refused``) for the audit trail.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from hub.auth import Identity
from hub.context import HubContext
from hub.cleanup import business
from hub.cleanup.cpu import Inspected
from hub.crypto.signing import relayed_digest, verify_relayed
from hub.errors import (BackpressureError, ConflictError, ForbiddenError, HubError,
                        ValidationError)
from hub.receipts.format import ReceiptLink
from spool import NewDelivery, NewEnvelope, StatusRecord, StoreResult
from spool.ids import new_message_id
from spool.payloads import SpooledBody

log = logging.getLogger("hub.cleanup.accept")

#: Bodies above this are refused at once under backpressure (statuses are a few KB).
STATUS_MAX = 64 * 1024

@dataclasses.dataclass(slots=True)
class AcceptResult:
    id: str
    created: bool
    kind: str
    document_id: str | None
    recipients: list[dict[str, str]]
    receipt_id: str | None = None
    #: Recipients not in the directory, sent to the upstream route by default.
    upstream: list[str] = dataclasses.field(default_factory=list)
    #: Recipients left to the interchange that relayed this (split horizon).
    elsewhere: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        url = (f"/v1/receipts/{self.receipt_id}" if self.receipt_id
               else f"/v1/receipts?document={self.id}")
        body: dict[str, Any] = {"id": self.id, "kind": self.kind, "document_id": self.document_id,
                                "recipients": self.recipients, "receipt_id": self.receipt_id,
                                "receipt_url": url}
        if self.upstream:
            body["upstream"] = self.upstream
            body["warnings"] = [f"{organ} is not in the directory: sent upstream by default "
                                f"(unknown_recipient = \"upstream\"); check the OrganId"
                                for organ in self.upstream]
        if self.elsewhere:
            body["elsewhere"] = self.elsewhere
        return body


async def accept(hub: HubContext, raw: "bytes | SpooledBody", identity: Identity, *,
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


async def _accept(hub: HubContext, raw: "bytes | SpooledBody", identity: Identity, origin: str,
                  notice_for: str | None) -> AcceptResult:
    s = hub.settings
    if len(raw) > s.max_envelope_size:
        raise ValidationError(f"envelope of {len(raw)} bytes exceeds max_envelope_size "
                              f"({s.max_envelope_size})", code="envelope_too_large",
                              http_status=413)
    if len(raw) > STATUS_MAX:
        check_backpressure(hub)  # no status is this big: refuse before the work
    with hub.spool.announce():
        message_id = new_message_id(hub.clock())
        ins = await hub.cpu.inspect(raw, identity, message_id, hub.clock())
        env = ins.envelope
        if env.kind == "edoc" and origin != "hub":
            # Under pressure only new documents are refused: statuses about
            # documents already held, and the hub's own notices, still flow.
            check_backpressure(hub)
        relayed = await _check_hop(hub, identity, raw)
        if env.kind == "status":
            rec = await _status_record(hub, message_id, ins, raw, origin, notice_for, relayed)
        else:
            rec = _edoc_record(hub, message_id, ins, raw, origin)
            await business.apply(hub, rec, env)
            if rec.links:
                await _link_receipt(hub, rec, ins)
        elsewhere = _split_horizon(hub, identity, rec)
        try:
            result = await hub.spool.store(rec)
        except ConflictError as exc:
            same = await _same_relayed(hub, relayed, exc) if relayed else None
            if same is None:
                raise
            result = same
    if result.created:
        hub.wake_qmgr(result.recipients + result.added)
        log.info("%s accepted %s from %s (%s) for %s", result.id, env.kind, env.sender,
                 env.document_id or env.status_code, ",".join(r["organ"] for r in result.recipients))
    else:
        log.info("%s re-submitted by %s: same message", result.id, env.sender)
    upstream = [d.recipient for d in rec.deliveries if d.recipient in rec_unknown(hub, rec)]
    if upstream and result.created:
        log.warning("%s recipients not in the directory, sent upstream by default: %s",
                    result.id, ",".join(upstream))
    if elsewhere and result.created:
        log.info("%s arrived by %s: left to it for %s", result.id, identity.route,
                 ",".join(f"{d['organ']} ({d['route']})" for d in elsewhere))
    return AcceptResult(result.id, result.created, env.kind, env.document_id, result.recipients,
                        result.receipt_id, upstream, elsewhere)


def _split_horizon(hub: HubContext, identity: Identity, rec: NewEnvelope) -> list[dict[str, str]]:
    """What arrives from another interchange point (a peer hub, the provincial
    platform: an adapter that ``forwards``) is delivered only to the recipients
    this hub serves.  The others routed here to an interchange too: the one that
    sent this sent them their own copy, and passing ours on would loop back to
    it or reach them twice.  Returns the recipients left out; refuses
    ``not_served`` when none is left."""
    if identity.role != "relay" or identity.route is None:
        return []
    arrived = hub.adapters.get(identity.route)
    if arrived is None or not arrived.forwards:
        return []

    def forwarded(organ_id: str, route: str) -> bool:
        if route == identity.route:
            return True
        adapter = hub.adapters.get(route)
        if adapter is not None:
            return adapter.forwards
        # A route no instance serves: ours only for the district's own units.
        organ = hub.directory.get(organ_id)
        return organ is None or not organ.is_local

    elsewhere = [{"organ": d.recipient, "route": d.route} for d in rec.deliveries
                 if forwarded(d.recipient, d.route)]
    elsewhere += [{"organ": d.recipient, "route": d.route} for d in rec.added_deliveries
                  if forwarded(d.recipient, d.route)]
    if not elsewhere:
        return []
    rec.deliveries = [d for d in rec.deliveries if not forwarded(d.recipient, d.route)]
    rec.added_deliveries = [d for d in rec.added_deliveries
                            if not forwarded(d.recipient, d.route)]
    if not rec.deliveries and not rec.added_deliveries:
        raise ValidationError(
            f"none of the recipients is served by this hub: "
            f"{', '.join(d['organ'] + ' routes to ' + d['route'] for d in elsewhere)}, "
            f"another interchange (check the directory of the hub that sent it here)",
            code="not_served", details={"elsewhere": elsewhere})
    return elsewhere


def rec_unknown(hub: HubContext, rec: NewEnvelope) -> set[str]:
    """The recipients of ``rec`` that no entry or rule of the directory knows."""
    return {d.recipient for d in rec.deliveries if not hub.directory.knows(d.recipient)}


async def _check_hop(hub: HubContext, identity: Identity, raw: "bytes | SpooledBody") -> str | None:
    """A relay whose route's adapter names the peer's certificate (a peer hub)
    must have hop-signed what it relays; checked in a thread (a second parse).
    Returns the document's ``relayed_digest`` (None for anyone else)."""
    if identity.role != "relay" or identity.route is None:
        return None
    adapter = hub.adapters.get(identity.route)
    cert = adapter.hop_certificate if adapter is not None else None
    if cert is None:
        return None
    source = raw.path if isinstance(raw, SpooledBody) else raw
    return await asyncio.to_thread(verify_relayed, source, cert)


async def _same_relayed(hub: HubContext, digest: str, exc: ConflictError) -> StoreResult | None:
    """A peer hub signs every delivery anew, so one document for two of our
    units, or sent again after a lost answer, comes in different bytes: it is
    the same message when what its sender made is the same (``relayed_digest``
    of both); anything else stays ``duplicate_conflict``."""
    existing = await hub.spool.envelope(str(exc.details.get("existing_id", "")))
    if existing is None:
        return None
    try:
        stored = await hub.spool.payload(existing["sha256"])
    except HubError:
        return None
    if await asyncio.to_thread(relayed_digest, stored) != digest:
        return None
    recipients = [{"organ": d["recipient"], "route": d["route"]}
                  for d in await hub.spool.deliveries(existing["id"])]
    receipts = await hub.spool.receipts({"message_id": existing["id"], "event": "accepted",
                                         "limit": 1})
    return StoreResult(existing["id"], False, recipients,
                       receipts[0]["id"] if receipts else None)


def check_backpressure(hub: HubContext) -> None:
    """Refuse new work (503) while the spool is over quota or the disk nearly full."""
    pressure = hub.pressure
    if pressure is not None and pressure.reason:
        raise BackpressureError(f"the hub is not accepting new envelopes: {pressure.reason}",
                                details={"retry_after": pressure.retry_after})


def _deliveries(hub: HubContext, recipients: list[str], *, path: str) -> list[NewDelivery]:
    out = []
    for index, organ in enumerate(recipients, 1):
        try:
            route = hub.directory.resolve(organ, strict=hub.settings.organ_id_policy == "strict")
        except ValidationError as exc:
            exc.details.setdefault("path", f"{path}[{index}]/OrganId")
            raise
        if not route.known and hub.settings.unknown_recipient == "refuse":
            raise ValidationError(
                f"recipient {organ} is not in the directory (unknown_recipient = \"refuse\"): "
                f"check the OrganId, or list it", code="unknown_recipient",
                details={"path": f"{path}[{index}]/OrganId", "organ_id": organ})
        out.append(NewDelivery(organ, route.name))
    return out


def _edoc_record(hub: HubContext, message_id: str, ins: Inspected, raw: "bytes | SpooledBody",
                 origin: str) -> NewEnvelope:
    env = ins.envelope
    deliveries = _deliveries(hub, env.recipients,
                             path="/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/To")
    assert env.document_id is not None
    return NewEnvelope(message_id, "edoc", env.sender, env.document_id, env.document_id,
                       ins.sha256, raw, env.subject, env.code, None, None, ins.signature, origin,
                       deliveries, receipt=ins.receipt,
                       irregularities=[i.to_dict() for i in env.irregularities])


async def _link_receipt(hub: HubContext, rec: NewEnvelope, ins: Inspected) -> None:
    """The acceptance receipt of a business document names what it acts on:
    signed again, now that the documents are found (only for these few)."""
    assert rec.receipt is not None
    targets = {e["id"]: e for e in [await hub.spool.envelope(link.to_id) for link in rec.links]
               if e is not None}
    fields = dataclasses.replace(ins.fields, standing="current", links=tuple(
        ReceiptLink(link.type, link.to_id, targets[link.to_id]["document_id"])
        for link in rec.links))
    receipt_id, at, _ = rec.receipt
    rec.receipt = (receipt_id, at, (await hub.cpu.build_receipts([fields]))[0])


async def _status_record(hub: HubContext, message_id: str, ins: Inspected, raw: "bytes | SpooledBody",
                         origin: str, notice_for: str | None,
                         relayed: str | None = None) -> NewEnvelope:
    """A status is the same message when its bytes are (when a peer hub relayed
    it, when what its sender made is: ``relayed_digest``)."""
    env = ins.envelope
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
        # The sender speaks about its own document: only a recall (13), to every recipient.
        _check_sender_status(env.status_code or "", rf.document_id, path)
        targets = recipients_of_original
    elif env.sender in recipients_of_original:
        await _check_recipient_status(hub, env.status_code or "", original, rf.document_id, path)
        targets = [original["sender"]]
    else:
        raise ForbiddenError(f"{env.sender} did not receive document {rf.document_id!r} and "
                             f"cannot send a status about it", code="not_a_recipient",
                             details={"path": path})
    deliveries = _deliveries(hub, targets, path=path)
    status = StatusRecord(original["id"], about, env.status_code or "", env.description,
                          env.timestamp.strftime("%Y/%m/%d %H:%M:%S") if env.timestamp else None)
    return NewEnvelope(message_id, "status", env.sender, f"status:{relayed or ins.sha256}",
                       rf.document_id, ins.sha256, raw, env.description, None, env.status_code,
                       original["id"], ins.signature, origin, deliveries, status, ins.receipt,
                       irregularities=[i.to_dict() for i in env.irregularities])


#: Who may send which status (QCVN 102): the sender recalls (13); its recipients
#: report on the document (01-06) and answer a recall or an update (15 agrees,
#: 16 refuses), and only once there is one to answer.
SENDER_STATUSES = frozenset({"13"})
RECIPIENT_STATUSES = frozenset({"01", "02", "03", "04", "05", "06"})
ANSWER_STATUSES = frozenset({"15", "16"})


def _status_refused(code: str, document_id: str, path: str, rule: str) -> ForbiddenError:
    return ForbiddenError(f"status {code} about {document_id!r} is not allowed: {rule}",
                          code="status_not_allowed",
                          details={"path": path.rsplit("/", 1)[0] + "/StatusCode",
                                   "status_code": code, "rule": rule})


def _check_sender_status(code: str, document_id: str, path: str) -> None:
    if code not in SENDER_STATUSES:
        raise _status_refused(code, document_id, path,
                              "the sender of a document may only recall it (13); 01-06 come "
                              "from its recipients, 15 and 16 answer a recall")


async def _check_recipient_status(hub: HubContext, code: str, original: Any, document_id: str,
                                  path: str) -> None:
    if code in RECIPIENT_STATUSES:
        return
    if code in ANSWER_STATUSES:
        recalled = any(st["status_code"] == "13" and st["organ"] == original["sender"]
                       for st in await hub.spool.statuses(original["id"]))
        acted_on = any(link["type"] in ("revoked_by", "updated_by")
                       for link in await hub.spool.links(original["id"]))
        if recalled or acted_on:
            return
        raise _status_refused(code, document_id, path,
                              f"{code} answers a recall (13) or an update of the document, and "
                              f"its sender has sent neither")
    raise _status_refused(code, document_id, path,
                          "only the sender of a document may recall it (13)")


def _record_refusal(hub: HubContext, identity: Identity, origin: str, exc: HubError) -> None:
    if exc.http_status >= 500:
        return
    extra = {"route": identity.route} if identity.route is not None else {}
    if hub.refusals is not None:  # one by one, or summarised under a flood
        hub.refusals.record(identity.organ, origin, exc, **extra)
        return
    detail = {"code": exc.code, "message": exc.message[:500], "origin": origin, **extra}
    try:
        fut = hub.spool.record_event("refused", organ=identity.organ, **detail)
    except HubError:
        return
    fut.add_done_callback(lambda f: f.exception())  # logged by the spool if it fails
