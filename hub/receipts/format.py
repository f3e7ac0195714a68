"""The hub's signed receipt: one small XML document per event of a document.

Where this sits in the pipeline: after cleanup commits an envelope (event
``accepted``) and after every later change of a delivery (``delivered``,
``failed``) or relayed business status (``status``), ``hub.receipts`` calls
``build_receipt``/``build_receipts`` with the hub's keys and stores the
bytes; ``GET /v1/receipts/{id}`` serves them as they are, and auditors check
them offline with ``verify_receipt`` and the hub's certificate.

Format: ``schemas/receipt.xsd``, namespace ``urn:lienthong-hub:receipt:1``,
compact (no indentation), signed by the hub with one enveloped ds:Signature
(Reference URI="", exclusive c14n, SHA-256) as the last child.  A receipt of
a document that business documents act on, or of one that acts on others,
also states the document's ``Standing`` (current, revoked, updated,
replaced) and its ``Link``s as of the receipt's event; both are optional, so
receipts written before them stay valid.
``verify_receipt`` trusts only what the signature covers: it reads the fields
back from signxml's ``signed_xml``, never from the raw input.
"""
from __future__ import annotations

import datetime as dt
import importlib.resources
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from cryptography import x509
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier

from hub.errors import ValidationError
from hub.crypto.keys import HubKeys
from hub.crypto.dsig import DS, DS_SIGNATURE, sign_root
from hub.crypto.signing import parse_xml

RNS = "urn:lienthong-hub:receipt:1"
VERSION = "1"
EVENTS = ("accepted", "delivered", "failed", "status")
SIGNATURE_RESULTS = ("valid", "unsigned", "invalid", "recorded")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}\Z")
_C14N_EXC = "http://www.w3.org/2001/10/xml-exc-c14n#"
_VERIFY_CONFIG = SignatureConfiguration(location="./", expect_references=1)


#: A document's standing, as GET /v1/envelopes/{id} shows it.
STANDINGS = ("current", "revoked", "updated", "replaced")
LINK_TYPES = ("revokes", "revoked_by", "updates", "updated_by", "replaces", "replaced_by")


@dataclass(frozen=True)
class ReceiptLink:
    """A link of the receipt's document: ``type`` and the other document."""

    type: str
    message_id: str
    document_id: str | None = None


@dataclass(frozen=True)
class ReceiptFields:
    """What a receipt states; ``time`` is timezone-aware (written as UTC)."""

    receipt_id: str
    message_id: str
    document_sha256: str
    document_id: str
    sender: str
    event: str
    state: str
    time: dt.datetime
    sender_signature: str
    hub_id: str
    recipient: str | None = None
    business_status: str | None = None
    #: None (not stated: no link) or one of ``STANDINGS``.
    standing: str | None = None
    links: tuple[ReceiptLink, ...] = ()


# (field, element) in document order; optional elements are skipped when None.
_LAYOUT = (
    ("receipt_id", "ReceiptId"), ("message_id", "MessageId"),
    ("document_sha256", "DocumentDigest"), ("document_id", "DocumentId"),
    ("sender", "Sender"), ("recipient", "Recipient"), ("event", "Event"),
    ("state", "State"), ("business_status", "BusinessStatus"), ("time", "Time"),
    ("sender_signature", "SenderSignature"), ("hub_id", "HubId"), ("standing", "Standing"),
)
_OPTIONAL = frozenset({"recipient", "business_status", "standing"})
assert {f for f, _ in _LAYOUT} | {"links"} == {f.name for f in fields(ReceiptFields)}


def _r(tag: str) -> str:
    return f"{{{RNS}}}{tag}"


def format_time(value: dt.datetime) -> str:
    """ISO 8601 in UTC with a ``Z``; microseconds only when present."""
    if value.tzinfo is None:
        raise ValueError("receipt time must be timezone-aware")
    value = value.astimezone(dt.UTC)
    spec = "microseconds" if value.microsecond else "seconds"
    return value.replace(tzinfo=None).isoformat(timespec=spec) + "Z"


def _check(f: ReceiptFields) -> None:
    # Programming errors, caught before a malformed receipt could be signed.
    if f.event not in EVENTS:
        raise ValueError(f"receipt event {f.event!r} not in {EVENTS}")
    if f.sender_signature not in SIGNATURE_RESULTS:
        raise ValueError(f"sender signature result {f.sender_signature!r} not in "
                         f"{SIGNATURE_RESULTS}")
    if not _SHA256_HEX.match(f.document_sha256):
        raise ValueError("document_sha256 must be 64 lower-case hex digits")
    if f.standing is not None and f.standing not in STANDINGS:
        raise ValueError(f"standing {f.standing!r} not in {STANDINGS}")
    if any(link.type not in LINK_TYPES for link in f.links):
        raise ValueError(f"link types must be in {LINK_TYPES}")


def receipt_body(f: ReceiptFields) -> etree._Element:
    """The unsigned receipt element (what the signature will cover)."""
    _check(f)
    root = etree.Element(_r("Receipt"), nsmap={None: RNS}, version=VERSION)
    for name, tag in _LAYOUT:
        value = getattr(f, name)
        if value is None and name in _OPTIONAL:
            continue
        el = etree.SubElement(root, _r(tag))
        el.text = format_time(value) if name == "time" else str(value)
        if name == "document_sha256":
            el.set("algorithm", "sha256")
    for link in f.links:
        el = etree.SubElement(root, _r("Link"), type=link.type, message=link.message_id)
        if link.document_id is not None:
            el.set("document", link.document_id)
    return root


def canonical_body(f: ReceiptFields) -> bytes:
    """Exclusive c14n of the unsigned receipt (golden files, debugging)."""
    return etree.tostring(receipt_body(f), method="c14n", exclusive=True)


def build_receipt(f: ReceiptFields, keys: HubKeys) -> bytes:
    """Build and sign one receipt; returns the XML bytes to store and serve."""
    return sign_root(receipt_body(f), keys)


def build_receipts(fields_list: Iterable[ReceiptFields], keys: HubKeys) -> list[bytes]:
    """Build and sign several receipts (one signature each: each stands alone)."""
    return [build_receipt(f, keys) for f in fields_list]


# --- verification -------------------------------------------------------------

_local = threading.local()


def _schema() -> etree.XMLSchema:
    # One per thread: an XMLSchema keeps its error log on the object.
    schema = getattr(_local, "schema", None)
    if schema is None:
        resource = importlib.resources.files("schemas").joinpath("receipt.xsd")
        with resource.open("rb") as fh:
            schema = _local.schema = etree.XMLSchema(etree.parse(fh))
    return schema


def _refuse(message: str, **details: Any) -> ValidationError:
    return ValidationError(f"receipt refused: {message}", code="receipt_invalid",
                           details=details)


def validate_receipt_schema(root: etree._Element) -> None:
    """Raise ``receipt_invalid`` unless ``root`` is valid against receipt.xsd."""
    schema = _schema()
    if not schema.validate(root):
        err = schema.error_log.last_error
        raise _refuse(f"not valid against receipt.xsd: {err.message}",
                      line=err.line, path=err.path)


def _fields_from(root: etree._Element) -> ReceiptFields:
    values: dict[str, Any] = {name: root.findtext(_r(tag)) for name, tag in _LAYOUT}
    values["time"] = dt.datetime.fromisoformat(values["time"])
    values["links"] = tuple(ReceiptLink(el.get("type"), el.get("message"), el.get("document"))
                            for el in root.iterfind(_r("Link")))
    return ReceiptFields(**values)


def verify_receipt(xml: bytes, hub_cert: x509.Certificate, *,
                   at: dt.datetime | None = None) -> ReceiptFields:
    """Check a receipt's schema and the hub's signature; return what it signed.

    ``at`` is the time at which ``hub_cert`` must be valid (default now; an
    auditor passes the receipt's own time).  Raises ``receipt_invalid``.
    """
    try:
        root = parse_xml(xml)
    except ValidationError as exc:
        raise _refuse(exc.message, **exc.details) from None
    validate_receipt_schema(root)
    signatures = list(root.iter(DS_SIGNATURE))
    if len(signatures) != 1 or signatures[0].getparent() is not root:
        raise _refuse("expected exactly one ds:Signature, a child of Receipt")
    refs = signatures[0].findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
    if [r.get("URI") for r in refs] != [""]:
        raise _refuse("the signature must cover the whole receipt (Reference URI=\"\")")
    config = _VERIFY_CONFIG if at is None else replace(_VERIFY_CONFIG, verification_time=at)
    try:
        result: Any = XMLVerifier().verify(root, x509_cert=hub_cert, expect_config=config)
    except Exception as exc:  # noqa: BLE001 - signxml raises more than SignXMLException
        raise _refuse(f"bad signature: {type(exc).__name__}: {exc}") from None
    signed = result.signed_xml
    if signed is None or signed.tag != _r("Receipt"):
        raise _refuse("the signed data is not a receipt")
    return _fields_from(signed)
