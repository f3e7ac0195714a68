"""edXML field extraction, semantic checks, and status messages we emit.

Third stage of accept, after ``xmlsafe.parse`` and ``xmlsafe.validate``: the
schema has vouched for vocabulary and leaf shapes, in any child order; here
we check what XSD 1.0 cannot (cardinality, real calendar dates, OrganId
policy, manifest/attachment agreement) and lift the fields the spool and the
queue manager route on into an ``Envelope``.

Kinds: a MessageHeader with a StatusCode is a *status* message (it answers
the document named in ResponseFor); anything else is an *edoc*.  OrganIds:
``strict`` wants the 13-character ``AAA.BB.CC.DDD`` form; lenient takes 2-5
dot-separated alphanumeric parts, as real networks carry ``28.22.H17``.

Diagnostics: ``ValidationError`` with one of the codes ``missing_element``,
``duplicate_element``, ``unexpected_element``, ``no_recipients``,
``duplicate_recipient``, ``bad_date``, ``bad_organ_id``,
``attachment_mismatch``, ``bad_identifier`` (a
DocumentId, Code or ContentId holding a control character or a bidirectional
override, or longer than ``MAX_IDENTIFIER``); and, with HTTP 413,
``field_too_long`` (free text over ``FieldLimits.text``) and
``too_many_recipients``; details hold ``path`` (``/edXML/.../To[2]/OrganId``)
and ``line``.

Axis normalisation: what the national axis and the provincial platforms do
to a message on its way (an empty ``ResponseFor``, the TraceHeaders of the
nodes it passed, a manifest ContentType other than the attachment's, an
attachment zipped again) is accepted and listed in ``Envelope.irregularities``
(codes ``empty_response_for``, ``extra_trace_headers``,
``content_type_differs``, ``attachment_not_zipped``, ``attachment_rezipped``,
and ``business_names_itself`` for a revocation, update or replacement naming
its own DocumentId), which the spool keeps with the document.

Business document types (``Bussiness/BussinessDocType``: 0 new, 1 revocation,
2 update, 3 replacement) are lifted into ``Envelope.business``: the document
a revocation or an update names is ``Bussiness/DocumentId`` ("mã văn bản bị
thu hồi, cập nhật" in the field docs), an update's receiver changes are
``BussinessDocumentInfo/ReceiverList``, and the documents a replacement
replaces are ``ReplacementInfoList/ReplacementInfo/DocumentId``.

``build_status`` writes the status messages the hub itself sends, e.g. 02
(rejected) back to a sender whose document could not be delivered.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from lxml import etree

from hub.errors import TooLargeError, ValidationError
from hub.edxml.xmlsafe import DSIG_NS, NS, element_path

__all__ = ["DSIG_NS", "NS", "STATUS_CODES", "Business", "Envelope", "FieldLimits", "Irregularity",
           "Receiver", "Replacement", "ResponseFor", "Trace", "build_status", "extract",
           "valid_organ_id"]

#: BussinessDocType values: 0 new, 1 revocation (thu hồi), 2 update (cập nhật),
#: 3 replacement (thay thế).
NEW, REVOCATION, UPDATE, REPLACEMENT = 0, 1, 2, 3

#: Status codes of QCVN 102 (01 arrived ... 16 refused update/recall).
STATUS_CODES = frozenset({"01", "02", "03", "04", "05", "06", "13", "15", "16"})

_STRICT_ORGAN_ID = re.compile(r"[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}")
_LENIENT_ORGAN_ID = re.compile(r"[0-9A-Za-z]+(?:\.[0-9A-Za-z]+){1,4}")
_DATE = re.compile(r"([0-9]{4})/([0-9]{2})/([0-9]{2})")
_TIMESTAMP = re.compile(r"([0-9]{4})/([0-9]{2})/([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})")
_XML_WS = " \t\r\n"
# Characters XML 1.0 cannot carry; they may reach a Description from the
# error text of someone else's document.
_NOT_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
#: Longest identifier (DocumentId, Code, ContentId) accepted, in characters.
MAX_IDENTIFIER = 512
# What an identifier may never hold: C0 and C1 controls (a newline forges a log
# line, a NUL truncates), DEL, and the bidirectional marks, embeddings,
# overrides and isolates that make text display in another order than stored.
_NOT_IN_IDENTIFIER = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# edXML timestamps carry no zone; by convention they are Vietnam time.
_ICT = timezone(timedelta(hours=7), "ICT")

_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
_SIGNATURE_KINDS = {f"{{{NS}}}Signature": "legacy", f"{{{DSIG_NS}}}Signature": "dsig"}


def _tag(name: str) -> str:
    return f"{{{NS}}}{name}"


@dataclass(frozen=True, slots=True)
class ResponseFor:
    """The document a status (or a reply) answers."""

    organ_id: str
    code: str | None
    document_id: str
    promulgation_date: date | None


@dataclass(frozen=True, slots=True)
class Trace:
    """One TraceHeader: a node the document passed through, and when."""

    organ_id: str
    timestamp: datetime | None


@dataclass(frozen=True, slots=True)
class Irregularity:
    """Something unusual about an accepted message (axis normalisation), kept with it."""

    code: str
    message: str
    path: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "path": self.path}


@dataclass(frozen=True, slots=True)
class Receiver:
    """One entry of an update's ReceiverList: ReceiverType 1 added, 0 removed."""

    organ_id: str
    added: bool


@dataclass(frozen=True, slots=True)
class Replacement:
    """One ReplacementInfo: the replaced DocumentId and its OrganIdList."""

    document_id: str
    organs: list[str]


@dataclass(frozen=True, slots=True)
class Business:
    """The TraceHeaderList's Bussiness block, for doc types 1-3 what they act on."""

    doc_type: int
    #: The document revoked or updated (``Bussiness/DocumentId``).
    document_id: str | None
    reason: str | None
    receivers: list[Receiver]
    replacements: list[Replacement]


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the hub routes on, lifted from a validated edXML message."""

    kind: Literal["edoc", "status"]
    sender: str
    sender_name: str | None
    recipients: list[str]
    document_id: str | None
    code: str | None
    subject: str | None
    promulgation_date: date | None
    due_date: date | None
    business_doc_type: int | None
    status_code: str | None
    description: str | None
    timestamp: datetime | None
    response_for: list[ResponseFor]
    priority: int | None
    steering_type: int | None
    traces: list[Trace]
    signatures: list[str]
    attachments: int
    business: Business | None = None
    irregularities: list[Irregularity] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class FieldLimits:
    """Bounds on what one envelope may ask the hub to keep (``hub.config`` keys
    ``max_text_field`` and ``max_recipients``)."""

    text: int = 16 * 1024
    recipients: int = 500

    @classmethod
    def from_settings(cls, settings: Any) -> "FieldLimits":
        return cls(settings.max_text_field, settings.max_recipients)


def valid_organ_id(s: str, strict: bool) -> bool:
    """Whether ``s`` is an acceptable OrganId under the given policy."""
    pattern = _STRICT_ORGAN_ID if strict else _LENIENT_ORGAN_ID
    return pattern.fullmatch(s) is not None


# ---------------------------------------------------------------- tree helpers

_Groups = dict[str, list[etree._Element]]


def _group(parent: etree._Element) -> _Groups:
    """Child elements by tag, in document order, in one pass."""
    groups: _Groups = {}
    for child in parent:
        if isinstance(child.tag, str):  # comments have a function as tag
            groups.setdefault(child.tag, []).append(child)
    return groups


def _error(message: str, code: str, path: str, line: int | None) -> ValidationError:
    return ValidationError(message, code=code, details={"path": path, "line": line})


def _one(groups: _Groups, name: str, parent: etree._Element) -> etree._Element:
    found = _at_most_one(groups, name)
    if found is None:
        path = f"{element_path(parent)}/{name}"
        raise _error(f"{path} is required", "missing_element", path, parent.sourceline)
    return found


def _at_most_one(groups: _Groups, name: str) -> etree._Element | None:
    found = groups.get(_tag(name))
    if not found:
        return None
    if len(found) > 1:
        path = element_path(found[1])
        raise _error(f"{name} may occur only once; {path} repeats it",
                     "duplicate_element", path, found[1].sourceline)
    return found[0]


def _text(el: etree._Element) -> str:
    text = el.text if len(el) == 0 else "".join(el.itertext())
    return (text or "").strip(_XML_WS)


def _opt_text(groups: _Groups, name: str) -> str | None:
    el = _at_most_one(groups, name)
    return (_text(el) or None) if el is not None else None


def _identifier(el: etree._Element) -> str:
    """An identifier's text, refused if it could forge a line or hide its order."""
    text = _text(el)
    bad = _NOT_IN_IDENTIFIER.search(text)
    if bad is not None or len(text) > MAX_IDENTIFIER:
        path = element_path(el)
        why = (f"holds the control or bidirectional character U+{ord(bad[0]):04X}"
               if bad is not None else f"is longer than {MAX_IDENTIFIER} characters")
        raise _error(f"{path} {why}", "bad_identifier", path, el.sourceline)
    return text


def _opt_identifier(groups: _Groups, name: str) -> str | None:
    el = _at_most_one(groups, name)
    return (_identifier(el) or None) if el is not None else None


def _free_text(groups: _Groups, name: str, limits: FieldLimits) -> str | None:
    el = _at_most_one(groups, name)
    if el is None:
        return None
    text = _text(el)
    if len(text) > limits.text:
        path = element_path(el)
        raise TooLargeError(f"{path} is {len(text)} characters, more than the {limits.text} "
                            f"allowed (max_text_field)", code="field_too_long",
                            details={"path": path, "line": el.sourceline, "limit": limits.text})
    return text or None


def _opt_int(groups: _Groups, name: str) -> int | None:
    text = _opt_text(groups, name)
    return int(text) if text is not None else None


def _when(el: etree._Element, pattern: re.Pattern[str], make: type[date]) -> Any:
    """Parse a date or timestamp by hand: strptime costs ~10x more."""
    text = _text(el)
    match = pattern.fullmatch(text)
    try:
        if match is None:  # the schema checked the shape; extract may run without it
            raise ValueError(text)
        return make(*map(int, match.groups()))
    except ValueError:  # 2019/02/30 has the right shape but is no day
        path = element_path(el)
        raise _error(f"{path}: {text!r} is not a real date", "bad_date",
                     path, el.sourceline) from None


def _date(el: etree._Element) -> date | None:
    # The schema allows an empty DueDate (producers serialising a null).
    return _when(el, _DATE, date) if _text(el) else None


def _timestamp(el: etree._Element) -> datetime:
    return _when(el, _TIMESTAMP, datetime)  # type: ignore[no-any-return]


def _opt_date(groups: _Groups, name: str) -> date | None:
    el = _at_most_one(groups, name)
    return _date(el) if el is not None else None


def _organ_id(el: etree._Element, strict: bool) -> str:
    text = _text(el)
    if not valid_organ_id(text, strict):
        path = element_path(el)
        policy = "AAA.BB.CC.DDD (strict)" if strict else "dot-separated (lenient)"
        raise _error(f"{path}: {text!r} is not a valid {policy} OrganId",
                     "bad_organ_id", path, el.sourceline)
    return text


# ---------------------------------------------------------------- extract

def extract(tree: etree._ElementTree, *, strict: bool,
            limits: FieldLimits = FieldLimits()) -> Envelope:
    """Check a schema-valid message and lift its routing fields.

    Raises ``ValidationError`` with one of the codes in the module docstring.
    """
    root = tree.getroot()
    root_groups = _group(root)
    envelope = _one(root_groups, "edXMLEnvelope", root)
    env_groups = _group(envelope)
    header = _one(env_groups, "edXMLHeader", envelope)
    header_groups = _group(header)
    mh = _one(header_groups, "MessageHeader", header)
    m = _group(mh)

    sender_el = _one(m, "From", mh)
    sender_groups = _group(sender_el)
    sender = _organ_id(_one(sender_groups, "OrganId", sender_el), strict)
    status_el = _at_most_one(m, "StatusCode")
    kind: Literal["edoc", "status"] = "edoc" if status_el is None else "status"

    if kind == "edoc":
        document_id: str | None = _identifier(_one(m, "DocumentId", mh))
        recipients = _recipients(m, mh, strict, limits)
        subject: str | None = _subject(m, mh, limits)
        timestamp_el = _at_most_one(m, "Timestamp")
    else:
        if _tag("To") in m:  # a status goes back to the ResponseFor sender only
            to = m[_tag("To")][0]
            raise _error("a status message has no To", "unexpected_element",
                         element_path(to), to.sourceline)
        document_id = _opt_identifier(m, "DocumentId")
        recipients = []
        subject = _free_text(m, "Subject", limits)
        _one(m, "ResponseFor", mh)  # exactly one
        timestamp_el = _one(m, "Timestamp", mh)

    notes: list[Irregularity] = []
    response_for_els = m.get(_tag("ResponseFor"), [])
    if kind == "edoc":
        response_for_els = _drop_empty_response_for(response_for_els, notes)
    info = _at_most_one(m, "PromulgationInfo")
    other = _at_most_one(m, "OtherInfo")
    business, traces, business_el = _trace_list(header_groups, strict)
    _note_traces(traces, sender, header_groups, notes)
    business_doc_type = _opt_int(business, "BussinessDocType")
    return Envelope(
        kind=kind,
        sender=sender,
        sender_name=_free_text(sender_groups, "OrganName", limits),
        recipients=recipients,
        document_id=document_id,
        code=_code(m),
        subject=subject,
        promulgation_date=_opt_date(_group(info), "PromulgationDate") if info is not None else None,
        due_date=_opt_date(m, "DueDate"),
        business_doc_type=business_doc_type,
        status_code=_text(status_el) if status_el is not None else None,
        description=_free_text(m, "Description", limits),
        timestamp=_timestamp(timestamp_el) if timestamp_el is not None else None,
        response_for=[_response_for(el, strict) for el in response_for_els],
        priority=_opt_int(_group(other), "Priority") if other is not None else None,
        steering_type=_opt_int(m, "SteeringType"),
        traces=traces,
        signatures=[_SIGNATURE_KINDS[el.tag] for el in header
                    if el.tag in _SIGNATURE_KINDS],
        attachments=_attachments(root_groups, env_groups, notes),
        business=(_business(business, business_el, business_doc_type, document_id, strict, notes)
                  if business_el is not None and business_doc_type is not None else None),
        irregularities=notes,
    )


def _recipients(m: _Groups, mh: etree._Element, strict: bool,
                limits: FieldLimits) -> list[str]:
    to_list = m.get(_tag("To"), [])
    if not to_list:
        path = f"{element_path(mh)}/To"
        raise _error("an edoc needs at least one To", "no_recipients", path, mh.sourceline)
    if len(to_list) > limits.recipients:
        path = f"{element_path(mh)}/To"
        raise TooLargeError(f"{len(to_list)} recipients, more than the {limits.recipients} "
                            f"allowed (max_recipients)", code="too_many_recipients",
                            details={"path": path, "line": to_list[limits.recipients].sourceline,
                                     "limit": limits.recipients, "recipients": len(to_list)})
    recipients: list[str] = []
    seen: set[str] = set()
    for to in to_list:
        organ_el = _one(_group(to), "OrganId", to)
        organ = _organ_id(organ_el, strict)
        if organ in seen:
            path = element_path(organ_el)
            raise _error(f"recipient {organ} is named more than once",
                         "duplicate_recipient", path, organ_el.sourceline)
        seen.add(organ)
        recipients.append(organ)
    return recipients


def _subject(m: _Groups, mh: etree._Element, limits: FieldLimits) -> str:
    el = _one(m, "Subject", mh)
    subject = _free_text(m, "Subject", limits)
    if not subject:
        path = element_path(el)
        raise _error(f"{path} is empty", "missing_element", path, el.sourceline)
    return subject


def _code(m: _Groups) -> str | None:
    el = _at_most_one(m, "Code")
    if el is None:
        return None
    parts = _group(el)  # "7816" + "VPCP-TTĐT" -> "7816/VPCP-TTĐT", as people write it
    return "/".join(filter(None, (_opt_identifier(parts, "CodeNumber"),
                                  _opt_identifier(parts, "CodeNotation")))) or None


def _response_for(el: etree._Element, strict: bool) -> ResponseFor:
    g = _group(el)
    doc_el = _one(g, "DocumentId", el)
    return ResponseFor(
        organ_id=_organ_id(_one(g, "OrganId", el), strict),
        code=_opt_identifier(g, "Code"),
        document_id=_identifier(doc_el),
        promulgation_date=_opt_date(g, "PromulgationDate"),
    )


def _trace_list(header_groups: _Groups,
                strict: bool) -> tuple[_Groups, list[Trace], etree._Element | None]:
    """(children of Bussiness, TraceHeaders, Bussiness) of the optional TraceHeaderList."""
    trace_list = _at_most_one(header_groups, "TraceHeaderList")
    if trace_list is None:
        return {}, [], None
    g = _group(trace_list)
    traces = []
    for th in g.get(_tag("TraceHeader"), ()):
        tg = _group(th)
        ts_el = _at_most_one(tg, "Timestamp")
        traces.append(Trace(organ_id=_organ_id(_one(tg, "OrganId", th), strict),
                            timestamp=_timestamp(ts_el) if ts_el is not None else None))
    business = _at_most_one(g, "Bussiness")
    return (_group(business) if business is not None else {}), traces, business


# ---------------------------------------------------------------- axis normalisation

def _drop_empty_response_for(els: list[etree._Element],
                             notes: list[Irregularity]) -> list[etree._Element]:
    """An edoc's ``<ResponseFor/>`` with nothing in it (the axis writes one for
    every document) answers nothing: left out, and noted."""
    kept = []
    for el in els:
        if len(el) == 0 and not (el.text or "").strip(_XML_WS):
            notes.append(Irregularity("empty_response_for",
                                      "an empty ResponseFor (answers no document) was ignored",
                                      element_path(el)))
        else:
            kept.append(el)
    return kept


def _note_traces(traces: list[Trace], sender: str, header_groups: _Groups,
                 notes: list[Irregularity]) -> None:
    """TraceHeaders of other nodes than the sender: the message was relayed."""
    others = [t.organ_id for t in traces if t.organ_id != sender]
    if others:
        trace_list = header_groups[_tag("TraceHeaderList")][0]
        notes.append(Irregularity(
            "extra_trace_headers",
            f"relayed: TraceHeaders of {len(others)} other node(s): {', '.join(others)}",
            element_path(trace_list)))


# ---------------------------------------------------------------- business types

def _business(g: _Groups, el: etree._Element, doc_type: int, own_document_id: str | None,
              strict: bool, notes: list[Irregularity]) -> Business:
    """What a revocation, update or replacement acts on (checked for doc types 1-3)."""
    target = _opt_identifier(g, "DocumentId")
    receivers: list[Receiver] = []
    info = _at_most_one(g, "BussinessDocumentInfo")
    receiver_list = _at_most_one(_group(info), "ReceiverList") if info is not None else None
    for r in (receiver_list.findall(_tag("Receiver")) if receiver_list is not None else ()):
        rg = _group(r)
        organ_el = _one(rg, "OrganId", r)
        organ = _organ_id(organ_el, strict)
        if any(x.organ_id == organ for x in receivers):
            raise _error(f"receiver {organ} is named more than once in the ReceiverList",
                         "duplicate_recipient", element_path(organ_el), organ_el.sourceline)
        receivers.append(Receiver(organ, _text(_one(rg, "ReceiverType", r)) == "1"))
    replacements: list[Replacement] = []
    info_list = _at_most_one(g, "ReplacementInfoList")
    for ri in (info_list.findall(_tag("ReplacementInfo")) if info_list is not None else ()):
        rg = _group(ri)
        organ_list = _at_most_one(rg, "OrganIdList")
        organs = ([_organ_id(o, strict) for o in organ_list.findall(_tag("OrganId"))]
                  if organ_list is not None else [])
        replacements.append(Replacement(_identifier(_one(rg, "DocumentId", ri)), organs))
    if doc_type in (REVOCATION, UPDATE) and not target:
        path = f"{element_path(el)}/DocumentId"
        what = "revocation" if doc_type == REVOCATION else "update"
        raise _error(f"a {what} (BussinessDocType {doc_type}) names the document it acts on "
                     f"in {path}", "missing_element", path, el.sourceline)
    if doc_type == REPLACEMENT and not replacements:
        path = f"{element_path(el)}/ReplacementInfoList/ReplacementInfo"
        raise _error(f"a replacement (BussinessDocType 3) names the documents it replaces "
                     f"in {path}", "missing_element", path, el.sourceline)
    if own_document_id is not None and own_document_id in (
            [target] if doc_type in (REVOCATION, UPDATE) else
            [r.document_id for r in replacements] if doc_type == REPLACEMENT else []):
        # Producers do this (an update keeping the original's DocumentId).  An
        # earlier document of that id from this sender would make this one a
        # duplicate_conflict, so it names nothing the hub holds: no link.
        notes.append(Irregularity(
            "business_names_itself",
            f"BussinessDocType {doc_type} names the document's own DocumentId: "
            f"it is kept as a document that acts on none", element_path(el)))
        target = None if doc_type in (REVOCATION, UPDATE) else target
        replacements = [r for r in replacements if r.document_id != own_document_id]
    return Business(doc_type, target, _opt_text(g, "BussinessDocReason"), receivers,
                    replacements)


def _attachments(root_groups: _Groups, env_groups: _Groups, notes: list[Irregularity]) -> int:
    """Check that manifest References and Attachments name the same ContentIds;
    note a ContentType that differs between them, and an attachment that is
    not one file zipped as ``<uuid>.<ext>`` (the producers' convention)."""
    encoded = _at_most_one(root_groups, "AttachmentEncoded")
    attachments = encoded.findall(_tag("Attachment")) if encoded is not None else []
    body = _at_most_one(env_groups, "edXMLBody")
    manifest = _at_most_one(_group(body), "edXMLManifest") if body is not None else None
    references = manifest.findall(_tag("Reference")) if manifest is not None else []

    attached = _content_ids(attachments, "attachment")
    listed = _content_ids(references, "manifest reference")
    for content_id, el in listed.items():
        if content_id not in attached:
            _mismatch(el, f"manifest lists {content_id} but no Attachment carries it")
    for content_id, el in attached.items():
        if content_id not in listed:
            _mismatch(el, f"Attachment {content_id} is not listed in the manifest")
    for content_id, id_el in attached.items():
        attachment = id_el.getparent()
        ag = _group(attachment)
        listed_type = _opt_text(_group(listed[content_id].getparent()), "ContentType")
        own_type = _opt_text(ag, "ContentType")
        if listed_type is not None and own_type is not None and listed_type != own_type:
            notes.append(Irregularity(
                "content_type_differs",
                f"{content_id}: the manifest says {listed_type[:100]}, the attachment {own_type[:100]}",
                element_path(attachment)))
        encoded = _at_most_one(ag, "ContentTransferEncoded")
        if encoded is not None:
            _note_zip(content_id, encoded, notes)
    return len(attachments)


_ZIP_LOCAL_HEADER = b"PK\x03\x04"
#: What producers name the one entry of an attachment's zip (edoc_new.edxml).
_UUID_ENTRY = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?:\.[^/\\]{1,16})?")
#: Base64 characters decoded to read the zip's first local header (30 bytes and the name).
_ZIP_HEAD_CHARS = 1024


def _note_zip(content_id: str, el: etree._Element, notes: list[Irregularity]) -> None:
    """Read only the first local header of the attachment's zip (its head, decoded)."""
    text = el.text or ""
    head = "".join(text[:_ZIP_HEAD_CHARS].split())
    try:
        data = base64.b64decode(head[:len(head) // 4 * 4])
    except (binascii.Error, ValueError):
        return  # the schema checked the base64; a head cut oddly tells nothing
    if not data:
        return
    path = element_path(el)
    if not data.startswith(_ZIP_LOCAL_HEADER) or len(data) < 30:
        notes.append(Irregularity("attachment_not_zipped",
                                  f"{content_id} is not zipped (as producers send it)", path))
        return
    name_len = int.from_bytes(data[26:28], "little")
    name = data[30:30 + name_len].decode("utf-8", "replace")
    if _UUID_ENTRY.fullmatch(name) is None or name.lower().endswith(".zip"):
        notes.append(Irregularity(
            "attachment_rezipped",
            f"{content_id} was zipped again: its first entry is {name[:100]!r}, "
            f"not <uuid>.<ext>", path))


def _content_ids(elements: list[etree._Element], what: str) -> dict[str, etree._Element]:
    ids: dict[str, etree._Element] = {}
    for el in elements:
        id_el = _one(_group(el), "ContentId", el)
        content_id = _identifier(id_el)
        if content_id in ids:
            _mismatch(id_el, f"{what} ContentId {content_id} occurs twice")
        ids[content_id] = id_el
    return ids


def _mismatch(el: etree._Element, message: str) -> None:
    raise _error(message, "attachment_mismatch", element_path(el), el.sourceline)


# ---------------------------------------------------------------- build_status

def _clean(text: str) -> str:
    return _NOT_XML_CHAR.sub("\ufffd", text)


def _leaf(parent: etree._Element, name: str, text: str) -> None:
    etree.SubElement(parent, _tag(name)).text = _clean(text)


def _format_date(d: date) -> str:
    return f"{d.year:04d}/{d.month:02d}/{d.day:02d}"


def _format_timestamp(ts: datetime) -> str:
    if ts.tzinfo is not None:
        ts = ts.astimezone(_ICT)
    return f"{_format_date(ts)} {ts.hour:02d}:{ts.minute:02d}:{ts.second:02d}"


def build_status(*, sender_id: str, sender_name: str | None, response_for: ResponseFor,
                 status_code: str, description: str, timestamp: datetime,
                 staff: str = "lienthong-hub") -> bytes:
    """A UTF-8 edXML status message shaped like the VPCP samples.

    ``timestamp`` may be naive (taken as Vietnam time, as on the wire) or
    aware (converted to UTC+7).  Raises ``ValueError`` for a status code or
    OrganId the hub must never emit.
    """
    if status_code not in STATUS_CODES:
        raise ValueError(f"unknown edXML status code {status_code!r}")
    for organ in (sender_id, response_for.organ_id):
        if not valid_organ_id(organ, strict=False):
            raise ValueError(f"not an OrganId: {organ!r}")

    root = etree.Element(_tag("edXML"), nsmap={None: NS})
    envelope = etree.SubElement(root, _tag("edXMLEnvelope"), nsmap={"edXML": NS})
    header = etree.SubElement(envelope, _tag("edXMLHeader"))
    mh = etree.SubElement(header, _tag("MessageHeader"))
    sender = etree.SubElement(mh, _tag("From"))
    _leaf(sender, "OrganId", sender_id)
    if sender_name:
        _leaf(sender, "OrganName", sender_name)
    about = etree.SubElement(mh, _tag("ResponseFor"))
    _leaf(about, "OrganId", response_for.organ_id)
    if response_for.code:
        _leaf(about, "Code", response_for.code)
    if response_for.promulgation_date is not None:
        _leaf(about, "PromulgationDate", _format_date(response_for.promulgation_date))
    _leaf(about, "DocumentId", response_for.document_id)
    _leaf(etree.SubElement(mh, _tag("StaffInfo")), "Staff", staff)
    _leaf(mh, "StatusCode", status_code)
    _leaf(mh, "Description", description)
    _leaf(mh, "Timestamp", _format_timestamp(timestamp))
    # Written by hand for the double-quoted declaration the samples carry.
    return _XML_DECLARATION + etree.tostring(root, encoding="UTF-8", xml_declaration=False,
                                             pretty_print=True)
