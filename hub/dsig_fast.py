"""Fast enveloped XML-DSig signing for the documents the hub itself writes.

Where it sits: receipts (``hub.receipts_xml``) and audit checkpoints
(``hub.audit_chain``) are small documents the hub builds from scratch, signs
and never parses from outside.  signxml spends most of its ~0.3 ms per
signature re-serialising and re-parsing the tree; here the same signature is
assembled directly: digest of the exclusive-c14n body, a SignedInfo built
from a fixed template, one ECDSA (or RSA) operation.  The output is ordinary
XML-DSig (enveloped, URI="", exclusive c14n, SHA-256) and is verified by
signxml like any other (tests check every receipt this way).  Signatures over
documents from outside (verification, hop signatures) stay with signxml.
"""
from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from lxml import etree

from hub.errors import ConfigError
from hub.keys import HubKeys

DS = "http://www.w3.org/2000/09/xmldsig#"
_EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
_ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
_SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
_METHODS = {"ec": "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256",
            "rsa": "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"}


def _d(tag: str) -> str:
    return f"{{{DS}}}{tag}"


def _signed_info(digest_b64: str, method: str) -> etree._Element:
    si = etree.Element(_d("SignedInfo"), nsmap={"ds": DS})
    etree.SubElement(si, _d("CanonicalizationMethod"), Algorithm=_EXC_C14N)
    etree.SubElement(si, _d("SignatureMethod"), Algorithm=method)
    ref = etree.SubElement(si, _d("Reference"), URI="")
    transforms = etree.SubElement(ref, _d("Transforms"))
    etree.SubElement(transforms, _d("Transform"), Algorithm=_ENVELOPED)
    etree.SubElement(transforms, _d("Transform"), Algorithm=_EXC_C14N)
    etree.SubElement(ref, _d("DigestMethod"), Algorithm=_SHA256)
    etree.SubElement(ref, _d("DigestValue")).text = digest_b64
    return si


def _sign(keys: HubKeys, data: bytes) -> tuple[str, bytes]:
    key = keys.key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        size = (key.curve.key_size + 7) // 8
        # XML-DSig wants the raw r || s, not DER.
        return _METHODS["ec"], r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if isinstance(key, rsa.RSAPrivateKey):
        return _METHODS["rsa"], key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    raise ConfigError(f"unsupported signing key type {type(key).__name__}")


def sign_root(root: etree._Element, keys: HubKeys) -> bytes:
    """Append an enveloped ds:Signature over ``root`` (which has none); return the bytes."""
    if root.get("Id") is not None or root.get("ID") is not None:
        raise ConfigError("sign_root signs URI=\"\": the root must carry no Id")
    body = etree.tostring(root, method="c14n", exclusive=True)
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
    method = _METHODS["ec"] if isinstance(keys.key, ec.EllipticCurvePrivateKey) else _METHODS["rsa"]
    signed_info = _signed_info(digest, method)
    _method, value = _sign(keys, etree.tostring(signed_info, method="c14n", exclusive=True))
    signature = etree.SubElement(root, _d("Signature"), nsmap={"ds": DS})
    signature.append(signed_info)
    etree.SubElement(signature, _d("SignatureValue")).text = base64.b64encode(value).decode("ascii")
    x509 = etree.SubElement(etree.SubElement(signature, _d("KeyInfo")), _d("X509Data"))
    etree.SubElement(x509, _d("X509Certificate")).text = base64.b64encode(keys.cert_der).decode("ascii")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
