"""Well-formed edXML messages built the way real producers build them.

Used by tests, ``make bench`` and demos to make documents of a chosen size,
sender and recipients without copying the public samples.  Nothing here is
on the path of a real document.
"""
from __future__ import annotations

import base64
import io
import uuid
import zipfile
from datetime import datetime
from typing import Sequence
from xml.sax.saxutils import escape

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"


def _organ(tag: str, organ_id: str, name: str) -> str:
    return (f"<edXML:{tag}><edXML:OrganId>{escape(organ_id)}</edXML:OrganId>"
            f"<edXML:OrganizationInCharge>{escape(name)}</edXML:OrganizationInCharge>"
            f"<edXML:OrganName>{escape(name)}</edXML:OrganName>"
            f"<edXML:OrganAdd>Văn Yên, Yên Bái</edXML:OrganAdd>"
            f"<edXML:Email>vanthu@vanyen.yenbai.gov.vn</edXML:Email></edXML:{tag}>")


def attachment_b64(size: int, seed: str = "") -> str:
    """A zipped attachment whose base64 is about ``size`` characters."""
    raw_len = max(0, size * 3 // 4 - 200)
    blob = (seed.encode() + b"lienthong") * (raw_len // (len(seed) + 9) + 1)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{uuid.uuid4()}.pdf", blob[:raw_len])
    return base64.b64encode(buf.getvalue()).decode("ascii")


def rezipped_b64(size: int, name: str = "vanban.pdf", *, nested: bool = False) -> str:
    """An attachment zipped again the way an axis node does it: the entry is
    named after the file (or, ``nested``, is the producer's zip inside another)."""
    inner = base64.b64decode(attachment_b64(size))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if nested:
            zf.writestr(f"{uuid.uuid4()}.zip", inner)
        else:
            zf.writestr(name, inner)
    return base64.b64encode(buf.getvalue()).decode("ascii")


#: Reasons the axis writes for each BussinessDocType.
_BUSINESS_REASONS = {0: "Văn bản điện tử mới", 1: "Thu hồi văn bản điện tử",
                     2: "Cập nhật văn bản điện tử", 3: "Thay thế văn bản điện tử"}


def _business(document_id: str, doc_type: int, target: str | None,
              receivers: Sequence[tuple[str, bool]],
              replaces: Sequence[tuple[str, Sequence[str]]]) -> str:
    """The TraceHeaderList's Bussiness block, shaped like edoc_update.edxml."""
    info = ""
    if receivers:
        items = "".join(f"<edXML:Receiver><edXML:OrganId>{escape(o)}</edXML:OrganId>"
                        f"<edXML:ReceiverType>{int(added)}</edXML:ReceiverType></edXML:Receiver>"
                        for o, added in receivers)
        info = (f"<edXML:BussinessDocumentInfo><edXML:DocumentInfo>0</edXML:DocumentInfo>"
                f"<edXML:DocumentReceiver>1</edXML:DocumentReceiver>"
                f"<edXML:ReceiverList>{items}</edXML:ReceiverList></edXML:BussinessDocumentInfo>")
    replacement = ""
    if replaces:
        replacement = "<edXML:ReplacementInfoList>" + "".join(
            f"<edXML:ReplacementInfo><edXML:DocumentId>{escape(d)}</edXML:DocumentId>"
            f"<edXML:OrganIdList>{''.join(f'<edXML:OrganId>{escape(o)}</edXML:OrganId>' for o in organs)}"
            f"</edXML:OrganIdList></edXML:ReplacementInfo>" for d, organs in replaces
        ) + "</edXML:ReplacementInfoList>"
    return (f"<edXML:Bussiness><edXML:DocumentId>{escape(document_id if target is None else target)}"
            f"</edXML:DocumentId>"
            f"<edXML:BussinessDocType>{doc_type}</edXML:BussinessDocType>"
            f"<edXML:BussinessDocReason>{_BUSINESS_REASONS.get(doc_type, '')}</edXML:BussinessDocReason>"
            f"<edXML:Paper>0</edXML:Paper>{info}{replacement}</edXML:Bussiness>")


def edoc(sender: str, recipients: Sequence[str], number: int | str = 1, *,
         notation: str = "UBND", subject: str = "V/v triển khai liên thông văn bản điện tử",
         date: str = "2026/11/20", size: int = 4096, sender_name: str = "Cơ quan gửi",
         document_id: str | None = None, priority: int = 0,
         business_type: int = 0, business_document_id: str | None = None,
         receivers: Sequence[tuple[str, bool]] = (),
         replaces: Sequence[tuple[str, Sequence[str]]] = (),
         empty_response_for: bool = False, relayed_by: Sequence[str] = (),
         manifest_type: str = "application/zip", attachment_type: str = "application/zip",
         attachment: str | None = None) -> bytes:
    """An edXML edoc of roughly ``size`` bytes: a new document (BussinessDocType 0)
    unless ``business_type`` says otherwise.

    ``business_document_id`` is the document a revocation (1) or update (2)
    acts on (``Bussiness/DocumentId``); ``receivers`` an update's ReceiverList
    as (OrganId, added); ``replaces`` a replacement's (3) ReplacementInfoList as
    (DocumentId, OrganIds).  What an axis does to a message on its way:
    ``empty_response_for`` (an empty ``<ResponseFor/>``), ``relayed_by`` (the
    TraceHeaders of the nodes it passed), a ``manifest_type`` other than the
    ``attachment_type``, and ``attachment`` (the base64 to carry instead, e.g.
    ``rezipped_b64``)."""
    document_id = document_id or f"{sender},{date},{number}/{notation}"
    to = "".join(_organ("To", r, f"Cơ quan nhận {r}") for r in recipients)
    relays = "".join(f"<edXML:TraceHeader><edXML:OrganId>{escape(o)}</edXML:OrganId>"
                     f"<edXML:Timestamp>{date} 08:0{min(i + 1, 9)}:00</edXML:Timestamp>"
                     f"</edXML:TraceHeader>" for i, o in enumerate(relayed_by))
    head = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<edXML xmlns="{NS}">'
        f'<edXML:edXMLEnvelope xmlns:edXML="{NS}"><edXML:edXMLHeader><edXML:MessageHeader>'
        f"{_organ('From', sender, sender_name)}{to}"
        f"<edXML:DocumentId>{escape(document_id)}</edXML:DocumentId>"
        f"<edXML:Code><edXML:CodeNumber>{escape(str(number))}</edXML:CodeNumber>"
        f"<edXML:CodeNotation>{escape(notation)}</edXML:CodeNotation></edXML:Code>"
        f"<edXML:PromulgationInfo><edXML:Place>Văn Yên</edXML:Place>"
        f"<edXML:PromulgationDate>{date}</edXML:PromulgationDate></edXML:PromulgationInfo>"
        f"<edXML:DocumentType><edXML:Type>1</edXML:Type><edXML:TypeDetail>0</edXML:TypeDetail>"
        f"<edXML:TypeName>Công văn</edXML:TypeName></edXML:DocumentType>"
        f"<edXML:Subject>{escape(subject)}</edXML:Subject>"
        f"<edXML:Content>{escape(subject)}</edXML:Content>"
        f"<edXML:SignerInfo><edXML:Competence>KT. CHỦ TỊCH</edXML:Competence>"
        f"<edXML:Position>Phó Chủ tịch</edXML:Position><edXML:FullName>Nguyễn Văn A</edXML:FullName>"
        f"</edXML:SignerInfo><edXML:DueDate>2026/12/31</edXML:DueDate>"
        f"<edXML:OtherInfo><edXML:Priority>{priority}</edXML:Priority>"
        f"<edXML:SphereOfPromulgation>Liên thông văn bản</edXML:SphereOfPromulgation>"
        f"<edXML:TyperNotation>VT</edXML:TyperNotation><edXML:PromulgationAmount>1</edXML:PromulgationAmount>"
        f"<edXML:PageAmount>1</edXML:PageAmount></edXML:OtherInfo>"
        f"<edXML:SteeringType>1</edXML:SteeringType>"
        f"{'<edXML:ResponseFor/>' if empty_response_for else ''}"
        f"</edXML:MessageHeader><edXML:TraceHeaderList><edXML:TraceHeader>"
        f"<edXML:OrganId>{escape(sender)}</edXML:OrganId>"
        f"<edXML:Timestamp>{date} 08:00:00</edXML:Timestamp></edXML:TraceHeader>{relays}"
        f"{_business(document_id, business_type, business_document_id, receivers, replaces)}"
        f"</edXML:TraceHeaderList>"
        f"</edXML:edXMLHeader><edXML:edXMLBody><edXML:edXMLManifest version=\"1.0\">"
        f"<edXML:Reference><edXML:ContentId>cid:1</edXML:ContentId>"
        f"<edXML:ContentType>{escape(manifest_type)}</edXML:ContentType>"
        f"<edXML:Description>vanban.pdf</edXML:Description>"
        f"<edXML:AttachmentName>vanban.pdf</edXML:AttachmentName></edXML:Reference>"
        f"</edXML:edXMLManifest></edXML:edXMLBody></edXML:edXMLEnvelope>")
    fill = max(64, size - len(head.encode()) - 300)
    tail = (f"<AttachmentEncoded><Attachment><ContentId>cid:1</ContentId>"
            f"<AttachmentName>vanban.pdf</AttachmentName><Description>vanban.pdf</Description>"
            f"<ContentType>{escape(attachment_type)}</ContentType>"
            f"<ContentTransferEncoded>{attachment or attachment_b64(fill, str(number))}"
            f"</ContentTransferEncoded>"
            f"</Attachment></AttachmentEncoded></edXML>\n")
    return (head + tail).encode("utf-8")


def status(sender: str, original_sender: str, document_id: str, code: str = "01", *,
           description: str = "Đã đến", when: datetime | None = None) -> bytes:
    """An edXML status message from ``sender`` about ``original_sender``'s document."""
    when = when or datetime(2026, 11, 20, 9, 30, 0)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<edXML xmlns="{NS}">'
        f'<edXML:edXMLEnvelope xmlns:edXML="{NS}"><edXML:edXMLHeader><edXML:MessageHeader>'
        f"{_organ('From', sender, f'Cơ quan {sender}')}"
        f"<edXML:ResponseFor><edXML:OrganId>{escape(original_sender)}</edXML:OrganId>"
        f"<edXML:Code>{escape(document_id.rsplit(',', 1)[-1])}</edXML:Code>"
        f"<edXML:PromulgationDate>2026/11/20</edXML:PromulgationDate>"
        f"<edXML:DocumentId>{escape(document_id)}</edXML:DocumentId></edXML:ResponseFor>"
        f"<edXML:StaffInfo><edXML:Department>Văn thư</edXML:Department>"
        f"<edXML:Staff>Văn thư cơ quan</edXML:Staff></edXML:StaffInfo>"
        f"<edXML:StatusCode>{code}</edXML:StatusCode>"
        f"<edXML:Description>{escape(description)}</edXML:Description>"
        f"<edXML:Timestamp>{when:%Y/%m/%d %H:%M:%S}</edXML:Timestamp>"
        f"</edXML:MessageHeader></edXML:edXMLHeader></edXML:edXMLEnvelope></edXML>\n"
    ).encode("utf-8")
