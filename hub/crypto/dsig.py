"""Direct XML-DSig: the enveloped signatures the hub makes, and the common
profile it verifies, without signxml's serialise-and-reparse copies.

Where it sits: ``hub.signing`` (sender verification, hop signatures,
``sign_envelope``), ``hub.receipts_xml`` (receipts) and ``hub.audit_chain``
(checkpoints) call into this module; ``hub.signing`` keeps the policy, the
structural defences against signature wrapping, and the signxml fallback.

The profile: exclusive c14n for SignedInfo and as the one transform after
enveloped-signature, a SHA-2 digest, ECDSA or RSA PKCS#1 v1.5 with SHA-2.
The digest is taken by streaming the c14n of the very tree being routed into
the hash, the signature set aside (its tail text kept) — so what was signed
is by construction what is processed.  Attachments over 1 MB are escaped and
hashed here in pieces, outside libxml2's c14n buffer, which would otherwise
hold about three times their size at once.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                             encode_dss_signature)
from lxml import etree
from signxml.algorithms import CanonicalizationMethod as C14N
from signxml.algorithms import SignatureConstructionMethod

from hub.errors import ConfigError, ValidationError
from hub.crypto.keys import HubKeys, PrivateKey

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
DS = "http://www.w3.org/2000/09/xmldsig#"
DS_SIGNATURE = f"{{{DS}}}Signature"
_ENVELOPED = SignatureConstructionMethod.enveloped.value
_EXC_C14N = C14N.EXCLUSIVE_XML_CANONICALIZATION_1_0.value
_SHA256_URI = "http://www.w3.org/2001/04/xmlenc#sha256"


class SignatureRefused(Exception):
    """A signature the hub will not accept; the text says why."""


def q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def sign_enveloped(root: etree._Element, placeholder: etree._Element, key: PrivateKey,
                   cert: x509.Certificate) -> tuple[etree._Element, etree._Element]:
    """Sign ``root`` (URI="") with the ds:Signature put where ``placeholder`` is.

    Returns the signed copy of the tree and its new ds:Signature.  Pass key and
    certificate objects, never PEM: signxml re-parses PEM (and re-runs the KDF
    of an encrypted key) on every call.
    """
    if root.get("Id") is not None or root.get("ID") is not None:
        # signxml would then sign URI="#<id>", which verifiers here refuse.
        raise ValidationError("cannot sign: the root element carries an Id attribute")
    if root.find(f".//{DS_SIGNATURE}[@Id='placeholder']") is not None:
        # signxml's own marker; a second one would make it fail mid-delivery.
        raise ValidationError("cannot sign: a ds:Signature already has Id=\"placeholder\"")
    # Signed in place, without signxml: exclusive c14n, SHA-256, the key's
    # own algorithm — the one profile verify_fast checks directly.  signxml
    # copies the document twice per signature (tostring + fromstring).
    if isinstance(key, ec.EllipticCurvePrivateKey):
        method = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
    elif isinstance(key, rsa.RSAPrivateKey):
        method = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    else:
        raise ConfigError(f"unsupported signing key type {type(key).__name__}")
    si = etree.SubElement(placeholder, f"{{{DS}}}SignedInfo")
    etree.SubElement(si, f"{{{DS}}}CanonicalizationMethod", Algorithm=_EXC_C14N)
    etree.SubElement(si, f"{{{DS}}}SignatureMethod", Algorithm=method)
    ref = etree.SubElement(si, f"{{{DS}}}Reference", URI="")
    transforms = etree.SubElement(ref, f"{{{DS}}}Transforms")
    etree.SubElement(transforms, f"{{{DS}}}Transform", Algorithm=_ENVELOPED)
    etree.SubElement(transforms, f"{{{DS}}}Transform", Algorithm=_EXC_C14N)
    etree.SubElement(ref, f"{{{DS}}}DigestMethod", Algorithm=_SHA256_URI)
    digest_el = etree.SubElement(ref, f"{{{DS}}}DigestValue")
    value_el = etree.SubElement(placeholder, f"{{{DS}}}SignatureValue")
    x509_data = etree.SubElement(etree.SubElement(placeholder, f"{{{DS}}}KeyInfo"),
                                 f"{{{DS}}}X509Data")
    etree.SubElement(x509_data, f"{{{DS}}}X509Certificate").text = base64.b64encode(
        cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
    digest_el.text = base64.b64encode(_digest_without(root, placeholder, "sha256")).decode("ascii")
    signed_info = etree.tostring(si, method="c14n", exclusive=True, with_comments=False)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s_ = decode_dss_signature(key.sign(signed_info, ec.ECDSA(hashes.SHA256())))
        size = (key.curve.key_size + 7) // 8
        value = r.to_bytes(size, "big") + s_.to_bytes(size, "big")
    else:
        value = key.sign(signed_info, padding.PKCS1v15(), hashes.SHA256())
    value_el.text = base64.b64encode(value).decode("ascii")
    return root, placeholder


def sign_root(root: etree._Element, keys: HubKeys) -> bytes:
    """Append an enveloped ds:Signature over a document the hub built itself
    (receipts, checkpoints); return its bytes."""
    placeholder = etree.SubElement(root, DS_SIGNATURE, nsmap={"ds": DS})
    sign_enveloped(root, placeholder, keys.key, keys.cert)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _digest_without(doc: etree._Element, sig: etree._Element, algorithm: str) -> bytes:
    """Digest of ``doc``'s exclusive c14n without ``sig`` (enveloped-signature transform).

    c14n is streamed into the hash: no copy of the document is made.  The
    signature's tail text stays (it is the parent's content, not the
    signature's); the tree is restored before returning.
    """
    parent = sig.getparent()
    assert parent is not None
    index, tail, prev = parent.index(sig), sig.tail, sig.getprevious()
    parent.remove(sig)
    if tail:
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    try:
        h = hashlib.new(algorithm)
        _c14n_into(doc, h)
        return h.digest()
    finally:
        if tail:
            if prev is not None:
                prev.tail = prev.tail[:len(prev.tail) - len(tail)] or None  # type: ignore[index]
            else:
                parent.text = parent.text[:len(parent.text) - len(tail)] or None  # type: ignore[index]
        parent.insert(index, sig)
        sig.tail = tail


#: Attachment text above this many characters is hashed by us, not by libxml2.
_BIG_TEXT = 1 << 20
_CHUNK = 1 << 20


def _c14n_text(text: str) -> str:
    """Exclusive c14n of a text node's content (the four escapes of the spec)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#xD;")


_ATTRIBUTES = etree.XPath("@*")


def _attributes(el: etree._Element) -> dict[str, str]:
    """``dict(el.attrib)`` in linear time: lxml looks each value up by name
    again, quadratic in the number of attributes (all of it holding the GIL)."""
    return {value.attrname: str(value) for value in _ATTRIBUTES(el)}


class _SetAside:
    """The big attachments of a tree, swapped out for small placeholders.

    Each ``ContentTransferEncoded`` element whose text is over ``_BIG_TEXT``
    characters is replaced in the tree by an element of the same name,
    attributes and tail holding a unique marker; the original element, text
    and all, waits detached and goes back with ``restore()`` — a pointer
    swap, where putting a 100 MB text back into a node would copy it twice.
    Each item keeps the attachment's text once, for ``stream``.
    """

    def __init__(self, doc: etree._Element) -> None:
        self.items: list[tuple[etree._Element, etree._Element, str, str]] = []
        for el in list(doc.iter(q("ContentTransferEncoded"))):
            text = el.text
            parent = el.getparent()
            if text is None or len(text) <= _BIG_TEXT or len(el) or parent is None:
                continue
            marker = f"\ue000lienthong-big-{len(self.items)}-{id(el)}\ue000"
            stand_in = etree.Element(el.tag, _attributes(el), nsmap=el.nsmap)
            stand_in.text, stand_in.tail = marker, el.tail
            prefix = el.prefix
            parent.replace(el, stand_in)
            if stand_in.prefix != prefix:  # would not render alike: keep the original
                parent.replace(stand_in, el)
                continue
            self.items.append((el, stand_in, marker, text))

    def restore(self) -> None:
        for el, stand_in, _marker, _text in reversed(self.items):
            stand_in.getparent().replace(stand_in, el)  # type: ignore[union-attr]
        self.items = []

    def stream(self, rendered: bytes, out: Any, escape: Any) -> None:
        """Write ``rendered`` (the small tree) with each marker replaced by
        its attachment's text, escaped by ``escape`` in 1 MB pieces."""
        rest = rendered
        for _el, _stand_in, marker, text in self.items:
            before, found, rest = rest.partition(marker.encode("utf-8"))
            assert found, "a set-aside attachment's marker is missing from the output"
            out(before)
            for i in range(0, len(text), _CHUNK):
                out(escape(text[i:i + _CHUNK]).encode("utf-8"))
        out(rest)


def _c14n_into(doc: etree._Element, h: Any) -> None:
    """Stream the exclusive c14n of ``doc`` into ``h``.

    libxml2 builds the escaped copy of each text node in a doubling buffer
    even when its output streams: a 100 MB attachment costs ~290 MB more at
    its peak.  So the big base64 attachments are set aside (``_SetAside``)
    while libxml2 canonicalises the (now small) rest, and their text is
    escaped and hashed here in 1 MB pieces.  The bytes hashed are exactly
    those of the plain c14n (tested against it).
    """
    aside = _SetAside(doc)
    if not aside.items:
        doc.getroottree().write_c14n(_HashWriter(h), exclusive=True, with_comments=False)
        return
    try:
        rendered = etree.tostring(doc.getroottree(), method="c14n", exclusive=True,
                                  with_comments=False)
        aside.stream(rendered, h.update, _c14n_text)
    finally:
        aside.restore()


def _xml_text(text: str) -> str:
    """A text node's content as libxml2 serialises it (UTF-8 output)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def write_document(root: etree._Element, out: Any) -> None:
    """Write ``etree.tostring(root, xml_declaration=True, encoding="UTF-8")``
    to the binary file ``out`` without the whole copy: big attachments are
    set aside as for the digest (libxml2's serialiser, too, holds about twice
    a 100 MB text node while escaping it)."""
    aside = _SetAside(root)
    try:
        rendered = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
        aside.stream(rendered, out.write, _xml_text)
    finally:
        aside.restore()


_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
           "http://www.w3.org/2001/04/xmlenc#sha256": hashes.SHA256,
           "http://www.w3.org/2001/04/xmldsig-more#sha384": hashes.SHA384,
           "http://www.w3.org/2001/04/xmlenc#sha512": hashes.SHA512}
_SIG_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
               "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256": hashes.SHA256,
               "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384": hashes.SHA384,
               "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512": hashes.SHA512,
               "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256": hashes.SHA256,
               "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384": hashes.SHA384,
               "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512": hashes.SHA512}


def c14n_sha256(doc: etree._Element) -> str:
    """Hex SHA-256 of ``doc``'s exclusive c14n (streamed, no copy kept)."""
    h = hashlib.sha256()
    _c14n_into(doc, h)
    return h.hexdigest()


class _HashWriter:
    """A file-like object that only hashes: c14n streams into it, no copy is kept."""

    def __init__(self, digest: Any) -> None:
        self.digest = digest

    def write(self, data: bytes) -> None:
        self.digest.update(data)


def verify_fast(doc: etree._Element, sig: etree._Element, cert: x509.Certificate,
                 at: dt.datetime | None = None) -> bool:
    """Verify the common profile directly; False when signxml must decide.

    The profile: exclusive c14n (no comments, no InclusiveNamespaces) for
    SignedInfo and as the only transform after enveloped-signature, one
    SHA-2 digest, ECDSA or RSA PKCS#1 v1.5 with SHA-2.  The digest is
    computed by streaming c14n of the document, the signature set aside,
    into the hash: no copy of the document is made (signxml makes four).
    Raises ``SignatureRefused`` on a bad digest or signature value.
    """
    si = sig.find(f"{{{DS}}}SignedInfo")
    if si is None or si.find(f".//{{{DS}}}InclusiveNamespaces") is not None:
        return False
    c14n = si.find(f"{{{DS}}}CanonicalizationMethod")
    method = si.find(f"{{{DS}}}SignatureMethod")
    ref = si.find(f"{{{DS}}}Reference")
    if c14n is None or method is None or ref is None or c14n.get("Algorithm") != _EXC_C14N:
        return False
    transforms = [t.get("Algorithm") for t in ref.iterfind(f"{{{DS}}}Transforms/{{{DS}}}Transform")]
    dm = ref.find(f"{{{DS}}}DigestMethod")
    digest_alg = _HASHES.get(dm.get("Algorithm") or "") if dm is not None else None
    sig_hash = _SIG_HASHES.get(method.get("Algorithm") or "")
    if transforms != [_ENVELOPED, _EXC_C14N] or digest_alg is None or sig_hash is None:
        return False
    when = at or dt.datetime.now(dt.timezone.utc)
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        # signxml checks the pinned certificate's validity too; so must we.
        raise SignatureRefused(f"the trusted certificate {cert.subject.rfc4514_string()} is not valid "
                       f"at {when:%Y-%m-%d %H:%M:%S}Z")
    key = cert.public_key()
    is_ec = "ecdsa" in (method.get("Algorithm") or "")
    if is_ec != isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey)):
        raise SignatureRefused("the signature method does not match the trusted certificate's key")
    try:
        expected = base64.b64decode(ref.findtext(f"{{{DS}}}DigestValue") or "", validate=True)
        value = base64.b64decode("".join((sig.findtext(f"{{{DS}}}SignatureValue") or "").split()),
                                 validate=True)
    except ValueError:
        raise SignatureRefused("DigestValue or SignatureValue is not base64") from None
    actual = _digest_without(doc, sig, digest_alg.name)
    if not hmac.compare_digest(actual, expected):
        # Same words as signxml's refusal, which operators and tests know.
        raise SignatureRefused(f"InvalidDigest: Digest mismatch for reference 0 (trusted certificate "
                       f"{cert.subject.rfc4514_string()})")
    signed_info = etree.tostring(si, method="c14n", exclusive=True, with_comments=False)
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            half = len(value) // 2
            der = encode_dss_signature(int.from_bytes(value[:half], "big"),
                                       int.from_bytes(value[half:], "big"))
            key.verify(der, signed_info, ec.ECDSA(sig_hash()))
        else:
            key.verify(value, signed_info, padding.PKCS1v15(), sig_hash())
    except InvalidSignature:
        raise SignatureRefused(f"InvalidSignature: Signature verification failed (trusted certificate "
                       f"{cert.subject.rfc4514_string()})") from None
    return True
