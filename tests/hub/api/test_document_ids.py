"""A document is named by its message id or by its DocumentId, everywhere (issue 13.5)."""
from __future__ import annotations

import subprocess
import sys
import urllib.parse

from hub.edxml import samples
from serve import Served
from support import AN_BINH, HUB_ID, MAU_A, REPO, VP_UBND, eventually, submit


async def test_the_document_id_names_the_document_in_the_api(client, auth, hub):
    sent = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 125))
    doc = urllib.parse.quote(sent["document_id"], safe="")  # has "," and "/"
    assert sent["document_id"] == f"{MAU_A},2026/11/20,125/UBND"
    # the envelope view
    view = await (await client.get(f"/v1/envelopes/{doc}", headers=auth(MAU_A))).json()
    assert view["id"] == sent["id"]
    # the inbox item and its acknowledgement
    got = await client.get(f"/v1/inbox/{doc}", headers=auth(VP_UBND))
    assert got.status == 200 and got.headers["X-Lienthong-Message-Id"] == sent["id"]
    ack = await client.post(f"/v1/inbox/{doc}/ack", headers=auth(VP_UBND))
    assert (await ack.json())["state"] == "delivered"
    # receipts
    async def receipts():
        resp = await client.get(f"/v1/receipts?document={doc}", headers=auth(MAU_A))
        items = (await resp.json())["items"]
        return items if len(items) >= 2 else None
    items = await eventually(receipts)
    assert {i["message_id"] for i in items} == {sent["id"]}
    # the operator's queue view and actions
    op = auth(HUB_ID, "operator")
    shown = await (await client.get(f"/v1/queue/{doc}", headers=op)).json()
    assert {d["message_id"] for d in shown["deliveries"]} == {sent["id"]}
    # a DocumentId the hub never carried: said so, not an empty success
    missing = urllib.parse.quote(f"{MAU_A},2026/11/20,999/UBND", safe="")
    resp = await client.get(f"/v1/receipts?document={missing}", headers=auth(MAU_A))
    assert resp.status == 404 and "999/UBND" in (await resp.json())["error"]["message"]
    resp = await client.get(f"/v1/envelopes/{missing}", headers=auth(MAU_A))
    assert resp.status == 404


async def test_a_document_id_two_senders_used_is_ambiguous(client, auth):
    shared = f"{MAU_A},2026/11/20,7/UBND"
    a = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 7))
    b = await submit(client, auth, AN_BINH, samples.edoc(AN_BINH, [VP_UBND], 7, document_id=shared))
    resp = await client.get(f"/v1/envelopes/{urllib.parse.quote(shared, safe='')}",
                            headers=auth(VP_UBND))
    assert resp.status == 409
    err = (await resp.json())["error"]
    assert err["code"] == "ambiguous_document" and set(err["details"]["ids"]) == {a["id"], b["id"]}


def test_receipts_query_by_document_id_from_the_cli(tmp_path):
    with Served(tmp_path / "var", log=tmp_path / "hub.log") as hub:
        import urllib.request
        raw = samples.edoc(MAU_A, [VP_UBND], 126)
        req = urllib.request.Request(f"{hub.url}/v1/envelopes", data=raw, method="POST", headers={
            "Authorization": f"Bearer {hub.mint(MAU_A, 'agency')}", "Content-Type": "application/xml"})
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 202
        out = subprocess.run([sys.executable, "-m", "hub.cli", "receipts", "query", "--document",
                              f"{MAU_A},2026/11/20,126/UBND", "--json", "--data", str(hub.data)],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert f"{MAU_A},2026/11/20,126/UBND" not in out.stderr
        assert '"event": "accepted"' in out.stdout
        out = subprocess.run([sys.executable, "-m", "hub.cli", "receipts", "query", "--document",
                              f"{MAU_A},2026/11/20,404/UBND", "--data", str(hub.data)],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "404/UBND" in out.stderr
