"""schemas/edxml.xsd: accepts every public sample and our own producer-shaped
fixtures, in any child order, and refuses malformed messages with
``schema_invalid`` and a precise path."""
from __future__ import annotations

import base64
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from lxml import etree

from hub.edxml import xmlsafe
from hub.errors import ValidationError

from support import FIXTURES, PUBLIC_SAMPLES, fixture, public_sample  # noqa: E402
XSD = Path(__file__).resolve().parents[2] / "schemas/edxml.xsd"
NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
DSIG = "http://www.w3.org/2000/09/xmldsig#"
MH = "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader"


def check(raw: bytes) -> None:
    xmlsafe.validate(xmlsafe.parse(raw, max_size=10_000_000))


#: The fixture each test message comes from (tests/fixtures/).
STATUS, EDOC = "status_inbox.edxml", "edoc_legacy.edxml"


def sample(name: str) -> bytes:
    return fixture(name)


def replace_once(raw: bytes, old: bytes, new: bytes) -> bytes:
    # A mutation that silently does nothing would make a rejection test pass
    # for the wrong reason.
    assert raw.count(old) == 1, old
    return raw.replace(old, new)


def small_edoc() -> bytes:
    """The fixture edoc with its attachment set to a tiny one."""
    tree = etree.fromstring(sample(EDOC))
    payload = tree.find(f"{{{NS}}}AttachmentEncoded/{{{NS}}}Attachment/{{{NS}}}ContentTransferEncoded")
    payload.text = base64.b64encode(b"tiny zip stand-in").decode()
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8")


def test_schema_loads_with_plain_lxml() -> None:
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    assert schema.validate(etree.parse(str(FIXTURES / STATUS)))


@pytest.mark.parametrize("name", PUBLIC_SAMPLES)
def test_every_public_sample_validates(name: str) -> None:
    check(public_sample(name))


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.edxml")))
def test_every_fixture_validates(name: str) -> None:
    check(fixture(name))


def _shuffle_children(root: etree._Element, rng: random.Random) -> None:
    for el in root.iter():
        if not isinstance(el.tag, str) or len(el) < 2 or el.tag.endswith("}Signature"):
            continue
        children = list(el)
        rng.shuffle(children)
        for child in children:  # re-appending moves each child, tail included
            el.append(child)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", [STATUS, EDOC])
def test_shuffled_children_still_validate(name: str, seed: int) -> None:
    # Given a sample whose element-only children are put in a random order
    root = etree.fromstring(sample(name))
    before = etree.tostring(root)
    _shuffle_children(root, random.Random(seed))
    shuffled = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    assert shuffled != before
    # Then it is still valid
    check(shuffled)


def test_whitespace_around_values_is_tolerated() -> None:
    raw = sample(STATUS)
    raw = replace_once(raw, b">01<", b">\r\n  01\t<")
    raw = replace_once(raw, b">2015/09/30<", b">  2015/09/30 <")
    raw = replace_once(raw, b">000.00.00.H41<", b"> 000.00.00.H41\n<")
    check(raw)


def test_empty_due_date_is_tolerated() -> None:
    check(replace_once(small_edoc(), b"<edXML:DueDate>2018/09/28</edXML:DueDate>",
                       b"<edXML:DueDate></edXML:DueDate>"))


def test_several_signatures_legacy_and_dsig() -> None:
    # A relaying hub appends its own ds:Signature after the producer's.
    dsig = (b'<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">'
            b"<ds:SignedInfo><ds:Anything/></ds:SignedInfo></ds:Signature>")
    check(replace_once(small_edoc(), b"</Signature>", b"</Signature>" + dsig + dsig))


def test_legacy_signature_content_is_not_inspected() -> None:
    check(replace_once(small_edoc(), b"<SignedInfo>", b"<SignedInfo><Whatever a='1'>x</Whatever>"))


def test_edoc_with_all_optional_parts() -> None:
    extra = (b"<edXML:ResponseFor><edXML:OrganId>000.00.00.H41</edXML:OrganId>"
             b"<edXML:Code>12/UBND</edXML:Code><edXML:DocumentId>x,1</edXML:DocumentId>"
             b"</edXML:ResponseFor><edXML:ResponseForTask><edXML:TaskCode>T1</edXML:TaskCode>"
             b"</edXML:ResponseForTask><edXML:ApplicationType>1</edXML:ApplicationType>")
    raw = replace_once(small_edoc(), b"<edXML:SteeringType>", extra + b"<edXML:SteeringType>")
    replacement = (b"<edXML:ReplacementInfoList><edXML:ReplacementInfo>"
                   b"<edXML:DocumentId>old,1</edXML:DocumentId><edXML:OrganIdList>"
                   b"<edXML:OrganId>000.00.00.H41</edXML:OrganId></edXML:OrganIdList>"
                   b"</edXML:ReplacementInfo></edXML:ReplacementInfoList>")
    raw = replace_once(raw, b"<edXML:Paper>", replacement + b"<edXML:Paper>")
    check(raw)


def _in_status(old: bytes, new: bytes) -> Callable[[], bytes]:
    return lambda: replace_once(sample(STATUS), old, new)


def _in_edoc(old: bytes, new: bytes) -> Callable[[], bytes]:
    return lambda: replace_once(small_edoc(), old, new)


# (id, build the malformed document, path of the first error)
MALFORMED: list[tuple[str, Callable[[], bytes], str]] = [
    ("unknown element", _in_status(b"<edXML:StatusCode>", b"<edXML:Urgent/><edXML:StatusCode>"),
     f"{MH}/Urgent"),
    ("unknown element in From", _in_status(b"<edXML:Fax>", b"<edXML:Mobile>1</edXML:Mobile><edXML:Fax>"),
     f"{MH}/From/Mobile"),
    ("bad StatusCode", _in_status(b">01<", b">07<"), f"{MH}/StatusCode"),
    ("StatusCode without leading zero", _in_status(b">01<", b">1<"), f"{MH}/StatusCode"),
    ("bad date pattern", _in_status(b">2015/09/30<", b">2015-09-30<"), f"{MH}/ResponseFor/PromulgationDate"),
    ("month 13", _in_status(b">2015/09/30<", b">2015/13/30<"), f"{MH}/ResponseFor/PromulgationDate"),
    ("bad timestamp", _in_status(b">2015/09/20 11:08:36<", b">2015/09/20 25:08:36<"), f"{MH}/Timestamp"),
    ("timestamp without time", _in_status(b">2015/09/20 11:08:36<", b">2015/09/20<"), f"{MH}/Timestamp"),
    ("text inside element-only content", _in_status(b"<edXML:From>", b"<edXML:From>hello"), f"{MH}/From"),
    ("wrong namespace on envelope",
     _in_status(b'xmlns:edXML="http://www.mic.gov.vn/TBT/QCVN_102_2016"',
                b'xmlns:edXML="http://www.mic.gov.vn/TBT/QCVN_102_2015"'),
     "/edXML/{http://www.mic.gov.vn/TBT/QCVN_102_2015}edXMLEnvelope"),
    ("unqualified element",
     _in_status(b"<edXML:StatusCode>01</edXML:StatusCode>", b'<StatusCode xmlns="">01</StatusCode>'),
     f"{MH}/StatusCode"),
    ("foreign element", _in_status(b"<edXML:StatusCode>", b'<x:Note xmlns:x="urn:x"/><edXML:StatusCode>'),
     f"{MH}/{{urn:x}}Note"),
    ("missing envelope", lambda: f'<edXML xmlns="{NS}"/>'.encode(), "/edXML"),
    ("two envelopes",
     _in_status(b"</edXML>", b'<edXMLEnvelope><edXMLHeader/></edXMLEnvelope></edXML>'),
     "/edXML/edXMLEnvelope[2]"),
    ("missing header", lambda: f'<edXML xmlns="{NS}"><edXMLEnvelope><edXMLBody/></edXMLEnvelope></edXML>'.encode(),
     "/edXML/edXMLEnvelope"),
    ("two headers", _in_status(b"</edXML:edXMLHeader>", b"</edXML:edXMLHeader><edXML:edXMLHeader/>"),
     "/edXML/edXMLEnvelope/edXMLHeader[2]"),
    ("empty OrganId", _in_status(b">000.00.00.H41<", b"><"), f"{MH}/From/OrganId"),
    ("OrganId with a space", _in_status(b">000.00.00.H41<", b">000.00 00.H41<"), f"{MH}/From/OrganId"),
    ("unknown attribute", _in_status(b"<edXML:MessageHeader>", b'<edXML:MessageHeader kind="x">'), MH),
    ("bad Priority", _in_edoc(b"<edXML:Priority>0<", b"<edXML:Priority>5<"), f"{MH}/OtherInfo/Priority"),
    ("bad SteeringType", _in_edoc(b"<edXML:SteeringType>1<", b"<edXML:SteeringType>0<"),
     f"{MH}/SteeringType"),
    ("bad Direction", _in_edoc(b">false<", b">no<"), f"{MH}/OtherInfo/Direction"),
    ("bad BussinessDocType", _in_edoc(b"<edXML:BussinessDocType>2<", b"<edXML:BussinessDocType>4<"),
     "/edXML/edXMLEnvelope/edXMLHeader/TraceHeaderList/Bussiness/BussinessDocType"),
    ("bad ReceiverType", _in_edoc(b"<edXML:ReceiverType>1<", b"<edXML:ReceiverType>2<"),
     ("/edXML/edXMLEnvelope/edXMLHeader/TraceHeaderList/Bussiness/BussinessDocumentInfo"
      "/ReceiverList/Receiver[2]/ReceiverType")),
    ("bad Paper", _in_edoc(b"<edXML:Paper>0<", b"<edXML:Paper>yes<"),
     "/edXML/edXMLEnvelope/edXMLHeader/TraceHeaderList/Bussiness/Paper"),
    ("PageAmount not a number", _in_edoc(b">22<", b">many<"), f"{MH}/OtherInfo/PageAmount"),
    ("attachment inside the envelope",
     _in_edoc(b"</edXML:edXMLBody>", b"</edXML:edXMLBody><edXML:Attachment/>"),
     "/edXML/edXMLEnvelope/Attachment"),
    ("unknown element among attachments",
     _in_edoc(b"<ContentType>application/zip</ContentType>",
              b"<ContentType>application/zip</ContentType><Size>9</Size>"),
     "/edXML/AttachmentEncoded/Attachment/Size"),
    ("attachment not base64", lambda: replace_once(
        small_edoc(), base64.b64encode(b"tiny zip stand-in"), b"not base64 at all!"),
     "/edXML/AttachmentEncoded/Attachment/ContentTransferEncoded"),
    ("xsi:type to escape the code list",
     _in_status(b"<edXML:StatusCode>01<",
                b'<edXML:StatusCode xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
                b' xmlns:xs="http://www.w3.org/2001/XMLSchema" xsi:type="xs:string">99<'),
     f"{MH}/StatusCode"),
    ("dsig element other than Signature",
     _in_edoc(b"</Signature>", f'</Signature><ds:Object xmlns:ds="{DSIG}"/>'.encode()),
     "/edXML/edXMLEnvelope/edXMLHeader/ds:Object"),
    ("Signature outside the header",
     _in_edoc(b"<edXML:edXMLManifest", b"<Signature/><edXML:edXMLManifest"),
     "/edXML/edXMLEnvelope/edXMLBody/Signature"),
]


@pytest.mark.parametrize("build, path", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_is_rejected(build: Callable[[], bytes], path: str) -> None:
    with pytest.raises(ValidationError) as info:
        check(build())
    err = info.value
    assert err.code == "schema_invalid"
    assert err.details["path"] == path
    assert isinstance(err.details["line"], int)
    assert 1 <= len(err.details["errors"]) <= 10
    assert err.details["errors"][0]["message"] == err.message
    assert NS not in err.message  # our own namespace is left out of messages


def test_error_list_is_capped_at_ten() -> None:
    raw = sample(STATUS)
    raw = replace_once(raw, b"<edXML:StatusCode>", b"<edXML:X/>" * 30 + b"<edXML:StatusCode>")
    with pytest.raises(ValidationError) as info:
        check(raw)
    assert len(info.value.details["errors"]) <= 10


def test_wrong_root_namespace_is_not_edxml() -> None:
    raw = replace_once(sample(STATUS), b'<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">',
                       b'<edXML xmlns="urn:not-qcvn">')
    with pytest.raises(ValidationError) as info:
        check(raw)
    assert info.value.code == "not_edxml"
