"""XML-DSig for edXML envelopes: the sender's signature in, the hub's hop out.

Where this sits in the pipeline: cleanup calls ``verify_sender`` on the parsed
envelope after XSD and semantic checks, before the durable commit; the
delivery adapters for edXML peers call ``sign_hop`` to render the wire form
(the stored original bytes are never altered); a peer hub's ingress calls
``verify_hop``.  ``sign_envelope`` is what an agency system does; the hub
uses it only in tests, demos and benchmarks.

Sender signature: one W3C ``ds:Signature``, the last child of
``edXMLHeader``, enveloped, ``Reference URI=""`` (the whole document).  The
verifying key is always the one the ``TrustStore`` pins or certifies for the
sender; KeyInfo is only a hint for finding the leaf under a CA.

Hop signatures (relay wire form, like X-Road/AS4 access points): a relaying
hub appends ``TraceHeader{OrganId=hub, Timestamp}`` as the last
``TraceHeaderList`` child, creating the list after ``MessageHeader`` when
absent, then *prepends* (like WS-Security header blocks) an enveloped
``ds:Signature Id="lienthong-hop-<n>[-newlist]"`` before the first
``ds:Signature`` of ``edXMLHeader``; ``n`` is the position of its TraceHeader
and ``-newlist`` says it created the list.  It adds no whitespace, so removing
exactly those nodes restores the previous document byte for byte after c14n.
``verify_sender`` unwinds hops newest first: a hop by a hub in the trust store
is verified (refused if bad), a hop by an unknown hub is ignored with that
reason in the detail (a peer's ingress authenticated it with ``verify_hop``),
and the sender's signature is then verified on the unwound document.

Cost: the hub signs directly, and verifies the common profile directly
(``hub.dsig``: exclusive c14n streamed into the hash of the very tree it
will route on); anything else falls back to signxml.  signxml re-serialises and re-parses a
document several times per signature: for a 10 KB envelope this halves the
cost of accepting it, and for 1 MB it saves ~10 ms.
"""
from __future__ import annotations

import base64
import copy
import datetime as dt
import re
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml import SignatureConfiguration, XMLSigner, XMLVerifier
from signxml.algorithms import CanonicalizationMethod as C14N
from signxml.algorithms import (
    DigestAlgorithm,
    SignatureConstructionMethod,
    SignatureMethod,
)

from hub.crypto.dsig import (DS, DS_SIGNATURE, SignatureRefused, c14n_sha256, write_document,
                      verify_fast, sign_enveloped)
from hub.errors import ConfigError, ValidationError
from hub.crypto.keys import HubKeys, PrivateKey, TrustStore, cert_names, fingerprint

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
POLICIES = ("required", "verify_if_present", "record_only")
HOP_ID_PREFIX = "lienthong-hop-"
_HOP_ID = re.compile(r"lienthong-hop-([1-9][0-9]{0,3})(-newlist)?\Z")
#: QCVN timestamps are Vietnam local time (UTC+7, no daylight saving).
VN_TZ = dt.timezone(dt.timedelta(hours=7))
_MAX_KEYINFO_CERTS = 8
#: Values of every attribute whose local name is Id, ID or id (xml:id too), in any namespace.
_ID_VALUES = etree.XPath("//@*[local-name()='Id' or local-name()='ID' or local-name()='id']",
                         smart_strings=False)
_ENVELOPED = SignatureConstructionMethod.enveloped.value
_ALLOWED_TRANSFORMS = frozenset({_ENVELOPED} | {m.value for m in C14N})
_HEADER_PATH = f"./{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLHeader/"
_VERIFY_CONFIG = SignatureConfiguration(
    location=_HEADER_PATH, expect_references=1,
    signature_methods=frozenset({
        SignatureMethod.RSA_SHA256, SignatureMethod.RSA_SHA384, SignatureMethod.RSA_SHA512,
        SignatureMethod.ECDSA_SHA256, SignatureMethod.ECDSA_SHA384,
        SignatureMethod.ECDSA_SHA512, SignatureMethod.SHA256_RSA_MGF1}),
    digest_algorithms=frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA384,
                                 DigestAlgorithm.SHA512}))


def q(tag: str) -> str:
    """Clark name of a QCVN 102 element."""
    return f"{{{NS}}}{tag}"


@dataclass(frozen=True)
class SignatureCheck:
    """Outcome of a sender-signature check: valid, unsigned, invalid or recorded."""

    result: str
    detail: str
    signer: str | None = None


# --- parsing and signxml plumbing ---------------------------------------------

_local = threading.local()


def _parser() -> etree.XMLParser:
    # One per thread (lxml parsers are not thread-safe); also handed to signxml,
    # which re-parses the envelope several times.  Same limits as hub.xmlsafe.
    parser = getattr(_local, "parser", None)
    if parser is None:
        # huge_tree as in hub.xmlsafe: a 100 MB envelope has one base64 text
        # node of ~100,000,000 characters; without it libxml2 stops at
        # 10,000,000 and a large envelope can be neither verified nor relayed.
        # Safe for the same reason: no DTD, hence no entity, is ever loaded.
        parser = _local.parser = etree.XMLParser(
            resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
    return parser


def parse_xml(raw: bytes | Path) -> etree._Element:
    """Parse what the hub or a peer hub produced (bytes, or a payload file that
    libxml2 reads itself): no DTD, no entities, no network."""
    try:
        if isinstance(raw, Path):
            root = etree.parse(str(raw), _parser()).getroot()
        else:
            root = etree.fromstring(raw, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise ValidationError(f"malformed XML: {exc}", code="xml_malformed",
                              details={"line": exc.lineno}) from exc
    if root.getroottree().docinfo.doctype:
        raise ValidationError("DTDs are not accepted", code="xml_dtd_forbidden")
    return root


def _signer(key: PrivateKey) -> XMLSigner:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        method = SignatureMethod.ECDSA_SHA256
    elif isinstance(key, rsa.RSAPrivateKey):
        method = SignatureMethod.RSA_SHA256
    else:
        raise ConfigError(f"unsupported signing key type {type(key).__name__}")
    # A fresh signer per call (cheap): no signxml object is shared between threads.
    signer = XMLSigner(method=SignatureConstructionMethod.enveloped,
                       signature_algorithm=method, digest_algorithm=DigestAlgorithm.SHA256,
                       c14n_algorithm=C14N.EXCLUSIVE_XML_CANONICALIZATION_1_0)
    # signxml re-parses the tree with its own default parser (no huge_tree);
    # give it ours (signxml has no public setter for the signer's parser).
    signer._parser = _parser()
    return signer


def _to_bytes(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


# --- structure ----------------------------------------------------------------

def _one(parent: etree._Element, tag: str, what: str) -> etree._Element:
    found = parent.findall(tag)
    if len(found) != 1:
        raise SignatureRefused(f"expected exactly one {what}, found {len(found)}")
    return found[0]


def _header(root: etree._Element) -> etree._Element:
    if root.tag != q("edXML"):
        raise SignatureRefused(f"root element is {root.tag}, not edXML")
    envelope = _one(root, q("edXMLEnvelope"), "edXMLEnvelope")
    header = _one(envelope, q("edXMLHeader"), "edXMLHeader")
    _one(header, q("MessageHeader"), "MessageHeader")
    return header


@dataclass
class _Inventory:
    header: etree._Element
    sender: etree._Element | None = None
    hops: list[etree._Element] = field(default_factory=list)
    legacy: int = 0


def _inventory(root: etree._Element) -> _Inventory:
    """Find and classify every signature; refuse misplaced or ambiguous ones."""
    header = _header(root)
    inv = _Inventory(header)
    tree = root.getroottree()
    senders: list[etree._Element] = []
    for sig in root.iter(DS_SIGNATURE):
        if sig.getparent() is not header:
            raise SignatureRefused(f"ds:Signature outside edXMLHeader at {tree.getpath(sig)}")
        (inv.hops if _HOP_ID.match(sig.get("Id") or "") else senders).append(sig)
    if len(senders) > 1:
        raise SignatureRefused(f"{len(senders)} sender ds:Signature elements in edXMLHeader; expected one")
    inv.sender = senders[0] if senders else None
    ds_children = [c for c in header if c.tag == DS_SIGNATURE]
    if ds_children[:len(inv.hops)] != inv.hops:
        raise SignatureRefused("hop signatures must precede the sender signature")
    inv.legacy = sum(1 for c in header if isinstance(c.tag, str)
                     and etree.QName(c).localname == "Signature" and c.tag != DS_SIGNATURE)
    seen: set[str] = set()
    # XPath walks the attribute nodes themselves, in C.  (lxml's attrib.items()
    # looks each value up by name again: quadratic in one element's
    # attributes, and all of it holding the GIL.)
    for value in _ID_VALUES(root):
        if value in seen:
            raise SignatureRefused(f"duplicate Id attribute value {str(value)!r}")
        seen.add(value)
    return inv


def _identity(root: etree._Element) -> tuple[str | None, ...]:
    mh = f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLHeader/{{{NS}}}MessageHeader/{{{NS}}}"
    return (root.findtext(f"{mh}From/{{{NS}}}OrganId"), root.findtext(f"{mh}DocumentId"),
            root.findtext(f"{mh}ResponseFor/{{{NS}}}DocumentId"))


def _same_document(signed: etree._Element | None, doc: etree._Element) -> None:
    """See what is signed: the signed tree must be this envelope, not a look-alike."""
    if signed is None or signed.tag != q("edXML"):
        raise SignatureRefused("the signed data is not an edXML document")
    try:
        _header(signed)
    except SignatureRefused as exc:
        raise SignatureRefused(f"the signed document differs: {exc}") from None
    if _identity(signed) != _identity(doc):
        raise SignatureRefused("the signed MessageHeader (From/DocumentId) is not this envelope's")


# --- verification core --------------------------------------------------------

def _check_signed_info(sig: etree._Element) -> None:
    refs = sig.findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
    if len(refs) != 1:
        raise SignatureRefused(f"expected one ds:Reference, found {len(refs)}")
    if refs[0].get("URI") != "":
        raise SignatureRefused(f"ds:Reference URI is {refs[0].get('URI')!r}; only \"\" "
                       "(the whole document) is accepted")
    algs = [t.get("Algorithm") for t in refs[0].iterfind(f"{{{DS}}}Transforms/{{{DS}}}Transform")]
    if _ENVELOPED not in algs or not set(algs) <= _ALLOWED_TRANSFORMS:
        raise SignatureRefused(f"unexpected transforms {algs}")


def _keyinfo_certs(sig: etree._Element) -> list[x509.Certificate]:
    texts = sig.findall(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate")
    certs = []
    for el in texts[:_MAX_KEYINFO_CERTS]:
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(el.text or ""))
            # cryptography parses these lazily: a malformed name or extension
            # is refused here, not raised later from inside the trust store.
            cert.subject, cert.issuer, cert.extensions  # noqa: B018
            certs.append(cert)
        except ValueError as exc:
            raise SignatureRefused(f"unreadable X509Certificate in KeyInfo: {exc}") from None
    return certs


def _trusted_cert(sig: etree._Element, organ_id: str, trust: TrustStore,
                  at: dt.datetime | None) -> x509.Certificate:
    """The certificate the trust store accepts for ``organ_id`` on this signature."""
    entry = trust.entry(organ_id)
    if entry is None:
        raise SignatureRefused(f"no certificate or CA is known for {organ_id}")
    candidates = [entry.pinned] if entry.pinned is not None else _keyinfo_certs(sig)
    if not candidates:
        raise SignatureRefused(f"{organ_id} is trusted by CA, but KeyInfo carries no X509Certificate")
    problem = None
    for cert in candidates:
        others = [c for c in candidates if c is not cert]
        problem = trust.signer_problem(organ_id, cert, intermediates=others, at=at)
        if problem is None:
            return cert
    raise SignatureRefused(problem or "no acceptable certificate")


def _verify(doc: etree._Element, sig: etree._Element, cert: x509.Certificate,
            at: dt.datetime | None) -> None:
    """Verify ``sig`` (the first ds:Signature of edXMLHeader) over ``doc`` with ``cert``."""
    _check_signed_info(sig)
    header = _header(doc)
    if next(header.iterchildren(DS_SIGNATURE), None) is not sig:
        raise SignatureRefused("internal: the signature to verify is not the first in edXMLHeader")
    if verify_fast(doc, sig, cert, at):
        return
    config = _VERIFY_CONFIG if at is None else replace(_VERIFY_CONFIG, verification_time=at)
    try:
        result: Any = XMLVerifier().verify(doc, x509_cert=cert, parser=_parser(),
                                           expect_config=config)
    except Exception as exc:  # noqa: BLE001 - signxml also raises ValueError, KeyError…
        # cryptography's InvalidSignature carries no text: say which key failed.
        text = str(exc).strip().rstrip(":") or "no message"
        raise SignatureRefused(f"{type(exc).__name__}: {text} (trusted certificate "
                       f"{cert.subject.rfc4514_string()})") from None
    _same_document(result.signed_xml, doc)


def _unwind_hop(doc: etree._Element, inv: _Inventory, hop: etree._Element,
                trust: TrustStore, at: dt.datetime | None) -> str:
    """Verify (if the hub is known) and remove the newest hop; return a note."""
    match = _HOP_ID.match(hop.get("Id") or "")
    assert match is not None
    position, created_list = int(match[1]), bool(match[2])
    trace_list = inv.header.find(q("TraceHeaderList"))
    traces = trace_list.findall(q("TraceHeader")) if trace_list is not None else []
    if len(traces) != position:
        raise SignatureRefused(f"hop signature {hop.get('Id')} does not match the "
                       f"{len(traces)} TraceHeader(s) present")
    hub_id = traces[-1].findtext(q("OrganId")) or ""
    if hub_id in trust:
        try:
            _verify(doc, hop, _trusted_cert(hop, hub_id, trust, at), at)
        except SignatureRefused as exc:
            raise SignatureRefused(f"hop signature by {hub_id}: {exc}") from None
        note = f"hop by {hub_id} verified"
    else:
        note = f"hop by {hub_id} not verified here (hub not in trust store)"
    inv.header.remove(hop)
    assert trace_list is not None
    trace_list.remove(traces[-1])
    if created_list:
        if len(trace_list) or (trace_list.text or "").strip() or trace_list.attrib:
            raise SignatureRefused(f"hop {hop.get('Id')} claims to have created a non-empty TraceHeaderList")
        inv.header.remove(trace_list)
    return note


def check_sender(root: etree._Element, sender_id: str, trust: TrustStore, *,
                 at: dt.datetime | None = None) -> SignatureCheck:
    """Check the sender's XML-DSig signature without any policy; never raises on bad input.

    Returns ``valid``, ``invalid`` (with the reason) or ``unsigned``.  For
    auditors re-checking stored originals (``at`` = the time of acceptance).
    """
    try:
        inv = _inventory(root)
        notes: list[str] = []
        if inv.hops:
            root = copy.deepcopy(root)  # unwinding edits the tree; never the caller's
            inv = _inventory(root)
            for hop in list(inv.hops):
                notes.append(_unwind_hop(root, inv, hop, trust, at))
        if inv.sender is None:
            legacy = "legacy signature element not verified" if inv.legacy else "no signature"
            return SignatureCheck("unsigned", "; ".join([legacy, *notes]))
        cert = _trusted_cert(inv.sender, sender_id, trust, at)
        _verify(root, inv.sender, cert, at)
        if _identity(root)[0] != sender_id:
            raise SignatureRefused(f"the signed From/OrganId is {_identity(root)[0]}, not {sender_id}")
    except SignatureRefused as exc:
        return SignatureCheck("invalid", str(exc))
    notes.insert(0, f"signed by certificate sha256:{fingerprint(cert)}")
    return SignatureCheck("valid", "; ".join(notes), cert.subject.rfc4514_string())


def verify_sender(root: etree._Element, sender_id: str, trust: TrustStore, policy: str, *,
                  at: dt.datetime | None = None) -> SignatureCheck:
    """Apply the sender's signature ``policy``; raise ValidationError when it refuses.

    Codes: ``signature_required`` (required, and no XML-DSig signature) and
    ``signature_invalid`` (bad digest or value, untrusted or unknown signer,
    misplaced or ambiguous signatures).
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown signature policy {policy!r}; expected one of {POLICIES}")
    if policy == "record_only":
        return _record(root)
    check = check_sender(root, sender_id, trust, at=at)
    if check.result == "invalid":
        raise ValidationError(f"sender signature refused: {check.detail}",
                              code="signature_invalid",
                              details={"sender": sender_id, "reason": check.detail})
    if check.result == "unsigned" and policy == "required":
        raise ValidationError(f"{sender_id} must sign with XML-DSig: {check.detail}",
                              code="signature_required",
                              details={"sender": sender_id, "reason": check.detail})
    return check


def _record(root: etree._Element) -> SignatureCheck:
    """record_only: note what is there, verify nothing, refuse nothing."""
    header = root.find(f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLHeader")
    found = [c for c in (header if header is not None else [])
             if isinstance(c.tag, str) and etree.QName(c).localname == "Signature"]
    if not found:
        return SignatureCheck("unsigned", "no signature")
    kinds = ", ".join("XML-DSig" if c.tag == DS_SIGNATURE else f"legacy {c.tag}" for c in found)
    return SignatureCheck("recorded", f"not verified (policy record_only): {kinds}")


# --- sender and hop signing ---------------------------------------------------

def sign_envelope(raw: bytes, key: PrivateKey, cert: x509.Certificate) -> bytes:
    """Sign an envelope as an agency system does (last child of edXMLHeader)."""
    root = parse_xml(raw)
    try:
        header = _header(root)
    except SignatureRefused as exc:
        raise ValidationError(f"cannot sign: {exc}") from None
    placeholder = etree.SubElement(header, DS_SIGNATURE, nsmap={"ds": DS})
    return _to_bytes(sign_enveloped(root, placeholder, key, cert)[0])


def format_timestamp(now: dt.datetime) -> str:
    """QCVN ``yyyy/MM/dd HH:mm:ss`` in Vietnam time (naive values taken as such)."""
    if now.tzinfo is not None:
        now = now.astimezone(VN_TZ)
    return now.strftime("%Y/%m/%d %H:%M:%S")


def sign_hop(raw: bytes, *, hub_id: str, keys: HubKeys, now: dt.datetime) -> bytes:
    """Render the relay wire form: our TraceHeader, then our hop signature over all."""
    return _to_bytes(_hop_signed(parse_xml(raw), hub_id=hub_id, keys=keys, now=now))


def sign_hop_file(src: Path, dst: Path, *, hub_id: str, keys: HubKeys, now: dt.datetime) -> None:
    """``sign_hop`` from file to file, for payloads too large to hold twice:
    libxml2 reads ``src``, and the output is written with the big
    attachments streamed (``dsig.write_document``), never copied whole."""
    signed = _hop_signed(parse_xml(src), hub_id=hub_id, keys=keys, now=now)
    with open(dst, "wb") as out:
        write_document(signed, out)


def _hop_signed(root: etree._Element, *, hub_id: str, keys: HubKeys,
                now: dt.datetime) -> etree._Element:
    try:
        header = _header(root)
    except SignatureRefused as exc:
        raise ValidationError(f"cannot relay: {exc}") from None
    trace_list = header.find(q("TraceHeaderList"))
    created = trace_list is None
    if trace_list is None:
        trace_list = etree.Element(q("TraceHeaderList"))
        header.insert(header.index(header.find(q("MessageHeader"))) + 1, trace_list)
    trace = etree.SubElement(trace_list, q("TraceHeader"))
    etree.SubElement(trace, q("OrganId")).text = hub_id
    etree.SubElement(trace, q("Timestamp")).text = format_timestamp(now)
    position = len(trace_list.findall(q("TraceHeader")))
    hop_id = f"{HOP_ID_PREFIX}{position}{'-newlist' if created else ''}"
    placeholder = etree.Element(DS_SIGNATURE, nsmap={"ds": DS})
    first_sig = next(header.iterchildren(DS_SIGNATURE), None)
    if first_sig is None:
        header.append(placeholder)
    else:
        first_sig.addprevious(placeholder)
    signed, hop_sig = sign_enveloped(root, placeholder, keys.key, keys.cert)
    hop_sig.set("Id", hop_id)  # outside SignedInfo: a locator, not a signed claim
    return signed


def verify_hop(raw: bytes | Path, hub_cert: x509.Certificate, *,
               at: dt.datetime | None = None) -> bool:
    """Verify the newest hop signature against the relaying hub's certificate.

    Returns True; raises ValidationError ``signature_invalid`` otherwise.
    """
    _verify_hop(parse_xml(raw), hub_cert, at)
    return True


def verify_relayed(raw: bytes | Path, hub_cert: x509.Certificate, *,
                   at: dt.datetime | None = None) -> str:
    """``verify_hop``, then the ``relayed_digest`` of the same parse."""
    root = parse_xml(raw)
    _verify_hop(root, hub_cert, at)
    return _relayed_digest(root)


def relayed_digest(raw: bytes | Path) -> str:
    """The document as its sender made it, whatever hubs relayed it since: hex
    SHA-256 of its exclusive c14n with every hop signature and every
    TraceHeader removed.

    Two copies of one document that came by different deliveries (a relaying
    hub signs each delivery anew, at its own time) differ only there; the
    receiving hub takes them as the same message by this digest where their
    bytes differ.  Anything else that differs (a word of the text, a
    recipient, an attachment, the sender's signature) gives another digest."""
    return _relayed_digest(parse_xml(raw))


def _relayed_digest(root: etree._Element) -> str:
    try:
        inv = _inventory(root)
    except SignatureRefused:
        inv = None
    doomed = list(inv.hops) if inv is not None else []
    doomed += root.iter(q("TraceHeader"))
    for el in doomed:
        parent = el.getparent()
        if parent is not None:
            el.tail = None
            parent.remove(el)
    for trace_list in list(root.iter(q("TraceHeaderList"))):  # one a hop created
        if not len(trace_list) and not (trace_list.text or "").strip():
            trace_list.getparent().remove(trace_list)  # type: ignore[union-attr]
    return c14n_sha256(root)


def _verify_hop(root: etree._Element, hub_cert: x509.Certificate,
                at: dt.datetime | None) -> None:
    try:
        inv = _inventory(root)
        if not inv.hops:
            raise SignatureRefused("no hop signature")
        hop = inv.hops[0]
        position = int(_HOP_ID.match(hop.get("Id") or "")[1])  # type: ignore[index]
        traces = inv.header.findall(f"{q('TraceHeaderList')}/{q('TraceHeader')}")
        if len(traces) != position:
            raise SignatureRefused(f"hop {hop.get('Id')} does not match the last TraceHeader")
        hub_id = traces[-1].findtext(q("OrganId")) or ""
        if hub_id not in cert_names(hub_cert):
            raise SignatureRefused(f"the last TraceHeader names {hub_id!r}, not the certificate's hub")
        _verify(root, hop, hub_cert, at)
    except SignatureRefused as exc:
        raise ValidationError(f"hop signature refused: {exc}", code="signature_invalid",
                              details={"reason": str(exc)}) from None
