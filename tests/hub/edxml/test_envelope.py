"""hub.edxml: fields lifted from the samples, every semantic refusal with its
code/path/line, the OrganId policy, and status messages the hub builds."""
from __future__ import annotations

import base64
import time
from datetime import UTC, date, datetime

import pytest
from lxml import etree

from hub.edxml import envelope as edxml

from hub.edxml import xmlsafe
from hub.edxml.envelope import Business, Envelope, Receiver, ResponseFor, Trace
from hub.errors import ValidationError

from support import SAMPLES, public_sample  # noqa: E402
NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
MH = "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader"
VPCP_DOC = "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT"


def accept(raw: bytes, *, strict: bool = False) -> Envelope:
    """The accept path's three stages, as the hub runs them."""
    tree = xmlsafe.parse(raw, max_size=10_000_000)
    xmlsafe.validate(tree)
    return edxml.extract(tree, strict=strict)


def sample(name: str) -> bytes:
    return public_sample(name)


def edit(raw: bytes, old: str, new: str) -> bytes:
    old_b, new_b = old.encode(), new.encode()
    assert raw.count(old_b) == 1, old
    return raw.replace(old_b, new_b)


def small_edoc(name: str = "edoc_update.edxml") -> bytes:
    """A sample edoc with its 360 KB attachment swapped for 2 KB (10 KB total)."""
    root = etree.fromstring(sample(name))
    payload = root.find(f"{{{NS}}}AttachmentEncoded/{{{NS}}}Attachment/{{{NS}}}ContentTransferEncoded")
    payload.text = base64.b64encode(bytes(range(256)) * 8).decode()
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def line_of(raw: bytes, needle: str) -> int:
    return raw[:raw.index(needle.encode())].count(b"\n") + 1


def rejected(raw: bytes, code: str, path: str, line: int | None = None, *,
             strict: bool = False) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        accept(raw, strict=strict)
    err = info.value
    assert (err.code, err.details["path"]) == (code, path), err.message
    if line is not None:
        assert err.details["line"] == line
    return err


# ---------------------------------------------------------------- samples

STATUS_SAMPLES = {
    "status.edxml": "01",
    "status_inbox_01.edxml": "01",
    "status_rejection_02.edxml": "02",
    "status_acceptance_03.edxml": "03",
    "status_assignment_04.edxml": "04",
    "status_processing_05.edxml": "05",
    "status_finish_06.edxml": "06",
}


def test_every_sample_is_covered() -> None:
    public_sample("status.edxml")
    names = {p.name for p in SAMPLES.glob("*.edxml")}
    assert names == set(STATUS_SAMPLES) | {"edoc_new.edxml", "edoc_update.edxml"}


@pytest.mark.parametrize("name, code", STATUS_SAMPLES.items())
def test_status_samples(name: str, code: str) -> None:
    env = accept(sample(name), strict=True)
    assert (env.kind, env.sender, env.recipients, env.status_code) == ("status", "000.00.00.H41", [], code)
    assert env.sender_name == "UBND Tỉnh Nghệ An"
    assert [(r.organ_id, r.document_id, r.code) for r in env.response_for] == [
        ("000.00.00.G22", VPCP_DOC, "7816/VPCP-TTĐT")]
    assert env.description
    assert env.timestamp is not None
    assert (env.signatures, env.attachments, env.traces) == ([], 0, [])


def test_status_fields_in_detail() -> None:
    env = accept(sample("status.edxml"))
    assert env.timestamp == datetime(2018, 9, 28, 17, 25, 11)
    assert env.response_for == [ResponseFor("000.00.00.G22", "7816/VPCP-TTĐT", VPCP_DOC, date(2018, 9, 28))]
    assert env.description.startswith("Văn thư - Phòng Văn thư - Lưu trữ: Đã đến")
    assert env.document_id is None and env.subject is None


def test_edoc_update() -> None:
    env = accept(sample("edoc_update.edxml"), strict=True)
    assert env == Envelope(
        kind="edoc", sender="000.00.00.G22", sender_name="Văn phòng Chính phủ",
        recipients=["000.00.00.H41", "000.00.00.H14", "000.00.00.G17"],
        document_id=VPCP_DOC, code="7816/VPCP-TTĐT",
        subject="V/v kết nối, liên thông phần mềm quản lý văn bản",
        promulgation_date=date(2018, 9, 28), due_date=date(2018, 9, 28),
        business_doc_type=2, status_code=None, description=None, timestamp=None,
        response_for=[], priority=0, steering_type=1,
        traces=[Trace("000.00.00.G22", datetime(2018, 9, 28, 0, 0, 0))],
        signatures=["legacy"], attachments=1,
        business=Business(2, "000.00.00.G22,2014/02/30,7806/VPCP-TTĐT", "Cập nhật văn bản điện tử",
                          [Receiver("000.00.00.H41", False), Receiver("000.00.00.H14", True)], []))


def test_edoc_new_lenient() -> None:
    env = accept(sample("edoc_new.edxml"), strict=False)
    assert (env.kind, env.sender, env.recipients) == ("edoc", "000.00.00.A80", ["28.22.H17"])
    assert (env.business_doc_type, env.code, env.promulgation_date) == (0, "74fass22/VPCP-TTĐT", date(2019, 1, 16))
    assert env.signatures == ["legacy"] and env.attachments == 1


def test_edoc_new_strict_refuses_short_organ_id() -> None:
    err = rejected(sample("edoc_new.edxml"), "bad_organ_id", f"{MH}/To/OrganId", 18, strict=True)
    assert "28.22.H17" in err.message


@pytest.mark.parametrize("organ_id, strict, lenient", [
    ("000.00.00.H41", True, True),
    ("001.00.10.H47", True, True),
    ("000.00.00.G22", True, True),
    ("28.22.H17", False, True),
    ("000.00.00.h41", False, True),
    ("H17", False, False),             # one part only
    ("1.2.3.4.5.6", False, False),     # six parts
    ("000.00.00.H41\n", False, False),
    ("000.00.00.H4١", False, False),   # Arabic-Indic digit: \d would take it
    ("000..00.H41", False, False),
    ("000-00-00-H41", False, False),
    ("", False, False),
])
def test_valid_organ_id(organ_id: str, strict: bool, lenient: bool) -> None:
    assert edxml.valid_organ_id(organ_id, strict=True) is strict
    assert edxml.valid_organ_id(organ_id, strict=False) is lenient


def test_dsig_and_legacy_signatures_are_listed_in_order() -> None:
    dsig = '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo/></ds:Signature>'
    env = accept(edit(small_edoc(), "</Signature>", "</Signature>" + dsig + dsig))
    assert env.signatures == ["legacy", "dsig", "dsig"]


def test_values_are_trimmed() -> None:
    raw = edit(sample("status_inbox_01.edxml"), ">01<", ">\r\n 01 <")
    raw = edit(raw, ">000.00.00.H41<", ">  000.00.00.H41\t<")
    env = accept(raw, strict=True)
    assert (env.status_code, env.sender) == ("01", "000.00.00.H41")


def test_empty_due_date_is_none() -> None:
    env = accept(edit(small_edoc(), "<edXML:DueDate>2018/09/28<", "<edXML:DueDate> <"))
    assert env.due_date is None


# ---------------------------------------------------------------- semantic errors

STATUS = "status_inbox_01.edxml"
FROM_ORGAN = "<edXML:OrganId>000.00.00.H41</edXML:OrganId>\r\n\t\t\t<edXML:OrganName>"


def test_missing_message_header() -> None:
    raw = f'<edXML xmlns="{NS}"><edXMLEnvelope><edXMLHeader><TraceHeaderList/></edXMLHeader></edXMLEnvelope></edXML>'
    rejected(raw.encode(), "missing_element", "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader", 1)


def test_two_message_headers() -> None:
    raw = edit(sample(STATUS), "</edXML:edXMLHeader>", "<edXML:MessageHeader/></edXML:edXMLHeader>")
    rejected(raw, "duplicate_element", "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader[2]",
             line_of(raw, "<edXML:MessageHeader/>"))


def test_missing_from() -> None:
    raw = sample(STATUS).replace(b"<edXML:From>", b"<edXML:To>").replace(b"</edXML:From>", b"</edXML:To>")
    rejected(raw, "missing_element", f"{MH}/From", 5)


def test_two_froms() -> None:
    raw = edit(sample(STATUS), "<edXML:StatusCode>", "<edXML:From/><edXML:StatusCode>")
    rejected(raw, "duplicate_element", f"{MH}/From[2]", 28)


def test_from_without_organ_id() -> None:
    rejected(edit(sample(STATUS), FROM_ORGAN, "<edXML:OrganName>"), "missing_element", f"{MH}/From/OrganId", 6)


def test_from_with_two_organ_ids() -> None:
    raw = edit(sample(STATUS), FROM_ORGAN, FROM_ORGAN.replace("<edXML:OrganName>", "") * 2 + "<edXML:OrganName>")
    rejected(raw, "duplicate_element", f"{MH}/From/OrganId[2]")


def test_edoc_without_document_id() -> None:
    raw = edit(small_edoc(), f"<edXML:DocumentId>{VPCP_DOC}</edXML:DocumentId>\n        <edXML:Code>", "<edXML:Code>")
    rejected(raw, "missing_element", f"{MH}/DocumentId")


def test_edoc_with_two_document_ids() -> None:
    doc = f"<edXML:DocumentId>{VPCP_DOC}</edXML:DocumentId>"
    raw = edit(small_edoc(), doc + "\n        <edXML:Code>", doc + doc + "<edXML:Code>")
    rejected(raw, "duplicate_element", f"{MH}/DocumentId[2]")


def test_edoc_without_recipients() -> None:
    root = etree.fromstring(small_edoc())
    for to in root.iter(f"{{{NS}}}To"):
        to.getparent().remove(to)
    raw = etree.tostring(root)
    rejected(raw, "no_recipients", f"{MH}/To", line_of(raw, "<edXML:MessageHeader>"))


def test_edoc_duplicate_recipient() -> None:
    raw = edit(small_edoc(), "<edXML:OrganId>000.00.00.G17<", "<edXML:OrganId>000.00.00.H41<")
    err = rejected(raw, "duplicate_recipient", f"{MH}/To[3]/OrganId",
                   line_of(raw, "<edXML:OrganId>000.00.00.H41</edXML:OrganId>\n          <edXML:OrganizationInCharge>Sở"))
    assert "000.00.00.H41" in err.message


def test_edoc_duplicate_recipient_despite_whitespace() -> None:
    raw = edit(small_edoc(), "<edXML:OrganId>000.00.00.G17<", "<edXML:OrganId> 000.00.00.H41\n<")
    rejected(raw, "duplicate_recipient", f"{MH}/To[3]/OrganId")


def test_edoc_without_subject() -> None:
    raw = small_edoc()
    start, end = raw.index(b"<edXML:Subject>"), raw.index(b"</edXML:Subject>") + len(b"</edXML:Subject>")
    rejected(raw[:start] + raw[end:], "missing_element", f"{MH}/Subject")


def test_edoc_with_blank_subject() -> None:
    raw = small_edoc()
    start, end = raw.index(b"<edXML:Subject>"), raw.index(b"</edXML:Subject>")
    rejected(raw[:start] + b"<edXML:Subject>  " + raw[end:], "missing_element", f"{MH}/Subject")


def test_status_without_response_for() -> None:
    raw = sample(STATUS)
    start = raw.index(b"<edXML:ResponseFor>")
    end = raw.index(b"</edXML:ResponseFor>") + len(b"</edXML:ResponseFor>")
    rejected(raw[:start] + raw[end:], "missing_element", f"{MH}/ResponseFor", 5)


def test_status_with_two_response_fors() -> None:
    raw = edit(sample(STATUS), "<edXML:StatusCode>",
               "<edXML:ResponseFor><edXML:OrganId>000.00.00.G22</edXML:OrganId>"
               "<edXML:DocumentId>x</edXML:DocumentId></edXML:ResponseFor><edXML:StatusCode>")
    rejected(raw, "duplicate_element", f"{MH}/ResponseFor[2]", 28)


def test_status_response_for_without_document_id() -> None:
    raw = edit(sample(STATUS), f"<edXML:DocumentId>{VPCP_DOC}</edXML:DocumentId>", "")
    rejected(raw, "missing_element", f"{MH}/ResponseFor/DocumentId", 16)


def test_status_response_for_without_organ_id() -> None:
    raw = edit(sample(STATUS), "<edXML:OrganId>000.00.00.G22</edXML:OrganId>", "")
    rejected(raw, "missing_element", f"{MH}/ResponseFor/OrganId", 16)


def test_status_without_timestamp() -> None:
    raw = edit(sample(STATUS), "<edXML:Timestamp>2015/09/20 11:08:36</edXML:Timestamp>", "")
    rejected(raw, "missing_element", f"{MH}/Timestamp", 5)


def test_status_with_two_status_codes() -> None:
    raw = edit(sample(STATUS), "<edXML:StatusCode>01</edXML:StatusCode>",
               "<edXML:StatusCode>01</edXML:StatusCode><edXML:StatusCode>02</edXML:StatusCode>")
    rejected(raw, "duplicate_element", f"{MH}/StatusCode[2]")


def test_status_with_recipient() -> None:
    raw = edit(sample(STATUS), "<edXML:StatusCode>",
               "<edXML:To><edXML:OrganId>000.00.00.G22</edXML:OrganId></edXML:To><edXML:StatusCode>")
    rejected(raw, "unexpected_element", f"{MH}/To", 28)


@pytest.mark.parametrize("old, new, path", [
    (">2019/01/16<", ">2019/02/30<", f"{MH}/PromulgationInfo/PromulgationDate"),
    ("<edXML:DueDate>2018/09/28<", "<edXML:DueDate>2019/02/29<", f"{MH}/DueDate"),
    (">2018/09/28 00:00:00<", ">2018/09/31 00:00:00<",
     "/edXML/edXMLEnvelope/edXMLHeader/TraceHeaderList/TraceHeader/Timestamp"),
])
def test_impossible_dates_in_edoc(old: str, new: str, path: str) -> None:
    raw = edit(small_edoc("edoc_new.edxml"), old, new)
    rejected(raw, "bad_date", path, line_of(raw, new))


@pytest.mark.parametrize("old, new, path", [
    (">2015/09/30<", ">2015/02/30<", f"{MH}/ResponseFor/PromulgationDate"),
    (">2015/09/20 11:08:36<", ">2015/04/31 11:08:36<", f"{MH}/Timestamp"),
    (">2015/09/20 11:08:36<", ">2100/02/29 11:08:36<", f"{MH}/Timestamp"),
])
def test_impossible_dates_in_status(old: str, new: str, path: str) -> None:
    rejected(edit(sample(STATUS), old, new), "bad_date", path)


def test_leap_day_is_a_real_date() -> None:
    env = accept(edit(sample(STATUS), ">2015/09/20 11:08:36<", ">2016/02/29 11:08:36<"))
    assert env.timestamp == datetime(2016, 2, 29, 11, 8, 36)


@pytest.mark.parametrize("where, old, path", [
    ("sender", "<edXML:OrganId>000.00.00.G22</edXML:OrganId>\n          <edXML:OrganizationInCharge>",
     f"{MH}/From/OrganId"),
    ("recipient", "<edXML:OrganId>000.00.00.H14</edXML:OrganId>\n          <edXML:OrganizationInCharge>",
     f"{MH}/To[2]/OrganId"),
    ("trace", "<edXML:OrganId>000.00.00.G22</edXML:OrganId>\n          <edXML:Timestamp>",
     "/edXML/edXMLEnvelope/edXMLHeader/TraceHeaderList/TraceHeader/OrganId"),
])
def test_bad_organ_id_even_when_lenient(where: str, old: str, path: str) -> None:
    new = old.replace(old[old.index(">") + 1:old.index("</")], "UBND-Hoa-Vang")
    rejected(edit(small_edoc(), old, new), "bad_organ_id", path, strict=False)


def test_bad_organ_id_in_response_for_strict() -> None:
    raw = edit(sample(STATUS), "<edXML:OrganId>000.00.00.G22<", "<edXML:OrganId>28.22.H17<")
    assert accept(raw, strict=False).response_for[0].organ_id == "28.22.H17"
    rejected(raw, "bad_organ_id", f"{MH}/ResponseFor/OrganId", 17, strict=True)


def test_attachment_with_other_content_id() -> None:
    raw = edit(small_edoc(), "<ContentId>cid:209</ContentId>", "<ContentId>cid:210</ContentId>")
    err = rejected(raw, "attachment_mismatch",
                   "/edXML/edXMLEnvelope/edXMLBody/edXMLManifest/Reference/ContentId")
    assert "cid:209" in err.message


def test_attachment_not_in_manifest() -> None:
    raw = edit(small_edoc(), "</AttachmentEncoded>",
               "<Attachment><ContentId>cid:300</ContentId></Attachment></AttachmentEncoded>")
    rejected(raw, "attachment_mismatch", "/edXML/AttachmentEncoded/Attachment[2]/ContentId")


def test_manifest_reference_without_attachment() -> None:
    raw = small_edoc()
    start, end = raw.index(b"<AttachmentEncoded>"), raw.index(b"</AttachmentEncoded>") + 20
    rejected(raw[:start] + raw[end:], "attachment_mismatch",
             "/edXML/edXMLEnvelope/edXMLBody/edXMLManifest/Reference/ContentId")


def test_duplicate_attachment_content_id() -> None:
    raw = edit(small_edoc(), "</AttachmentEncoded>",
               "<Attachment><ContentId> cid:209 </ContentId></Attachment></AttachmentEncoded>")
    rejected(raw, "attachment_mismatch", "/edXML/AttachmentEncoded/Attachment[2]/ContentId")


def test_attachment_without_content_id() -> None:
    raw = edit(small_edoc(), "</AttachmentEncoded>", "<Attachment/></AttachmentEncoded>")
    rejected(raw, "missing_element", "/edXML/AttachmentEncoded/Attachment[2]/ContentId")


# ---------------------------------------------------------------- build_status

ABOUT = ResponseFor(organ_id="000.00.00.G22", code="7816/VPCP-TTĐT", document_id=VPCP_DOC,
                    promulgation_date=date(2015, 9, 30))


@pytest.mark.parametrize("code", sorted(edxml.STATUS_CODES))
def test_build_status_round_trips(code: str) -> None:
    raw = edxml.build_status(sender_id="001.00.10.H47", sender_name="UBND huyện Yên Bình",
                             response_for=ABOUT, status_code=code,
                             description="Không chuyển được văn bản: đơn vị nhận không tồn tại",
                             timestamp=datetime(2024, 3, 5, 8, 9, 10))
    assert raw.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<edXML xmlns="' + NS.encode())
    assert b"<edXML:edXMLEnvelope" in raw and "huyện".encode() in raw
    env = accept(raw, strict=True)
    assert (env.kind, env.sender, env.sender_name, env.status_code) == (
        "status", "001.00.10.H47", "UBND huyện Yên Bình", code)
    assert env.response_for == [ABOUT]
    assert env.recipients == [] and env.attachments == 0 and env.signatures == []
    assert env.description == "Không chuyển được văn bản: đơn vị nhận không tồn tại"
    assert env.timestamp == datetime(2024, 3, 5, 8, 9, 10)


def test_build_status_minimal_response_for() -> None:
    about = ResponseFor(organ_id="28.22.H17", code=None, document_id="3f1c-uuid", promulgation_date=None)
    raw = edxml.build_status(sender_id="000.00.00.H41", sender_name=None, response_for=about,
                             status_code="02", description="", timestamp=datetime(2024, 1, 1))
    env = accept(raw, strict=False)
    assert env.response_for == [about] and env.sender_name is None and env.description is None


def test_build_status_converts_aware_timestamps_to_vietnam_time() -> None:
    raw = edxml.build_status(sender_id="000.00.00.H41", sender_name="x", response_for=ABOUT,
                             status_code="02", description="d",
                             timestamp=datetime(2024, 3, 5, 23, 30, tzinfo=UTC))
    assert b"<edXML:Timestamp>2024/03/06 06:30:00</edXML:Timestamp>" in raw
    assert accept(raw).timestamp == datetime(2024, 3, 6, 6, 30)


def test_build_status_survives_control_characters() -> None:
    # Descriptions may quote someone else's broken document.
    raw = edxml.build_status(sender_id="000.00.00.H41", sender_name="x", response_for=ABOUT,
                             status_code="02", description="bad \x00 byte\x1b[31m <&>",
                             timestamp=datetime(2024, 1, 1))
    assert accept(raw).description == "bad \ufffd byte\ufffd[31m <&>"


@pytest.mark.parametrize("kwargs", [{"status_code": "07"}, {"status_code": "1"},
                                    {"sender_id": "not an id"}])
def test_build_status_refuses_what_it_must_not_send(kwargs: dict[str, str]) -> None:
    args = {"sender_id": "000.00.00.H41", "sender_name": "x", "response_for": ABOUT,
            "status_code": "02", "description": "d", "timestamp": datetime(2024, 1, 1)}
    with pytest.raises(ValueError):
        edxml.build_status(**{**args, **kwargs})


# ---------------------------------------------------------------- cost

def test_accept_path_is_cheap_for_a_10kb_envelope() -> None:
    # Generous bound (the hub targets 800 docs/s on one core with room to
    # spare); it catches accidental per-call schema loads or XPath compiles.
    raw = small_edoc()
    assert 8_000 < len(raw) < 12_000
    accept(raw)
    rounds = 200
    started = time.perf_counter()
    for _ in range(rounds):
        accept(raw)
    assert (time.perf_counter() - started) / rounds < 0.002
