"""Business document types carry their meaning (BussinessDocType 1 revocation,
2 update, 3 replacement), through the real HTTP API.

A revocation or update names the original in ``Bussiness/DocumentId``; a
replacement names each replaced document in ``ReplacementInfoList``.  The
hub links them in the spool, shows the links both ways and the original's
standing, delivers to whoever must be told, and says it in the receipts.
"""
from __future__ import annotations

from cryptography import x509

from hub.edxml import samples
from hub.receipts.format import ReceiptLink, verify_receipt
from support import AN_BINH, MAU_A, VP_UBND, eventually, submit

THIRD = "000.03.48.H63"  # a third commune (mailbox)
REVOKE, UPDATE, REPLACE = 1, 2, 3


async def view(client, auth, organ: str, message_id: str) -> dict:
    resp = await client.get(f"/v1/envelopes/{message_id}", headers=auth(organ))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def inbox(client, auth, organ: str) -> list[str]:
    body = await (await client.get("/v1/inbox", headers=auth(organ))).json()
    return [i["id"] for i in body["items"]]


def recipients(sent: dict) -> list[str]:
    return [r["organ"] for r in sent["recipients"]]


async def original(client, auth, number: int, to=(VP_UBND, AN_BINH), sender=MAU_A) -> dict:
    """A new document sent through the API; its answer, with the bytes under ``raw``."""
    raw = samples.edoc(sender, list(to), number)
    return {**await submit(client, auth, sender, raw), "raw": raw}


async def receipt(client, auth, receipt_id: str):
    cert = x509.load_pem_x509_certificate(await (await client.get("/v1/hub/certificate")).read())
    resp = await client.get(f"/v1/receipts/{receipt_id}", headers=auth(MAU_A))
    assert resp.status == 200
    return verify_receipt(await resp.read(), cert)


# -- revocation (1) -------------------------------------------------------------

async def test_revocation_links_marks_revoked_and_tells_every_recipient(client, auth):
    # Given: Mậu A sent a document to the office and to An Bình
    orig = await original(client, auth, 1)
    # When: Mậu A revokes it, addressed to the office only
    raw = samples.edoc(MAU_A, [VP_UBND], 2, business_type=REVOKE,
                       business_document_id=orig["document_id"])
    rev = await submit(client, auth, MAU_A, raw)
    # Then: the revocation is delivered to every recipient of the original
    assert recipients(rev) == [VP_UBND, AN_BINH]
    assert rev["id"] in await inbox(client, auth, AN_BINH)
    # And: the original is revoked, and the links show both ways
    got = await view(client, auth, MAU_A, orig["id"])
    assert got["standing"] == "revoked"
    assert got["links"] == [{"type": "revoked_by", "id": rev["id"], "document_id": rev["document_id"]}]
    mine = await view(client, auth, MAU_A, rev["id"])
    assert mine["standing"] == "current"
    assert mine["links"] == [{"type": "revokes", "id": orig["id"], "document_id": orig["document_id"]}]
    # And: a recipient sees the standing of what it received
    assert (await view(client, auth, AN_BINH, orig["id"]))["standing"] == "revoked"
    # And: the revocation's acceptance receipt names what it revokes
    f = await receipt(client, auth, rev["receipt_id"])
    assert (f.standing, f.links) == ("current", (ReceiptLink("revokes", orig["id"], orig["document_id"]),))
    # And: the accepted event and a linked event on the original are in the log
    audit = await (await client.get(f"/v1/audit?message_id={orig['id']}&kind=linked",
                                    headers=auth(MAU_A, "auditor"))).json()
    assert [(e["detail"]["type"], e["detail"]["by"]) for e in audit["items"]] == [("revoked_by", rev["id"])]


async def test_later_receipts_of_the_original_state_its_standing(client, auth):
    orig = await original(client, auth, 3, to=(VP_UBND,))
    rev = await submit(client, auth, MAU_A, samples.edoc(
        MAU_A, [VP_UBND], 4, business_type=REVOKE, business_document_id=orig["document_id"]))
    # When: the office fetches and acknowledges the original after the revocation
    ack = await client.post(f"/v1/inbox/{orig['id']}/ack", headers=auth(VP_UBND))
    assert ack.status == 200

    async def delivered():
        body = await (await client.get(f"/v1/receipts?document={orig['id']}&event=delivered",
                                       headers=auth(MAU_A))).json()
        return body["items"]
    (item,) = await eventually(delivered, what="the delivered receipt")
    f = await receipt(client, auth, item["id"])
    assert f.standing == "revoked"
    assert f.links == (ReceiptLink("revoked_by", rev["id"], rev["document_id"]),)
    # The acceptance receipt, signed before the revocation, states no standing
    first = await receipt(client, auth, orig["receipt_id"])
    assert (first.standing, first.links) == (None, ())


async def test_only_the_sender_revokes(client, auth):
    orig = await original(client, auth, 5)
    raw = samples.edoc(AN_BINH, [VP_UBND], 6, business_type=REVOKE,
                       business_document_id=orig["document_id"])
    body = await submit(client, auth, AN_BINH, raw, status=403)
    assert body["error"]["code"] == "not_the_sender"
    assert body["error"]["details"]["path"].endswith("/TraceHeaderList/Bussiness/DocumentId")
    assert body["error"]["details"]["sender"] == MAU_A
    assert (await view(client, auth, MAU_A, orig["id"]))["standing"] == "current"


async def test_revoking_an_unknown_document(client, auth):
    raw = samples.edoc(MAU_A, [VP_UBND], 7, business_type=REVOKE,
                       business_document_id=f"{MAU_A},2026/01/01,999/UBND")
    body = await submit(client, auth, MAU_A, raw, status=422)
    assert body["error"]["code"] == "unknown_document"


async def test_a_revocation_must_name_a_document(client, auth):
    raw = samples.edoc(MAU_A, [VP_UBND], 8, business_type=REVOKE, business_document_id="")
    body = await submit(client, auth, MAU_A, raw, status=422)
    assert body["error"]["code"] == "missing_element"
    assert body["error"]["details"]["path"].endswith("/Bussiness/DocumentId")


async def test_a_business_document_naming_itself_acts_on_nothing(client, auth):
    # Producers send updates that keep the original's DocumentId: the hub cannot
    # hold another document of that id from that sender (it would be a conflict).
    for number, kind in ((8, REVOKE), (14, UPDATE)):
        sent = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], number,
                                                              business_type=kind))
        got = await view(client, auth, MAU_A, sent["id"])
        assert (got["links"], got["standing"]) == ([], "current")
        assert [i["code"] for i in got["irregularities"]] == ["business_names_itself"]
    orig = await original(client, auth, 15)
    raw = samples.edoc(MAU_A, [VP_UBND], 16, business_type=REPLACE,
                       replaces=[(f"{MAU_A},2026/11/20,16/UBND", []), (orig["document_id"], [])])
    rep = await submit(client, auth, MAU_A, raw)
    got = await view(client, auth, MAU_A, rep["id"])
    assert [link["id"] for link in got["links"]] == [orig["id"]]
    assert [i["code"] for i in got["irregularities"]] == ["business_names_itself"]


async def test_a_revoked_document_takes_nothing_more(client, auth):
    orig = await original(client, auth, 9)
    rev_raw = samples.edoc(MAU_A, [VP_UBND], 10, business_type=REVOKE,
                           business_document_id=orig["document_id"])
    rev = await submit(client, auth, MAU_A, rev_raw)
    # the same revocation again is the same message, not a second link
    again = await submit(client, auth, MAU_A, rev_raw, status=200)
    assert again["id"] == rev["id"]
    assert len((await view(client, auth, MAU_A, orig["id"]))["links"]) == 1
    for number, kind in ((11, REVOKE), (12, UPDATE)):
        raw = samples.edoc(MAU_A, [VP_UBND], number, business_type=kind,
                           business_document_id=orig["document_id"])
        body = await submit(client, auth, MAU_A, raw, status=409)
        assert body["error"]["code"] == "document_revoked"
        assert body["error"]["details"] == {"id": orig["id"], "revoked_by": rev["id"]}
    raw = samples.edoc(MAU_A, [VP_UBND], 13, business_type=REPLACE,
                       replaces=[(orig["document_id"], [VP_UBND])])
    assert (await submit(client, auth, MAU_A, raw, status=409))["error"]["code"] == "document_revoked"


# -- update (2) -----------------------------------------------------------------

async def test_update_adds_and_removes_recipients(client, auth):
    # Given: a document to the office and An Bình
    orig = await original(client, auth, 20)
    # When: Mậu A updates it: An Bình removed, a third commune added
    raw = samples.edoc(MAU_A, [VP_UBND], 21, business_type=UPDATE,
                       business_document_id=orig["document_id"],
                       receivers=[(AN_BINH, False), (THIRD, True)])
    upd = await submit(client, auth, MAU_A, raw)
    # Then: the update goes to the office, the removed An Bình (told) and the added commune
    assert recipients(upd) == [VP_UBND, AN_BINH, THIRD]
    # And: the added commune gets a new delivery of the ORIGINAL, and the update
    assert set(await inbox(client, auth, THIRD)) == {orig["id"], upd["id"]}
    fetched = await client.get(f"/v1/inbox/{orig['id']}", headers=auth(THIRD))
    assert await fetched.read() == orig["raw"]
    # And: An Bình is told by the update
    assert upd["id"] in await inbox(client, auth, AN_BINH)
    # And: the original is updated, with the changes in its link
    got = await view(client, auth, MAU_A, orig["id"])
    assert got["standing"] == "updated"
    assert got["links"] == [{"type": "updated_by", "id": upd["id"], "document_id": upd["document_id"],
                             "added": [THIRD], "removed": [AN_BINH]}]
    assert [d["recipient"] for d in got["deliveries"]] == [VP_UBND, AN_BINH, THIRD]
    assert (await view(client, auth, MAU_A, upd["id"]))["links"][0]["type"] == "updates"
    # And: the added commune may now answer about the original
    st = await submit(client, auth, THIRD, samples.status(THIRD, MAU_A, orig["document_id"], "01"))
    assert recipients(st) == [MAU_A]


async def test_update_adding_a_recipient_who_has_it_adds_no_delivery(client, auth):
    orig = await original(client, auth, 22)
    raw = samples.edoc(MAU_A, [VP_UBND], 23, business_type=UPDATE,
                       business_document_id=orig["document_id"], receivers=[(VP_UBND, True)])
    upd = await submit(client, auth, MAU_A, raw)
    assert recipients(upd) == [VP_UBND, AN_BINH]
    got = await view(client, auth, MAU_A, orig["id"])
    assert [d["recipient"] for d in got["deliveries"]] == [VP_UBND, AN_BINH]


async def test_update_removing_one_who_never_had_it_is_noted(client, auth):
    orig = await original(client, auth, 24, to=(VP_UBND,))
    raw = samples.edoc(MAU_A, [VP_UBND], 25, business_type=UPDATE,
                       business_document_id=orig["document_id"], receivers=[(THIRD, False)])
    upd = await submit(client, auth, MAU_A, raw)
    assert recipients(upd) == [VP_UBND]
    (note,) = (await view(client, auth, MAU_A, upd["id"]))["irregularities"]
    assert note["code"] == "removed_receiver_not_a_recipient"
    assert note["path"].endswith("/ReceiverList/Receiver[1]/OrganId")


async def test_only_the_sender_updates(client, auth):
    orig = await original(client, auth, 26)
    raw = samples.edoc(VP_UBND, [AN_BINH], 27, business_type=UPDATE,
                       business_document_id=orig["document_id"], receivers=[(THIRD, True)])
    body = await submit(client, auth, VP_UBND, raw, status=403)
    assert body["error"]["code"] == "not_the_sender"
    assert await inbox(client, auth, THIRD) == []


async def test_update_adding_a_bad_organ_id_is_refused_with_its_path(client, auth):
    orig = await original(client, auth, 28)
    raw = samples.edoc(MAU_A, [VP_UBND], 29, business_type=UPDATE,
                       business_document_id=orig["document_id"],
                       receivers=[(AN_BINH, False), ("UBND-Hoa-Vang", True)])
    body = await submit(client, auth, MAU_A, raw, status=422)
    assert body["error"]["code"] == "bad_organ_id"
    assert body["error"]["details"]["path"].endswith("/ReceiverList/Receiver[2]/OrganId")


async def test_a_receiver_named_twice_is_refused(client, auth):
    orig = await original(client, auth, 30)
    raw = samples.edoc(MAU_A, [VP_UBND], 31, business_type=UPDATE,
                       business_document_id=orig["document_id"],
                       receivers=[(THIRD, True), (THIRD, False)])
    body = await submit(client, auth, MAU_A, raw, status=422)
    assert body["error"]["code"] == "duplicate_recipient"
    assert body["error"]["details"]["path"].endswith("/ReceiverList/Receiver[2]/OrganId")


# -- replacement (3) ------------------------------------------------------------

async def test_replacement_links_every_document_it_names(client, auth):
    first = await original(client, auth, 40)
    second = await original(client, auth, 41, to=(VP_UBND,))
    raw = samples.edoc(MAU_A, [VP_UBND, AN_BINH], 42, business_type=REPLACE,
                       replaces=[(first["document_id"], [VP_UBND, AN_BINH]),
                                 (second["document_id"], [VP_UBND])])
    rep = await submit(client, auth, MAU_A, raw)
    assert recipients(rep) == [VP_UBND, AN_BINH]  # as addressed
    mine = await view(client, auth, MAU_A, rep["id"])
    assert mine["links"] == [
        {"type": "replaces", "id": first["id"], "document_id": first["document_id"],
         "organs": [VP_UBND, AN_BINH]},
        {"type": "replaces", "id": second["id"], "document_id": second["document_id"],
         "organs": [VP_UBND]}]
    for doc in (first, second):
        got = await view(client, auth, MAU_A, doc["id"])
        assert got["standing"] == "replaced"
        assert got["links"] == [{"type": "replaced_by", "id": rep["id"],
                                 "document_id": rep["document_id"],
                                 "organs": [VP_UBND, AN_BINH] if doc is first else [VP_UBND]}]
    f = await receipt(client, auth, rep["receipt_id"])
    assert [link.type for link in f.links] == ["replaces", "replaces"]


async def test_replacement_refusals(client, auth):
    theirs = await original(client, auth, 43, to=(VP_UBND,), sender=AN_BINH)
    raw = samples.edoc(MAU_A, [VP_UBND], 44, business_type=REPLACE,
                       replaces=[(theirs["document_id"], [])])
    body = await submit(client, auth, MAU_A, raw, status=403)
    assert body["error"]["code"] == "not_the_sender"
    assert body["error"]["details"]["path"].endswith("/ReplacementInfo[1]/DocumentId")
    raw = samples.edoc(MAU_A, [VP_UBND], 45, business_type=REPLACE,
                       replaces=[(f"{MAU_A},2026/01/01,998/UBND", [])])
    assert (await submit(client, auth, MAU_A, raw, status=422))["error"]["code"] == "unknown_document"
    raw = samples.edoc(MAU_A, [VP_UBND], 46, business_type=REPLACE)
    body = await submit(client, auth, MAU_A, raw, status=422)
    assert body["error"]["code"] == "missing_element"
    assert body["error"]["details"]["path"].endswith("/ReplacementInfoList/ReplacementInfo")


async def test_a_new_document_naming_another_in_bussiness_is_not_a_link(client, auth):
    # The samples' new documents (type 0) name some DocumentId in Bussiness: it means nothing
    orig = await original(client, auth, 50)
    raw = samples.edoc(MAU_A, [VP_UBND], 51, business_document_id=orig["document_id"])
    sent = await submit(client, auth, MAU_A, raw)
    assert (await view(client, auth, MAU_A, sent["id"]))["links"] == []
    assert (await view(client, auth, MAU_A, orig["id"]))["standing"] == "current"
