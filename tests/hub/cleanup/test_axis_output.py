"""Real axis output is accepted: what the national axis and the provincial
platforms do to a message on its way is kept with the document, not refused.

Through the real HTTP API: submit, then read the envelope view and the
``accepted`` event in the audit log.
"""
from __future__ import annotations

import base64

import pytest

from hub.edxml import samples
from support import MAU_A, SO_NOIVU, VP_UBND, submit

AXIS = "000.00.00.G22"           # the national axis (Văn phòng Chính phủ)
PROVINCE_LGSP = "000.00.00.H63"  # the provincial platform's node


async def view(client, auth, organ: str, message_id: str) -> dict:
    resp = await client.get(f"/v1/envelopes/{message_id}", headers=auth(organ))
    assert resp.status == 200
    return await resp.json()


async def accepted_event(client, auth, message_id: str) -> dict:
    resp = await client.get(f"/v1/audit?message_id={message_id}&kind=accepted",
                            headers=auth(MAU_A, "auditor"))
    items = (await resp.json())["items"]
    assert len(items) == 1, items
    return items[0]


def codes(irregularities: list[dict]) -> list[str]:
    return [i["code"] for i in irregularities]


async def test_empty_response_for_is_accepted_and_noted(client, auth):
    # Given: an edoc the axis normalised with an empty <ResponseFor/>
    raw = samples.edoc(MAU_A, [VP_UBND], 1, empty_response_for=True)
    # When: it is submitted
    sent = await submit(client, auth, MAU_A, raw)
    # Then: it is accepted, and what was unusual is kept with it
    got = await view(client, auth, MAU_A, sent["id"])
    assert got["response_for"] is None
    assert got["irregularities"] == [{
        "code": "empty_response_for", "path": "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/ResponseFor",
        "message": "an empty ResponseFor (answers no document) was ignored"}]
    event = await accepted_event(client, auth, sent["id"])
    assert event["detail"]["irregularities"] == got["irregularities"]
    # And: the recipient sees it too
    assert codes((await view(client, auth, VP_UBND, sent["id"]))["irregularities"]) == [
        "empty_response_for"]


async def test_an_empty_response_for_in_a_status_is_still_refused(client, auth):
    sent = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 2))
    raw = samples.status(VP_UBND, MAU_A, sent["document_id"])
    start, end = raw.index(b"<edXML:ResponseFor>"), raw.index(b"</edXML:ResponseFor>") + 20
    body = await submit(client, auth, VP_UBND, raw[:start] + b"<edXML:ResponseFor/>" + raw[end:],
                        status=422)
    assert body["error"]["code"] == "missing_element"
    assert body["error"]["details"]["path"].endswith("/ResponseFor/DocumentId")


async def test_trace_headers_of_intermediate_nodes(client, auth):
    raw = samples.edoc(SO_NOIVU, [MAU_A], 3, relayed_by=[AXIS, PROVINCE_LGSP])
    sent = await submit(client, auth, SO_NOIVU, raw)
    got = await view(client, auth, SO_NOIVU, sent["id"])
    assert got["irregularities"] == [{
        "code": "extra_trace_headers", "path": "/edXML/edXMLEnvelope/edXMLHeader/TraceHeaderList",
        "message": f"relayed: TraceHeaders of 2 other node(s): {AXIS}, {PROVINCE_LGSP}"}]


async def test_manifest_content_type_that_differs(client, auth):
    raw = samples.edoc(MAU_A, [VP_UBND], 4, manifest_type="application/pdf",
                       attachment_type="application/zip")
    sent = await submit(client, auth, MAU_A, raw)
    (note,) = (await view(client, auth, MAU_A, sent["id"]))["irregularities"]
    assert note["code"] == "content_type_differs"
    assert note["message"] == "cid:1: the manifest says application/pdf, the attachment application/zip"
    assert note["path"] == "/edXML/AttachmentEncoded/Attachment"


@pytest.mark.parametrize("attachment, code, entry", [
    (samples.rezipped_b64(3000), "attachment_rezipped", "'vanban.pdf'"),
    (samples.rezipped_b64(3000, nested=True), "attachment_rezipped", ".zip'"),
    (base64.b64encode(b"%PDF-1.7\n" * 200).decode(), "attachment_not_zipped", None),
])
async def test_re_zipped_attachment(client, auth, attachment, code, entry):
    sent = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 5, attachment=attachment))
    (note,) = (await view(client, auth, MAU_A, sent["id"]))["irregularities"]
    assert note["code"] == code
    assert note["path"] == "/edXML/AttachmentEncoded/Attachment/ContentTransferEncoded"
    if entry:
        assert entry in note["message"]


async def test_all_of_it_at_once_as_the_axis_sends_it(client, auth, hub):
    # Given: a department's document as it comes off the axis, every normalisation at once
    raw = samples.edoc(SO_NOIVU, [MAU_A, VP_UBND], 6, empty_response_for=True,
                       relayed_by=[AXIS], manifest_type="application/octet-stream",
                       attachment=samples.rezipped_b64(2000))
    sent = await submit(client, auth, SO_NOIVU, raw)
    # Then: accepted for both recipients, the original bytes kept, four notes in order
    assert [r["organ"] for r in sent["recipients"]] == [MAU_A, VP_UBND]
    got = await view(client, auth, SO_NOIVU, sent["id"])
    assert codes(got["irregularities"]) == ["empty_response_for", "extra_trace_headers",
                                            "content_type_differs", "attachment_rezipped"]
    fetched = await client.get(f"/v1/inbox/{sent['id']}", headers=auth(MAU_A))
    assert await fetched.read() == raw
    assert codes((await accepted_event(client, auth, sent["id"]))["detail"]["irregularities"]) == \
        codes(got["irregularities"])


async def test_a_plain_document_has_no_irregularities(client, auth):
    sent = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 7))
    got = await view(client, auth, MAU_A, sent["id"])
    assert (got["irregularities"], got["standing"], got["links"]) == ([], "current", [])
    assert "irregularities" not in (await accepted_event(client, auth, sent["id"]))["detail"]
