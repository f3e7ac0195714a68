"""Operators on the queue: list, show, hold, release, retry, drop — HTTP and CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import pytest

from hub.edxml import samples
from support import AN_BINH, HUB_ID, MAU_A, REPO, SO_NOIVU, VP_UBND, submit, eventually

XML = {"Content-Type": "application/xml"}




async def queued_to_department(client, auth, n):
    # no adapter is configured for "provincial" here: the delivery stays queued
    return await submit(client, auth, MAU_A, samples.edoc(MAU_A, [SO_NOIVU, VP_UBND], n))


async def test_list_filters_and_roles(client, auth):
    a = await queued_to_department(client, auth, 1)
    await submit(client, auth, AN_BINH, samples.edoc(AN_BINH, [VP_UBND], 2))
    op = auth(HUB_ID, "operator")
    body = await (await client.get("/v1/queue", headers=op)).json()
    assert len(body["items"]) == 3
    body = await (await client.get("/v1/queue?route=provincial", headers=op)).json()
    assert [(i["message_id"], i["recipient"], i["state"]) for i in body["items"]] == [
        (a["id"], SO_NOIVU, "queued")]
    body = await (await client.get(f"/v1/queue?organ={AN_BINH}", headers=op)).json()
    assert {i["sender"] for i in body["items"]} == {AN_BINH}
    body = await (await client.get("/v1/queue?state=delivered", headers=op)).json()
    assert body["items"] == []
    body = await (await client.get("/v1/queue?older_than=1h", headers=op)).json()
    assert body["items"] == []
    body = await (await client.get("/v1/queue?limit=1", headers=op)).json()
    assert len(body["items"]) == 1 and "after=" in body["next"]
    resp = await client.get("/v1/queue?state=lost", headers=op)
    assert resp.status == 422 and (await resp.json())["error"]["details"]["parameter"] == "state"
    assert (await client.get("/v1/queue", headers=auth(MAU_A))).status == 403
    assert (await client.get("/v1/queue", headers=auth(HUB_ID, "auditor"))).status == 200
    resp = await client.post(f"/v1/queue/{a['id']}/hold", headers=auth(HUB_ID, "auditor"))
    assert resp.status == 403


async def test_show_by_message_or_delivery(client, auth):
    a = await queued_to_department(client, auth, 3)
    op = auth(HUB_ID, "operator")
    body = await (await client.get(f"/v1/queue/{a['id']}", headers=op)).json()
    assert body["sender"] == MAU_A and len(body["deliveries"]) == 2
    assert body["payload"]["size"] > 0 and len(body["payload"]["sha256"]) == 64
    assert body["events"][0]["kind"] == "accepted"
    delivery_id = body["deliveries"][0]["delivery_id"]
    body2 = await (await client.get(f"/v1/queue/{delivery_id}", headers=op)).json()
    assert body2["message_id"] == a["id"]
    assert (await client.get("/v1/queue/999999", headers=op)).status == 404


async def test_hold_release_retry_drop(client, auth):
    a = await queued_to_department(client, auth, 4)
    op = auth(HUB_ID, "operator")
    shown = await (await client.get(f"/v1/queue/{a['id']}", headers=op)).json()
    dept = next(d["delivery_id"] for d in shown["deliveries"] if d["recipient"] == SO_NOIVU)

    resp = await client.post(f"/v1/queue/{dept}/hold", json={"reason": "checking"}, headers=op)
    assert resp.status == 200
    assert (await resp.json())["changed"][0]["state"] == "hold"
    resp = await client.post(f"/v1/queue/{dept}/hold", headers=op)
    err = (await resp.json())["error"]
    assert resp.status == 409 and err["code"] == "wrong_state"
    # the refusal is a whole sentence: the state it is in, and what the action applies to
    assert err["message"] == (f"cannot hold: delivery {dept} is hold; hold applies only to "
                              f"deliveries in queued or deferred")
    assert err["details"] == {"action": "hold", "states": ["hold"],
                              "applies_to": ["queued", "deferred"]}
    resp = await client.post(f"/v1/queue/{dept}/release", headers=op)
    assert (await resp.json())["changed"][0]["state"] == "queued"
    resp = await client.post(f"/v1/queue/{dept}/retry", headers=op)
    assert resp.status == 200
    resp = await client.post(f"/v1/queue/{dept}/drop", headers=op)
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "reason_required"
    resp = await client.post(f"/v1/queue/{dept}/drop", json={"reason": "sent by mistake"}, headers=op)
    assert (await resp.json())["changed"][0]["state"] == "failed"

    view = await (await client.get(f"/v1/envelopes/{a['id']}", headers=auth(MAU_A))).json()
    dep = next(d for d in view["deliveries"] if d["recipient"] == SO_NOIVU)
    assert dep["state"] == "failed" and "sent by mistake" in dep["last_error"]
    # the sender is told, with an edXML status 02 from the hub
    async def notices():
        inbox = await (await client.get("/v1/inbox", headers=auth(MAU_A))).json()
        return inbox if inbox["items"] else None
    inbox = await eventually(notices, what="the failure notice in the sender's inbox")
    assert [i["status_code"] for i in inbox["items"]] == ["02"]
    # every action is in the event log with who did it and why
    shown = await (await client.get(f"/v1/queue/{a['id']}", headers=op)).json()
    ops = [e["detail"] for e in shown["events"] if e["kind"] == "operator"]
    assert [o["action"] for o in ops] == ["hold", "hold", "release", "retry", "drop"]
    assert ops[0]["reason"] == "checking" and ops[-1]["reason"] == "sent by mistake"
    assert all(e["organ"] == f"{HUB_ID}/operator" for e in shown["events"] if e["kind"] == "operator")


async def test_unknown_states_are_listed(client, auth):
    resp = await client.get("/v1/queue?state=queued,held", headers=auth(HUB_ID, "operator"))
    err = (await resp.json())["error"]
    assert resp.status == 422 and err["code"] == "bad_parameter"
    assert err["message"] == ("unknown state(s) held: state is a comma list of queued, active, "
                              "delivered, deferred, failed, hold, corrupt")


async def test_a_refused_action_on_a_message_names_its_states(client, auth):
    a = await queued_to_department(client, auth, 6)
    op = auth(HUB_ID, "operator")
    resp = await client.post(f"/v1/queue/{a['id']}/release", headers=op)
    err = (await resp.json())["error"]
    assert resp.status == 409
    assert err["message"] == (f"cannot release: the deliveries of message {a['id']} are queued; "
                              f"release applies only to deliveries in hold")


async def test_whole_message_actions_and_unknown_ids(client, auth):
    a = await queued_to_department(client, auth, 5)
    op = auth(HUB_ID, "operator")
    body = await (await client.post(f"/v1/queue/{a['id']}/hold", headers=op)).json()
    assert len(body["changed"]) == 2
    # held mailbox deliveries leave the inbox until released
    assert (await (await client.get("/v1/inbox", headers=auth(VP_UBND))).json())["items"] == []
    await client.post(f"/v1/queue/{a['id']}/release", headers=op)
    assert len((await (await client.get("/v1/inbox", headers=auth(VP_UBND))).json())["items"]) == 1
    assert (await client.post("/v1/queue/NOSUCHMESSAGE/hold", headers=op)).status == 404


def cli(data, url, *args):
    out = subprocess.run([sys.executable, "-m", "hub.cli", *args, "--data", str(data), "--url", url],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout, out.stderr


@pytest.mark.slow
def test_queue_cli_against_a_running_hub(live_server):
    base, data, mint = live_server
    req = urllib.request.Request(base + "/v1/envelopes", data=samples.edoc(MAU_A, [SO_NOIVU], 6),
                                 headers={"Authorization": f"Bearer {mint(MAU_A)}", **XML})
    message_id = json.load(urllib.request.urlopen(req))["id"]

    code, out, err = cli(data, base, "queue", "list")
    assert code == 0, err
    assert message_id in out and "queued" in out and "-- 1 deliveries" in out
    code, out, _ = cli(data, base, "queue", "list", "--json", "--route", "provincial")
    assert json.loads(out)[0]["message_id"] == message_id
    code, out, _ = cli(data, base, "queue", "show", message_id)
    assert code == 0 and "sha256" in out and "accepted" in out and SO_NOIVU in out
    code, out, _ = cli(data, base, "queue", "hold", message_id, "--reason", "audit")
    assert code == 0 and "queued -> hold" in out
    code, out, err = cli(data, base, "queue", "hold", message_id)
    assert code == 1 and "wrong_state" in err
    code, out, _ = cli(data, base, "queue", "release", message_id)
    assert "hold -> queued" in out
    code, out, _ = cli(data, base, "queue", "drop", message_id, "--reason", "wrong recipient")
    assert "queued -> failed" in out
    code, out, _ = cli(data, base, "queue", "list", "--state", "failed")
    assert "dropped by" in out and "wrong recipient" in out
