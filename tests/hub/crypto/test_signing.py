"""Sender signatures (policies, trust, wrapping attacks) and the relay hop signature."""
from __future__ import annotations

import base64
import copy
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from lxml import etree
from signxml import XMLSigner
from signxml.algorithms import CanonicalizationMethod, SignatureMethod
from support import big_edoc

from hub.crypto import signing
from hub.errors import ConfigError, ValidationError
from hub.crypto.keys import (
    HubKeys,
    TrustStore,
    init_dev_keys,
    issue_cert,
    load_hub_keys,
    make_ca,
)
from hub.crypto.signing import (
    DS,
    DS_SIGNATURE,
    NS,
    check_sender,
    parse_xml,
    sign_envelope,
    sign_hop,
    relayed_digest,
    verify_hop,
    verify_relayed,
    verify_sender,
)

HUB = "000.99.48.H63"
PEER = "000.99.49.H63"       # another district's hub, with its own CA
MAU_A = "000.01.48.H63"
VP_UBND = "000.31.48.H63"
SAMPLE_SENDER = "000.00.00.A80"  # From of tests/fixtures/edoc_legacy.edxml
NOW = dt.datetime(2024, 5, 2, 1, 30, 0, tzinfo=dt.UTC)
GOLDEN = Path(__file__).resolve().parents[2] / "golden"


# --- fixtures and helpers ---------------------------------------------------------

@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys")
    init_dev_keys(path, HUB, [MAU_A, VP_UBND, SAMPLE_SENDER])
    return path


@pytest.fixture(scope="module")
def peer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("peer-keys")
    init_dev_keys(path, PEER, [])
    return path


def _pair(keys_dir: Path, stem: str) -> HubKeys:
    return load_hub_keys(keys_dir / f"{stem}.key", keys_dir / f"{stem}.pem")


@pytest.fixture(scope="module")
def mau_a(keys_dir: Path) -> HubKeys:
    return _pair(keys_dir, f"orgs/{MAU_A}")


@pytest.fixture(scope="module")
def hub_keys(keys_dir: Path) -> HubKeys:
    return _pair(keys_dir, "hub")


@pytest.fixture(scope="module")
def peer_keys(peer_dir: Path) -> HubKeys:
    return _pair(peer_dir, "hub")


@pytest.fixture(scope="module")
def trust(keys_dir: Path, peer_dir: Path) -> TrustStore:
    return TrustStore.build(
        [(MAU_A, None, None), (VP_UBND, None, None), (SAMPLE_SENDER, None, None),
         (HUB, keys_dir / "hub.pem", None), (PEER, peer_dir / "hub.pem", None)],
        dev_keys_dir=keys_dir)


@pytest.fixture(scope="module")
def ca_trust(keys_dir: Path) -> TrustStore:
    """Trust by issuing CA instead of pins."""
    return TrustStore.build([(MAU_A, None, None), (VP_UBND, None, None)],
                            default_ca=keys_dir / "ca.pem")


def make_edoc(*, sender: str = MAU_A, document_id: str = f"{MAU_A},2024/05/01,125/UBND-VP",
              trace: bool = True, header_extra: str = "", attachment_size: int = 6000) -> bytes:
    """A small, hand-written QCVN 102 edoc (~10 KB with the default attachment)."""
    attachment = base64.b64encode(bytes(i % 251 for i in range(attachment_size))).decode()
    trace_list = f"""
      <TraceHeaderList>
        <TraceHeader>
          <OrganId>{sender}</OrganId>
          <Timestamp>2024/05/01 08:00:00</Timestamp>
        </TraceHeader>
      </TraceHeaderList>""" if trace else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<edXML xmlns="{NS}">
  <edXMLEnvelope>
    <edXMLHeader>
      <MessageHeader>
        <From>
          <OrganId>{sender}</OrganId>
          <OrganName>UBND thị trấn Mậu A</OrganName>
        </From>
        <To>
          <OrganId>{VP_UBND}</OrganId>
          <OrganName>Văn phòng HĐND và UBND huyện</OrganName>
        </To>
        <DocumentId>{document_id}</DocumentId>
        <Code>
          <CodeNumber>125</CodeNumber>
          <CodeNotation>UBND-VP</CodeNotation>
        </Code>
        <PromulgationInfo>
          <Place>Mậu A</Place>
          <PromulgationDate>2024/05/01</PromulgationDate>
        </PromulgationInfo>
        <Subject>V/v báo cáo tình hình thực hiện nhiệm vụ tháng 5</Subject>
      </MessageHeader>{trace_list}{header_extra}
    </edXMLHeader>
    <edXMLBody>
      <edXMLManifest version="1.0">
        <Reference>
          <ContentId>cid:1</ContentId>
          <ContentType>application/zip</ContentType>
          <AttachmentName>bao-cao.pdf</AttachmentName>
        </Reference>
      </edXMLManifest>
    </edXMLBody>
  </edXMLEnvelope>
  <AttachmentEncoded>
    <Attachment>
      <ContentId>cid:1</ContentId>
      <AttachmentName>bao-cao.pdf</AttachmentName>
      <ContentType>application/zip</ContentType>
      <ContentTransferEncoded>{attachment}</ContentTransferEncoded>
    </Attachment>
  </AttachmentEncoded>
</edXML>
""".encode()


def edit(raw: bytes, change: Callable[[etree._Element], object]) -> bytes:
    root = parse_xml(raw)
    change(root)
    return etree.tostring(root)


def q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def header_of(root: etree._Element) -> etree._Element:
    return root.find(f"{q('edXMLEnvelope')}/{q('edXMLHeader')}")


def verify(raw: bytes, trust: TrustStore, policy: str = "required",
           sender: str = MAU_A) -> signing.SignatureCheck:
    return verify_sender(parse_xml(raw), sender, trust, policy)


def refusal(raw: bytes, trust: TrustStore, policy: str = "required", sender: str = MAU_A,
            code: str = "signature_invalid") -> str:
    with pytest.raises(ValidationError) as caught:
        verify(raw, trust, policy, sender)
    assert caught.value.code == code, caught.value.message
    return caught.value.details["reason"]


@pytest.fixture(scope="module")
def signed(mau_a: HubKeys) -> bytes:
    return sign_envelope(make_edoc(), mau_a.key, mau_a.cert)


# --- the sender's signature -----------------------------------------------------

def test_signed_envelope_has_one_enveloped_whole_document_signature(signed: bytes) -> None:
    root = parse_xml(signed)
    header = header_of(root)
    assert header[-1].tag == DS_SIGNATURE
    refs = header[-1].findall(f"{{{DS}}}SignedInfo/{{{DS}}}Reference")
    assert [r.get("URI") for r in refs] == [""]
    transforms = [t.get("Algorithm") for t in refs[0].iter(f"{{{DS}}}Transform")]
    assert transforms == ["http://www.w3.org/2000/09/xmldsig#enveloped-signature",
                          "http://www.w3.org/2001/10/xml-exc-c14n#"]
    assert header[-1].find(f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate") is not None


def test_valid_signature_is_accepted(signed: bytes, trust: TrustStore) -> None:
    check = verify(signed, trust)
    assert check.result == "valid"
    assert f"CN={MAU_A}" in check.signer
    assert "sha256:" in check.detail


@pytest.mark.parametrize("kind, policy, expected", [
    ("signed", "required", "valid"),
    ("signed", "verify_if_present", "valid"),
    ("signed", "record_only", "recorded"),
    ("unsigned", "required", "signature_required"),
    ("unsigned", "verify_if_present", "unsigned"),
    ("unsigned", "record_only", "unsigned"),
    ("tampered", "required", "signature_invalid"),
    ("tampered", "verify_if_present", "signature_invalid"),
    ("tampered", "record_only", "recorded"),
    ("legacy", "required", "signature_required"),
    ("legacy", "verify_if_present", "unsigned"),
    ("legacy", "record_only", "recorded"),
])
def test_policy_matrix(kind: str, policy: str, expected: str, signed: bytes,
                       trust: TrustStore) -> None:
    raw = {
        "signed": signed,
        "unsigned": make_edoc(),
        "tampered": signed.replace("tháng 5".encode(), "tháng 6".encode()),
        "legacy": make_edoc(header_extra="<Signature><SignatureValue>AAAA</SignatureValue>"
                                         "</Signature>"),
    }[kind]
    if expected.startswith("signature_"):
        refusal(raw, trust, policy, code=expected)
    else:
        assert verify(raw, trust, policy).result == expected


@pytest.mark.parametrize("policy, expected", [
    ("record_only", "recorded"), ("verify_if_present", "unsigned"), ("required", None)])
def test_legacy_qcvn_signature(policy: str, expected: str | None,
                                                  trust: TrustStore) -> None:
    root = parse_xml(big_edoc())
    if expected is None:
        with pytest.raises(ValidationError) as caught:
            verify_sender(root, SAMPLE_SENDER, trust, policy)
        assert caught.value.code == "signature_required"
        assert "legacy" in caught.value.details["reason"]
        return
    check = verify_sender(root, SAMPLE_SENDER, trust, policy)
    assert check.result == expected
    if policy == "verify_if_present":
        assert check.detail == "legacy signature element not verified"


def test_producer_edoc_signed_with_xmldsig_verifies(keys_dir: Path, trust: TrustStore) -> None:
    # Given a producer-shaped 360 KB edoc (CRLF, two prefixes for one namespace,
    # a legacy QCVN Signature) signed by its sender's system with XML-DSig.
    sender = _pair(keys_dir, f"orgs/{SAMPLE_SENDER}")
    raw = sign_envelope(big_edoc(), sender.key, sender.cert)
    assert verify(raw, trust, sender=SAMPLE_SENDER).result == "valid"


def test_editing_the_message_header_breaks_the_signature(signed: bytes, trust: TrustStore) -> None:
    def change(root: etree._Element) -> None:
        root.find(f".//{q('To')}/{q('OrganId')}").text = "000.02.48.H63"
    assert "Digest mismatch" in refusal(edit(signed, change), trust)


def test_editing_an_attachment_breaks_the_signature(signed: bytes, trust: TrustStore) -> None:
    def change(root: etree._Element) -> None:
        el = root.find(f".//{q('ContentTransferEncoded')}")
        el.text = base64.b64encode(b"another file").decode()
    assert "Digest mismatch" in refusal(edit(signed, change), trust)


def test_a_real_certificate_of_another_organ_is_refused(keys_dir: Path, trust: TrustStore,
                                                        ca_trust: TrustStore) -> None:
    # Given VP UBND's genuine key and certificate signing an envelope From Mậu A.
    vp = _pair(keys_dir, f"orgs/{VP_UBND}")
    raw = sign_envelope(make_edoc(), vp.key, vp.cert)
    assert "Signature verification failed" in refusal(raw, trust)   # pinned: wrong key
    assert "does not name" in refusal(raw, ca_trust)                # by CA: wrong name


def test_the_signed_from_must_be_the_sender(keys_dir: Path) -> None:
    # Given a trust store that (wrongly) pins VP UBND's certificate for Mậu A,
    # a valid signature over an envelope From VP UBND still is not Mậu A's.
    vp = _pair(keys_dir, f"orgs/{VP_UBND}")
    raw = sign_envelope(make_edoc(sender=VP_UBND), vp.key, vp.cert)
    misconfigured = TrustStore.build([(MAU_A, keys_dir / "orgs" / f"{VP_UBND}.pem", None)])
    assert "signed From/OrganId" in refusal(raw, misconfigured, sender=MAU_A)


def test_trust_by_ca_accepts_the_organs_own_certificate(signed: bytes,
                                                         ca_trust: TrustStore) -> None:
    assert verify(signed, ca_trust).result == "valid"


def test_untrusted_ca_and_unknown_sender_are_refused(signed: bytes, trust: TrustStore,
                                                     ca_trust: TrustStore) -> None:
    ca_key, ca = make_ca("a rogue CA")
    key, cert = issue_cert(ca_key, ca, MAU_A)
    rogue = sign_envelope(make_edoc(), key, cert)
    assert "does not chain" in refusal(rogue, ca_trust)
    assert "Signature verification failed" in refusal(rogue, trust)
    # a ds:Signature from a sender the trust store does not know
    assert "no certificate or CA" in refusal(signed, TrustStore({}))
    assert verify(make_edoc(), TrustStore({}), "verify_if_present").result == "unsigned"


def test_expired_certificate_is_refused_but_audits_at_signing_time(keys_dir: Path) -> None:
    ca_key = serialization.load_pem_private_key((keys_dir / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((keys_dir / "ca.pem").read_bytes())
    ended = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    key, cert = issue_cert(ca_key, ca, MAU_A, not_before=ended - dt.timedelta(hours=10),  # type: ignore[arg-type]
                           not_after=ended)
    raw = sign_envelope(make_edoc(), key, cert)
    by_ca = TrustStore.build([(MAU_A, None, keys_dir / "ca.pem")])
    (keys_dir / "expired.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pinned = TrustStore.build([(MAU_A, keys_dir / "expired.pem", None)])
    assert "not valid at" in refusal(raw, by_ca)
    assert "not valid at" in refusal(raw, pinned)
    then = ended - dt.timedelta(hours=1)
    assert check_sender(parse_xml(raw), MAU_A, by_ca, at=then).result == "valid"
    assert check_sender(parse_xml(raw), MAU_A, pinned, at=then).result == "valid"


def test_rsa_signatures_verify_too(keys_dir: Path) -> None:
    # Real Vietnamese organisation certificates are mostly RSA.
    ca_key = serialization.load_pem_private_key((keys_dir / "ca.key").read_bytes(), None)
    ca = x509.load_pem_x509_certificate((keys_dir / "ca.pem").read_bytes())
    key, cert = issue_cert(ca_key, ca, MAU_A,  # type: ignore[arg-type]
                           key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    raw = sign_envelope(make_edoc(), key, cert)
    assert b"rsa-sha256" in raw
    trust = TrustStore.build([(MAU_A, None, keys_dir / "ca.pem")])
    assert verify(raw, trust).result == "valid"


# --- signature wrapping and placement ------------------------------------------------

def test_reference_to_a_part_of_the_document_is_refused(mau_a: HubKeys, trust: TrustStore) -> None:
    # Given a cryptographically valid signature that covers only MessageHeader
    # (an attacker could then swap the attachments), it is refused.
    root = parse_xml(make_edoc())
    header = header_of(root)
    header.find(q("MessageHeader")).set("Id", "mh")
    etree.SubElement(header, DS_SIGNATURE, Id="placeholder", nsmap={"ds": DS})
    partial = XMLSigner(signature_algorithm=SignatureMethod.ECDSA_SHA256,
                        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0
                        ).sign(root, key=mau_a.key, cert=[mau_a.cert], reference_uri="mh")
    assert "only \"\"" in refusal(etree.tostring(partial), trust)


def test_a_second_sender_signature_is_refused(signed: bytes, keys_dir: Path,
                                              trust: TrustStore) -> None:
    vp = _pair(keys_dir, f"orgs/{VP_UBND}")
    twice = sign_envelope(signed, vp.key, vp.cert)
    assert "2 sender ds:Signature" in refusal(twice, trust)


@pytest.mark.parametrize("where", ["wrapper in header", "body", "attachment", "root"])
def test_a_signature_moved_elsewhere_is_refused(where: str, signed: bytes,
                                                trust: TrustStore) -> None:
    def move(root: etree._Element) -> None:
        sig = header_of(root).find(DS_SIGNATURE)
        target = {"wrapper in header": lambda: etree.SubElement(header_of(root), q("Wrapper")),
                  "body": lambda: root.find(f".//{q('edXMLBody')}"),
                  "attachment": lambda: root.find(f".//{q('Attachment')}"),
                  "root": lambda: root}[where]()
        target.append(sig)
    assert "outside edXMLHeader" in refusal(edit(signed, move), trust, "verify_if_present")


def test_a_second_envelope_or_header_is_refused(signed: bytes, trust: TrustStore) -> None:
    def second_envelope(root: etree._Element) -> None:
        evil = copy.deepcopy(root.find(q("edXMLEnvelope")))
        evil.find(f".//{q('Subject')}").text = "forged"
        root.insert(0, evil)

    def second_header(root: etree._Element) -> None:
        header = header_of(root)
        header.addnext(etree.Element(q("edXMLHeader")))
    assert "edXMLEnvelope" in refusal(edit(signed, second_envelope), trust)
    assert "edXMLHeader" in refusal(edit(signed, second_header), trust)


def test_duplicated_id_attributes_are_refused(mau_a: HubKeys, trust: TrustStore) -> None:
    # Signed by the genuine key, so only the Id rule can refuse it.
    raw = make_edoc().replace(b"<Code>", b'<Code Id="x">').replace(b"<Subject>", b'<Subject ID="x">')
    assert "duplicate Id" in refusal(sign_envelope(raw, mau_a.key, mau_a.cert), trust)


def test_unexpected_transforms_are_refused(signed: bytes, trust: TrustStore) -> None:
    def add_xpath(root: etree._Element) -> None:
        transforms = root.find(f".//{{{DS}}}Transforms")
        etree.SubElement(transforms, f"{{{DS}}}Transform",
                         Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116")
    assert "unexpected transforms" in refusal(edit(signed, add_xpath), trust)


def test_what_is_signed_must_be_this_envelope(signed: bytes) -> None:
    # The URI="" rule makes this hold already; the check guards against a
    # future signxml returning a different node set.
    other = parse_xml(make_edoc(document_id=f"{MAU_A},2024/05/01,999/UBND-VP"))
    with pytest.raises(signing.SignatureRefused, match="From/DocumentId"):
        signing._same_document(other, parse_xml(signed))
    signing._same_document(parse_xml(signed), parse_xml(signed))


# --- the hop signature ----------------------------------------------------------------

def test_sign_hop_appends_trace_and_signature_and_verifies(signed: bytes, hub_keys: HubKeys,
                                                          trust: TrustStore) -> None:
    wire = sign_hop(signed, hub_id=HUB, keys=hub_keys, now=NOW)
    header = header_of(parse_xml(wire))
    traces = header.findall(f"{q('TraceHeaderList')}/{q('TraceHeader')}")
    assert [t.findtext(q("OrganId")) for t in traces] == [MAU_A, HUB]
    assert traces[-1].findtext(q("Timestamp")) == "2024/05/02 08:30:00"  # Vietnam time
    sigs = header.findall(DS_SIGNATURE)
    assert [s.get("Id") for s in sigs] == ["lienthong-hop-2", None]      # newest first
    assert verify_hop(wire, hub_keys.cert) is True
    check = verify(wire, trust)
    assert check.result == "valid" and f"hop by {HUB} verified" in check.detail


def test_two_hops_unwind_to_the_senders_signature(signed: bytes, hub_keys: HubKeys,
                                                  peer_keys: HubKeys, trust: TrustStore) -> None:
    wire = sign_hop(sign_hop(signed, hub_id=HUB, keys=hub_keys, now=NOW),
                    hub_id=PEER, keys=peer_keys, now=NOW)
    assert verify_hop(wire, peer_keys.cert)
    check = verify(wire, trust)
    assert check.result == "valid"
    assert f"hop by {PEER} verified" in check.detail and f"hop by {HUB} verified" in check.detail


def test_hop_creates_a_trace_list_when_missing(mau_a: HubKeys, hub_keys: HubKeys,
                                               trust: TrustStore) -> None:
    raw = sign_envelope(make_edoc(trace=False), mau_a.key, mau_a.cert)
    wire = sign_hop(raw, hub_id=HUB, keys=hub_keys, now=NOW)
    header = header_of(parse_xml(wire))
    assert [etree.QName(c).localname for c in header] == [
        "MessageHeader", "TraceHeaderList", "Signature", "Signature"]
    assert header[2].get("Id") == "lienthong-hop-1-newlist"
    assert verify_hop(wire, hub_keys.cert)
    assert verify(wire, trust).result == "valid"
    # an unsigned document relayed: the hop still verifies, the sender is unsigned
    bare = sign_hop(make_edoc(trace=False), hub_id=HUB, keys=hub_keys, now=NOW)
    assert verify(bare, trust, "verify_if_present").result == "unsigned"


def test_relayed_digest_is_the_senders_document_whatever_the_hops(
        signed: bytes, hub_keys: HubKeys, peer_keys: HubKeys) -> None:
    # Given: one document hop-signed for two deliveries, at two times, and relayed twice
    first = sign_hop(signed, hub_id=HUB, keys=hub_keys, now=NOW)
    second = sign_hop(signed, hub_id=HUB, keys=hub_keys, now=NOW + dt.timedelta(minutes=5))
    twice = sign_hop(first, hub_id=PEER, keys=peer_keys, now=NOW)
    assert len({first, second, twice, signed}) == 4
    # Then: one digest, the original's; verify_relayed gives it too
    digests = {relayed_digest(raw) for raw in (first, second, twice, signed)}
    assert digests == {relayed_digest(signed)}
    assert verify_relayed(second, hub_keys.cert) == relayed_digest(signed)
    # and what its sender made, changed anywhere, is another document
    other = sign_hop(signed.replace("tháng 5".encode(), "tháng 9".encode()), hub_id=HUB,
                     keys=hub_keys, now=NOW)
    assert relayed_digest(other) != relayed_digest(signed)
    unsigned = parse_xml(signed)
    header_of(unsigned).remove(header_of(unsigned).find(DS_SIGNATURE))
    assert relayed_digest(etree.tostring(unsigned)) != relayed_digest(signed)


def test_verify_hop_refuses_tampering_and_the_wrong_hub(signed: bytes, hub_keys: HubKeys,
                                                        peer_keys: HubKeys, trust: TrustStore) -> None:
    wire = sign_hop(signed, hub_id=HUB, keys=hub_keys, now=NOW)
    tampered = wire.replace("tháng 5".encode(), "tháng 9".encode())
    for raw, cert in [(tampered, hub_keys.cert), (wire, peer_keys.cert)]:
        with pytest.raises(ValidationError) as caught:
            verify_hop(raw, cert)
        assert caught.value.code == "signature_invalid"
    assert "Digest mismatch" in refusal(tampered, trust)
    with pytest.raises(ValidationError, match="no hop signature"):
        verify_hop(signed, hub_keys.cert)


def test_a_forged_hop_of_a_known_hub_is_refused(signed: bytes, trust: TrustStore) -> None:
    # Given a "hop" that claims to be PEER's but is signed by a stranger's key.
    ca_key, ca = make_ca("forger")
    key, cert = issue_cert(ca_key, ca, PEER)
    forger = HubKeys.from_objects(key, cert)
    wire = sign_hop(signed, hub_id=PEER, keys=forger, now=NOW)
    assert "Signature verification failed" in refusal(wire, trust)


def test_a_hop_by_an_unknown_hub_is_ignored_with_its_reason(signed: bytes,
                                                            trust: TrustStore) -> None:
    ca_key, ca = make_ca("far away")
    key, cert = issue_cert(ca_key, ca, "000.00.00.H01")
    wire = sign_hop(signed, hub_id="000.00.00.H01", keys=HubKeys.from_objects(key, cert), now=NOW)
    check = verify(wire, trust)
    assert check.result == "valid"
    assert "hop by 000.00.00.H01 not verified here" in check.detail


def test_a_hop_id_that_does_not_match_the_traces_is_refused(signed: bytes, hub_keys: HubKeys,
                                                            trust: TrustStore) -> None:
    wire = sign_hop(signed, hub_id=HUB, keys=hub_keys, now=NOW)
    relabelled = wire.replace(b'Id="lienthong-hop-2"', b'Id="lienthong-hop-1"')
    assert "does not match" in refusal(relabelled, trust)


def test_the_original_bytes_are_untouched_by_unwinding(signed: bytes, hub_keys: HubKeys,
                                                       trust: TrustStore) -> None:
    root = parse_xml(sign_hop(signed, hub_id=HUB, keys=hub_keys, now=NOW))
    before = etree.tostring(root)
    verify_sender(root, MAU_A, trust, "required")
    assert etree.tostring(root) == before


def test_signing_refuses_inputs_signxml_would_mishandle(signed: bytes, hub_keys: HubKeys) -> None:
    # A sender signature carrying signxml's placeholder marker, and a root Id
    # (signxml would then reference "#id"): clear refusals, never a crash mid-delivery.
    marked = signed.replace(b"<ds:Signature ", b'<ds:Signature Id="placeholder" ', 1)
    with pytest.raises(ValidationError, match="placeholder"):
        sign_hop(marked, hub_id=HUB, keys=hub_keys, now=NOW)
    with pytest.raises(ValidationError, match="root element carries an Id"):
        sign_hop(make_edoc().replace(b"<edXML ", b'<edXML Id="r" '), hub_id=HUB,
                 keys=hub_keys, now=NOW)


def test_bad_policy_and_non_edxml_input(trust: TrustStore) -> None:
    with pytest.raises(ConfigError):
        verify(make_edoc(), trust, "sometimes")
    check = check_sender(parse_xml(b"<other/>"), MAU_A, trust)
    assert check.result == "invalid" and "not edXML" in check.detail


@pytest.mark.parametrize("name", ["hop_trace_append", "hop_trace_new_list"])
def test_hop_wire_form_golden(name: str, hub_keys: HubKeys) -> None:
    # The wire form minus the (randomised) ECDSA signature, in exclusive c14n.
    raw = (GOLDEN / f"{name}.in").read_bytes()
    root = parse_xml(sign_hop(raw, hub_id=HUB, keys=hub_keys, now=NOW))
    for sig in list(root.iter(DS_SIGNATURE)):
        sig.getparent().remove(sig)
    got = etree.tostring(root, method="c14n", exclusive=True)
    ref = GOLDEN / f"{name}.ref"
    if os.environ.get("UPDATE_GOLDEN"):
        ref.write_bytes(got)
    assert got == ref.read_bytes()
