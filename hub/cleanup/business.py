"""Business document types: what a revocation, an update or a replacement does.

Where it sits: in cleanup, after inspection and before the commit.  The
TraceHeaderList's ``Bussiness/BussinessDocType`` says what a document is
(0 new, 1 revocation, 2 update, 3 replacement, as the national axis uses
them); ``apply`` finds the documents it acts on and fills the record the
spool commits in ONE transaction with the new envelope: its links, its
deliveries, and the deliveries of the original it adds.

Rules
    * The document acted on is named by ``Bussiness/DocumentId`` for a
      revocation or an update ("mã văn bản bị thu hồi, cập nhật"), by each
      ``ReplacementInfoList/ReplacementInfo/DocumentId`` for a replacement,
      and must be one the hub carried from the SAME sender: a document of
      another sender is ``403 not_the_sender``, an unknown one
      ``422 unknown_document``; a revoked one takes nothing more
      (``409 document_revoked``, checked in the commit).  One that names its
      own DocumentId acts on nothing (noted ``business_names_itself``).
    * Revocation (1): links ``revokes``; the revocation is delivered to its
      To and to every recipient of the original (that is how they are told).
    * Update (2): links ``updates``; ReceiverType 1 adds a recipient, who gets
      a new delivery of the ORIGINAL (the update refers to it, and a recipient
      may only send statuses about a document it holds); ReceiverType 0
      removes one, who is told by receiving the update (its ReceiverList names
      them).  The update goes to its To, the original's recipients, and the
      added and removed ones.  Removing an organisation that never had the
      original is accepted and noted (``removed_receiver_not_a_recipient``).
    * Replacement (3): links ``replaces`` to every document named; delivered
      as addressed (To).  OrganIdList is kept in the link's detail.
"""
from __future__ import annotations

from typing import Any

from hub.context import HubContext
from hub.edxml.envelope import REPLACEMENT, REVOCATION, UPDATE, Envelope
from hub.errors import ForbiddenError, ValidationError
from spool import AddedDelivery, NewDelivery, NewEnvelope, NewLink
from spool.base import EnvelopeRow

_BUSINESS = "/edXML/edXMLEnvelope/edXMLHeader/TraceHeaderList/Bussiness"
_WHAT = {REVOCATION: "revoke", UPDATE: "update", REPLACEMENT: "replace"}


async def apply(hub: HubContext, rec: NewEnvelope, env: Envelope) -> None:
    """Fill ``rec`` (links, deliveries) for a business document; refuse what breaks a rule."""
    b = env.business
    if b is None or b.doc_type not in _WHAT:
        return
    if b.doc_type == REPLACEMENT:
        detail: dict[str, dict[str, Any]] = {}
        for i, r in enumerate(b.replacements, 1):
            path = f"{_BUSINESS}/ReplacementInfoList/ReplacementInfo[{i}]/DocumentId"
            original = await _original(hub, env.sender, r.document_id, path, b.doc_type)
            detail.setdefault(original["id"], {"organs": r.organs})
        rec.links = [NewLink("replaces", to_id, d) for to_id, d in detail.items()]
        return
    if b.document_id is None:  # it named itself: noted by extract, acts on nothing
        return
    original = await _original(hub, env.sender, b.document_id, f"{_BUSINESS}/DocumentId",
                               b.doc_type)
    had = {d["recipient"]: d["route"] for d in await hub.spool.deliveries(original["id"])}
    if b.doc_type == REVOCATION:
        rec.links = [NewLink("revokes", original["id"])]
        _deliver_also(rec, had)
        return
    added, removed = [], []
    for i, receiver in enumerate(b.receivers, 1):
        path = f"{_BUSINESS}/BussinessDocumentInfo/ReceiverList/Receiver[{i}]/OrganId"
        organ = receiver.organ_id
        if not receiver.added:
            removed.append(organ)
            if organ not in had:
                rec.irregularities.append({
                    "code": "removed_receiver_not_a_recipient", "path": path,
                    "message": f"{organ} is removed but never had {b.document_id!r}"})
            continue
        added.append(organ)
        if organ not in had:
            route = _resolve(hub, organ, path)
            rec.added_deliveries.append(AddedDelivery(original["id"], organ, route))
    rec.links = [NewLink("updates", original["id"], {"added": added, "removed": removed})]
    _deliver_also(rec, {**had, **{d.recipient: d.route for d in rec.added_deliveries}})
    _deliver_also(rec, {o: had[o] for o in removed if o in had})


async def _original(hub: HubContext, sender: str, document_id: str, path: str,
                    doc_type: int) -> EnvelopeRow:
    """The sender's own document ``document_id``, or the refusal that says why not."""
    found = await hub.spool.find_document(sender, document_id)
    if found is not None:
        return found
    others = await hub.spool.find_by_document_id(document_id)
    if others:
        raise ForbiddenError(
            f"document {document_id!r} was sent by {others[0]['sender']}: only its sender may "
            f"{_WHAT[doc_type]} it, not {sender}", code="not_the_sender",
            details={"path": path, "document_id": document_id, "sender": others[0]["sender"]})
    raise ValidationError(
        f"BussinessDocType {doc_type} names document {document_id!r} of {sender}, which this "
        f"hub never carried", code="unknown_document",
        details={"path": path, "document_id": document_id})


def _resolve(hub: HubContext, organ: str, path: str) -> str:
    try:
        return hub.directory.resolve(organ, strict=hub.settings.organ_id_policy == "strict").name
    except ValidationError as exc:
        exc.details.setdefault("path", path)
        raise


def _deliver_also(rec: NewEnvelope, routes: dict[str, str]) -> None:
    """Add deliveries of the new document itself, after its To, never to its sender."""
    have = {d.recipient for d in rec.deliveries}
    for organ, route in routes.items():
        if organ not in have and organ != rec.sender:
            rec.deliveries.append(NewDelivery(organ, route))
            have.add(organ)
