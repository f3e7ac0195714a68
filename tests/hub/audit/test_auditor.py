"""The audit log: every event in the hash chain, signed checkpoints, and tampering
with the database behind the hub's back, detected and named."""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree
from support import HUB_ID, MAU_A, SO_NOIVU, VP_UBND, eventually, submit

from hub.edxml import samples
from hub.api.app import HUB, create_app
from hub.audit.auditor import CNS, verify_chain
from hub.directory import default_directory_path
from hub.crypto.keys import fingerprint, issue_cert, make_ca
from spool.chain import event_hash
from spool.sqlite.tx import EVENT_COLUMNS

XML = {"Content-Type": "application/xml"}




async def audit(client, auth, query="", status=200):
    resp = await client.get(f"/v1/audit{query}", headers=auth(HUB_ID, "auditor"))
    assert resp.status == status, await resp.text()
    return await resp.json()


async def verify(client, auth) -> dict:
    resp = await client.get("/v1/audit/verify", headers=auth(HUB_ID, "auditor"))
    assert resp.status == 200  # a broken chain is an answer, not an error
    return await resp.json()


async def flow(client, auth) -> dict:
    """Events of a real flow: accepted, refused, state, status_received, operator.

    Ids: 1 accepted (a), 2 refused, 3 state delivered, 4 accepted (status),
    5 status_received, 6 state hold, 7 operator."""
    a = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND, SO_NOIVU], 1))
    await submit(client, auth, MAU_A, samples.edoc(MAU_A, ["not an id!"], 2), status=422)
    async def refusal_logged():  # the refusal is logged after the 422 went out
        return (await audit(client, auth, "?kind=refused"))["items"]
    await eventually(refusal_logged, what="the refusal in the audit log")
    assert (await client.post(f"/v1/inbox/{a['id']}/ack", headers=auth(VP_UBND))).status == 200
    st = await submit(client, auth, VP_UBND, samples.status(VP_UBND, MAU_A, a["document_id"], "03"))
    op = auth(HUB_ID, "operator")
    shown = await (await client.get(f"/v1/queue/{a['id']}", headers=op)).json()
    dept = next(d["delivery_id"] for d in shown["deliveries"] if d["recipient"] == SO_NOIVU)
    resp = await client.post(f"/v1/queue/{dept}/hold", json={"reason": "checking"}, headers=op)
    assert resp.status == 200
    return {"a": a, "status": st, "dept": dept}


@contextlib.contextmanager
def behind_the_back(hub):
    """A separate connection to the running hub's database (the tamperer's)."""
    conn = sqlite3.connect(hub.spool.db_path, isolation_level=None, timeout=10)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


def rehash(conn, from_id: int) -> None:
    """Recompute every hash from ``from_id`` on, as a careful forger would."""
    prev = conn.execute("SELECT hash FROM events WHERE id = ?", (from_id - 1,)).fetchone()[0]
    for r in conn.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE id >= ? ORDER BY id",
                          (from_id,)).fetchall():
        digest = event_hash(prev, r["id"], r["at"], r["kind"], r["message_id"], r["delivery_id"],
                            r["organ"], r["state"], r["detail"])
        conn.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?", (prev, digest, r["id"]))
        prev = digest


# -- the log through the API ------------------------------------------------------------

async def test_every_event_of_a_flow_is_in_the_audit_log_with_filters(client, auth, hub):
    ids = await flow(client, auth)
    a = ids["a"]["id"]
    body = await audit(client, auth)
    assert [(e["id"], e["kind"]) for e in body["items"]] == [
        (1, "accepted"), (2, "refused"), (3, "state"), (4, "accepted"), (5, "status_received"),
        (6, "state"), (7, "operator")]
    refused = body["items"][1]
    assert refused["organ"] == MAU_A and refused["detail"]["origin"] == "http"
    assert refused["detail"]["code"] and refused["detail"]["message"]
    operator = body["items"][6]
    assert operator["detail"] == {"action": "hold", "reason": "checking", "target": str(ids["dept"]),
                                  "changed": [ids["dept"]]}
    assert operator["organ"] == f"{HUB_ID}/operator"
    assert body["items"][4]["detail"]["status_code"] == "03"
    assert all(e["prev_hash"] and e["hash"] and e["at_iso"].endswith("Z") for e in body["items"])

    async def got(query: str) -> list[int]:
        return [e["id"] for e in (await audit(client, auth, query))["items"]]

    assert await got("?kind=refused") == [2]
    assert await got("?kind=state,operator") == [3, 6, 7]
    assert await got(f"?message_id={a}") == [1, 3, 5, 6, 7]
    assert await got(f"?organ={VP_UBND}") == [3, 4, 5]
    assert await got(f"?organ={VP_UBND}&kind=accepted") == [4]
    assert await got("?after=5") == [6, 7]
    assert await got(f"?since={time.time() + 3600}") == []
    assert await got("?until=1970-01-02T00:00:00Z") == []
    hour_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    assert await got(f"?since={hour_ago.isoformat().replace('+00:00', 'Z')}") == [1, 2, 3, 4, 5, 6, 7]
    assert await got(f"?until={time.time() + 60}&kind=accepted") == [1, 4]
    page = await audit(client, auth, "?after=2&limit=2")
    assert [e["id"] for e in page["items"]] == [3, 4] and "after=4" in page["next"]

    # JSON lines: the export format, every column, the chain checkable as it is
    resp = await client.get("/v1/audit?format=jsonl&limit=1000", headers=auth(HUB_ID, "auditor"))
    lines = [json.loads(line) for line in (await resp.text()).splitlines()]
    assert [e["id"] for e in lines] == list(range(1, 8))
    assert set(lines[0]) == {"id", "at", "kind", "message_id", "delivery_id", "organ", "state",
                             "detail", "prev_hash", "hash"}
    assert isinstance(lines[0]["detail"], dict)
    assert verify_chain(lines, hub_cert=hub.keys.cert).ok

    for bad in ("?format=xml", "?since=yesterday", "?kind=Bad!", "?limit=x"):
        assert (await audit(client, auth, bad, status=422))["error"]["code"] == "bad_parameter"


async def test_roles(client, auth):
    for path in ("/v1/audit", "/v1/audit/verify", "/v1/audit/checkpoints"):
        assert (await client.get(path, headers=auth(MAU_A))).status == 403
        assert (await client.get(path, headers=auth(HUB_ID, "operator"))).status == 403
        assert (await client.get(path)).status == 401
        assert (await client.get(path, headers=auth(HUB_ID, "admin"))).status == 200
        assert (await client.get(path, headers=auth(HUB_ID, "auditor"))).status == 200


async def test_verify_ok(client, auth):
    await flow(client, auth)
    report = await verify(client, auth)
    assert report["ok"] is True and report["first_bad_id"] is None and report["reason"] is None
    assert (report["checked"], report["head_id"]) == (7, 7)
    assert report["head_hash"] == (await audit(client, auth))["items"][-1]["hash"]


# -- tampering behind the hub's back -------------------------------------------------------

def edit_detail(conn) -> None:
    # the refusal's reason is rewritten; its hash is left alone
    conn.execute("UPDATE events SET detail = replace(detail, 'http', 'adapter') WHERE id = 2")


def delete_one(conn) -> None:
    conn.execute("DELETE FROM events WHERE id = 3")


def insert_forged(conn) -> None:
    # ids 3.. move up by one and a forged #3, correctly linked to #2, takes the gap
    conn.execute("UPDATE events SET id = -id WHERE id >= 3")
    conn.execute("UPDATE events SET id = 1 - id WHERE id < 0")
    prev = conn.execute("SELECT hash FROM events WHERE id = 2").fetchone()[0]
    at = conn.execute("SELECT at FROM events WHERE id = 2").fetchone()[0]
    detail = json.dumps({"reason": "never happened", "route": "mailbox"}, sort_keys=True,
                        separators=(",", ":"))
    digest = event_hash(prev, 3, at, "state", None, None, VP_UBND, "failed", detail)
    conn.execute(f"INSERT INTO events ({EVENT_COLUMNS}) VALUES (3,?,?,?,?,?,?,?,?,?)",
                 (at, "state", None, None, VP_UBND, "failed", detail, prev, digest))


def swap_two(conn) -> None:
    conn.execute("UPDATE events SET id = -1 WHERE id = 3")
    conn.execute("UPDATE events SET id = 3 WHERE id = 4")
    conn.execute("UPDATE events SET id = 4 WHERE id = -1")


@pytest.mark.parametrize("tamper,first_bad,words", [
    (edit_detail, 2, "entry #2 was edited"),
    (delete_one, 4, "entry #3 is missing (removed): #4 follows #2"),
    (insert_forged, 3, "entry #3 was inserted"),
    (swap_two, 3, "entries #3 and #4 are swapped"),
], ids=["edited", "removed", "inserted", "reordered"])
async def test_tampering_is_detected_and_the_first_bad_entry_named(client, auth, hub, tamper,
                                                                    first_bad, words):
    # Given: a verified log of a real flow
    await flow(client, auth)
    assert (await verify(client, auth))["ok"]
    # When: someone changes the database while the hub runs
    with behind_the_back(hub) as conn:
        tamper(conn)
    # Then: the hub's own verification names the first bad entry and why
    report = await verify(client, auth)
    assert report["ok"] is False
    assert report["first_bad_id"] == first_bad, report
    assert words in report["reason"], report["reason"]
    # and the last entry that still holds is where the report stops
    assert report["checked"] == report["head_id"] == (2 if tamper is delete_one else first_bad - 1)


async def test_a_consistent_rewrite_is_caught_by_the_signed_checkpoint(client, auth, hub):
    # Given: a signed checkpoint of the head (#7)
    await flow(client, auth)
    cp = await client.app[HUB].auditor.checkpoint()
    assert cp["event_id"] == 7
    # When: a forger edits #2 and recomputes every hash after it, so the chain is whole
    with behind_the_back(hub) as conn:
        edit_detail(conn)
        rehash(conn, 2)
        rows = [dict(r) for r in conn.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY id")]
    assert verify_chain(rows).ok  # the chain alone cannot tell
    # Then: the checkpoint no longer matches, and says so
    report = await verify(client, auth)
    assert report["ok"] is False and report["first_bad_id"] == 7
    assert "differs from checkpoint #1" in report["reason"]
    assert "rewritten somewhere in #1..#7" in report["reason"]


async def test_a_cut_tail_and_an_edited_checkpoint_are_detected(client, auth, hub):
    await flow(client, auth)
    await client.app[HUB].auditor.checkpoint()
    with behind_the_back(hub) as conn:
        conn.execute("DELETE FROM events WHERE id >= 6")
    report = await verify(client, auth)
    assert (report["ok"], report["first_bad_id"]) == (False, 6)
    assert "the log ends at #5 but checkpoint #1 covers #7" in report["reason"]

    with behind_the_back(hub) as conn:
        xml = conn.execute("SELECT xml FROM checkpoints WHERE id = 1").fetchone()[0]
        conn.execute("UPDATE checkpoints SET xml = ? WHERE id = 1",
                     (xml.replace(b"<EventId>7<", b"<EventId>5<"),))
    report = await verify(client, auth)
    assert report["ok"] is False and "checkpoint #1: bad signature" in report["reason"]


# -- checkpoints ---------------------------------------------------------------------------

async def test_scheduled_checkpoint_signs_the_head_only_when_the_log_grew(client, auth, hub, settings):
    auditor = client.app[HUB].auditor
    job = auditor.scheduler.get_job("checkpoint")
    assert job.trigger.interval.total_seconds() == settings.checkpoint_interval
    assert await job.func() is None  # an empty log: nothing to sign
    await flow(client, auth)
    first = await job.func()
    assert (first["id"], first["event_id"]) == (1, 7)
    assert await job.func() is None  # nothing new since
    await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 9))
    second = await job.func()
    assert (second["id"], second["event_id"]) == (2, 8)

    body = await (await client.get("/v1/audit/checkpoints", headers=auth(HUB_ID, "auditor"))).json()
    assert [(c["id"], c["event_id"]) for c in body["items"]] == [(1, 7), (2, 8)]
    root = etree.fromstring(body["items"][1]["xml"].encode())
    assert root.tag == f"{{{CNS}}}Checkpoint"
    assert root.findtext(f"{{{CNS}}}EventId") == "8"
    assert root.findtext(f"{{{CNS}}}HeadHash") == second["head_hash"]
    assert root.findtext(f"{{{CNS}}}HubId") == HUB_ID
    assert root.findtext(f"{{{CNS}}}Count") == "8"
    report = await verify(client, auth)
    assert report["ok"] and report["checkpoints_ok"] == 2


def read_db(db_path):
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        events = [dict(r) for r in conn.execute(f"SELECT {EVENT_COLUMNS} FROM events ORDER BY id")]
        cps = [dict(r) for r in conn.execute("SELECT * FROM checkpoints ORDER BY id")]
    finally:
        conn.close()
    return events, cps


async def test_checkpoint_at_shutdown_covers_the_last_event(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings()))
    hub = client.app[HUB]
    auth = lambda organ, role="agency": {
        "Authorization": f"Bearer {hub.tokens.issue(organ, role)}"}
    await flow(client, auth)
    cert, db_path = hub.keys.cert, hub.spool.db_path
    await client.close()  # the app's cleanup: queue manager, then the checkpoint, then the spool

    events, cps = read_db(db_path)
    assert len(cps) == 1 and cps[0]["event_id"] == events[-1]["id"] == 7
    assert cps[0]["head_hash"] == events[-1]["hash"]
    report = verify_chain(events, cps, hub_cert=cert)
    assert report.ok and report.checkpoints_ok == 1, report


def new_hub_key(tmp_path):
    ca_key, ca_cert = make_ca("another CA")
    key, cert = issue_cert(ca_key, ca_cert, HUB_ID)
    key_file, cert_file = tmp_path / "hub2.key", tmp_path / "hub2.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_file, cert_file, cert


async def test_key_and_directory_changes_are_logged_on_restart(aiohttp_client, make_settings,
                                                               tmp_path, dev_keys):
    # Given: a hub that ran once (a fresh spool records its baseline silently)
    first = await aiohttp_client(create_app(make_settings()))
    assert (await first.app[HUB].auditor.checkpoint()) is None
    hub = first.app[HUB]
    await hub.spool.write(lambda tx: tx.event("operator", organ=HUB_ID, action="note", reason="x"))
    await first.close()  # shutdown checkpoint #1, signed by the first key

    # When: it restarts with another key and an edited directory
    key_file, cert_file, new_cert = new_hub_key(tmp_path)
    directory = tmp_path / "directory.toml"
    directory.write_text(default_directory_path().read_text(encoding="utf-8").replace(
        'name = "UBND thị trấn Mậu A"', 'name = "UBND thị trấn Mậu A (mới)"'), encoding="utf-8")
    changed = make_settings(hub_key_file=str(key_file), hub_cert_file=str(cert_file),
                            directory=str(directory))
    second = await aiohttp_client(create_app(changed))
    auth = lambda organ, role="agency": {
        "Authorization": f"Bearer {second.app[HUB].tokens.issue(organ, role)}"}

    # Then: both changes are in the log, with old and new values
    items = (await audit(second, auth))["items"]
    assert [e["kind"] for e in items] == ["operator", "keys_changed", "directory_changed"]
    old_fp = fingerprint(x509.load_pem_x509_certificate((dev_keys / "hub.pem").read_bytes()))
    keys = items[1]["detail"]
    assert (keys["old"], keys["new"]) == (old_fp, fingerprint(new_cert))
    assert items[1]["organ"] == HUB_ID and HUB_ID in keys["subject"]
    dirs = items[2]["detail"]
    assert dirs["changed"] == [MAU_A] and dirs["added"] == dirs["removed"] == []
    assert dirs["old"] != dirs["new"] and dirs["organs"] == 136

    # And: the old key's checkpoint is skipped, not failed; new ones verify
    report = await verify(second, auth)
    assert report["ok"] and (report["checkpoints_ok"], report["checkpoints_skipped"]) == (0, 1)
    await second.app[HUB].auditor.checkpoint()
    report = await verify(second, auth)
    assert report["ok"] and (report["checkpoints_ok"], report["checkpoints_skipped"]) == (1, 1)
    await second.close()

    # And: a restart with nothing changed adds nothing; with both certs all checkpoints verify
    third = await aiohttp_client(create_app(changed))
    assert third.app[HUB].spool.last_event_id == 3
    await third.close()
    events, cps = read_db(third.app[HUB].spool.db_path)
    old_cert = x509.load_pem_x509_certificate((dev_keys / "hub.pem").read_bytes())
    report = verify_chain(events, cps, hub_cert=[old_cert, new_cert])
    assert report.ok and report.checkpoints_ok == 2 and report.checkpoints_skipped == 0
