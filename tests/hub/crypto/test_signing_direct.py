"""The hub's direct enveloped signatures (no signxml on the signing side) are
ordinary XML-DSig that signxml verifies."""
from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier
from signxml.exceptions import InvalidInput, InvalidSignature

from hub.crypto.dsig import sign_root
from hub.crypto.keys import HubKeys, load_hub_keys


def rsa_keys() -> HubKeys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "000.99.48.H63")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return HubKeys.from_objects(key, cert)


def body() -> etree._Element:
    root = etree.Element("{urn:test}Doc", nsmap={None: "urn:test"})
    etree.SubElement(root, "{urn:test}Field").text = "giá trị có dấu & <ký tự>"
    return root


@pytest.fixture(params=["ec", "rsa"])
def keys(request, dev_keys):
    if request.param == "ec":
        return load_hub_keys(dev_keys / "hub.key", dev_keys / "hub.pem")
    return rsa_keys()


def verify(xml: bytes, cert) -> bytes:
    result = XMLVerifier().verify(xml, x509_cert=cert,
                                  expect_config=SignatureConfiguration(location="./", expect_references=1))
    return etree.tostring(result.signed_xml)


def test_signxml_verifies_it(keys):
    xml = sign_root(body(), keys)
    signed = etree.fromstring(verify(xml, keys.cert))
    assert signed.findtext("{urn:test}Field") == "giá trị có dấu & <ký tự>"


def test_tampering_is_detected(keys):
    xml = sign_root(body(), keys)
    with pytest.raises(InvalidSignature):
        verify(xml.replace("giá trị".encode(), "giá trì".encode()), keys.cert)


def test_another_key_does_not_verify(keys, dev_keys):
    other = rsa_keys()
    with pytest.raises((InvalidSignature, InvalidInput)):
        verify(sign_root(body(), keys), other.cert)


def test_sender_signatures_made_directly_verify_with_signxml(dev_keys):
    from cryptography.hazmat.primitives import serialization

    from hub.edxml import samples
    from hub.crypto.signing import sign_envelope
    organ = "000.01.48.H63"
    key = serialization.load_pem_private_key((dev_keys / "orgs" / f"{organ}.key").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((dev_keys / "orgs" / f"{organ}.pem").read_bytes())
    raw = sign_envelope(samples.edoc(organ, ["000.31.48.H63"], 1), key, cert)
    XMLVerifier().verify(raw, x509_cert=cert, expect_config=SignatureConfiguration(
        location=".//", expect_references=1))


def test_big_attachments_are_hashed_exactly_like_plain_c14n(dev_keys):
    # The digest sets attachments over 1 MB aside from libxml2's c14n (memory);
    # the bytes hashed must be exactly the plain canonical form's.
    import hashlib

    from hub.crypto import dsig

    from hub.edxml import samples

    from hub.crypto import signing
    raw = samples.edoc("000.01.48.H63", ["000.31.48.H63"], 1, size=3_000_000)
    raw = raw.replace(b"<ContentTransferEncoded>", b"<ContentTransferEncoded>&amp;&lt;&gt;&#xD;", 1)
    root = signing.parse_xml(raw)
    expected = hashlib.sha256(etree.tostring(root, method="c14n", exclusive=True)).digest()
    h = hashlib.sha256()
    dsig._c14n_into(root, h)
    assert h.digest() == expected
    assert etree.tostring(root) == etree.tostring(signing.parse_xml(raw))  # restored
    # and a big signed envelope still verifies with signxml
    from cryptography.hazmat.primitives import serialization
    organ = "000.01.48.H63"
    key = serialization.load_pem_private_key((dev_keys / "orgs" / f"{organ}.key").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((dev_keys / "orgs" / f"{organ}.pem").read_bytes())
    signed = signing.sign_envelope(raw, key, cert)
    parser = etree.XMLParser(huge_tree=True)
    XMLVerifier().verify(signed, x509_cert=cert, parser=parser, expect_config=SignatureConfiguration(
        location=".//", expect_references=1))
