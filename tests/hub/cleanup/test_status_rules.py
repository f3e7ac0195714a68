"""Who may send which status (issue 12.7): only the sender recalls (13), only
recipients send 01-06, and 15/16 answer a recall (or an update) from the side
that received it; anything else is 403 ``status_not_allowed``."""
from __future__ import annotations

import pytest

from hub.edxml import samples
from support import AN_BINH, MAU_A, VP_UBND, submit


@pytest.fixture
async def sent(client, auth):
    return await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND, AN_BINH], 90))


@pytest.mark.parametrize("code", ["01", "02", "03", "04", "05", "06", "15", "16"])
async def test_the_sender_may_only_recall(client, auth, sent, code):
    body = await submit(client, auth, MAU_A, samples.status(MAU_A, MAU_A, sent["document_id"], code),
                        status=403)
    assert body["error"]["code"] == "status_not_allowed"
    assert body["error"]["details"]["status_code"] == code
    assert body["error"]["details"]["path"].endswith("/StatusCode")
    assert "may only recall" in body["error"]["details"]["rule"]
    # nothing reached the recipients
    for organ in (VP_UBND, AN_BINH):
        inbox = await (await client.get("/v1/inbox", headers=auth(organ))).json()
        assert [i["kind"] for i in inbox["items"]] == ["edoc"]


async def test_a_recipient_may_not_recall(client, auth, sent):
    body = await submit(client, auth, VP_UBND,
                        samples.status(VP_UBND, MAU_A, sent["document_id"], "13"), status=403)
    assert body["error"]["code"] == "status_not_allowed"
    assert "only the sender" in body["error"]["message"]


@pytest.mark.parametrize("code", ["15", "16"])
async def test_answers_to_a_recall_need_a_recall(client, auth, sent, code):
    # Given: no recall yet: an answer to one is refused
    body = await submit(client, auth, VP_UBND,
                        samples.status(VP_UBND, MAU_A, sent["document_id"], code), status=403)
    assert body["error"]["code"] == "status_not_allowed"
    # When: the sender recalls the document
    recall = await submit(client, auth, MAU_A, samples.status(MAU_A, MAU_A, sent["document_id"], "13"))
    assert sorted(r["organ"] for r in recall["recipients"]) == sorted([VP_UBND, AN_BINH])
    # Then: a recipient's answer goes back to the sender
    answer = await submit(client, auth, VP_UBND,
                          samples.status(VP_UBND, MAU_A, sent["document_id"], code))
    assert answer["recipients"] == [{"organ": MAU_A, "route": "mailbox"}]


async def test_recipients_report_01_to_06(client, auth, sent):
    for code in ("01", "03", "05", "06"):
        st = await submit(client, auth, AN_BINH, samples.status(AN_BINH, MAU_A, sent["document_id"], code))
        assert st["recipients"] == [{"organ": MAU_A, "route": "mailbox"}]
