"""Receipts as each agency may see them (issue 12.8): of its own deliveries and
of documents it sent, never a co-recipient's status or delivery receipts."""
from __future__ import annotations

from hub.edxml import samples
from support import AN_BINH, MAU_A, VP_UBND, eventually, submit


async def test_a_co_recipient_sees_only_its_own_receipts(client, auth, hub):
    # Given: Mậu A sends to the office and to An Bình; the office acknowledges and answers 03
    sent = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND, AN_BINH], 95))
    await client.post(f"/v1/inbox/{sent['id']}/ack", headers=auth(VP_UBND))
    await submit(client, auth, VP_UBND, samples.status(VP_UBND, MAU_A, sent["document_id"], "03"))
    everything = {"Authorization": f"Bearer {hub.tokens.issue(hub.hub_id, 'auditor')}"}

    async def all_receipts():
        resp = await client.get(f"/v1/receipts?document={sent['id']}", headers=everything)
        items = (await resp.json())["items"]
        return items if {i["event"] for i in items} >= {"accepted", "delivered", "status"} else None
    receipts = await eventually(all_receipts)
    office_only = [r for r in receipts if r["recipient"] == VP_UBND]
    assert {r["event"] for r in office_only} == {"delivered", "status"}

    async def listed(organ):
        resp = await client.get(f"/v1/receipts?document={sent['id']}", headers=auth(organ))
        assert resp.status == 200
        return {r["id"] for r in (await resp.json())["items"]}
    # Then: An Bình sees the document's acceptance, not the office's delivery or status
    assert await listed(AN_BINH) == {f"{sent['id']}.accepted"}
    for r in office_only:
        resp = await client.get(f"/v1/receipts/{r['id']}", headers=auth(AN_BINH))
        assert resp.status == 403
    assert (await client.get(f"/v1/receipts/{sent['id']}.accepted", headers=auth(AN_BINH))).status == 200
    # And: the office sees its own, the sender sees all
    assert await listed(VP_UBND) == {f"{sent['id']}.accepted"} | {r["id"] for r in office_only}
    assert await listed(MAU_A) == {r["id"] for r in receipts}
    for r in office_only:
        assert (await client.get(f"/v1/receipts/{r['id']}", headers=auth(VP_UBND))).status == 200
        assert (await client.get(f"/v1/receipts/{r['id']}", headers=auth(MAU_A))).status == 200
