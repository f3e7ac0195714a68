"""Cleanup's CPU work in worker processes (cpu_workers > 0) gives the same answers."""
from __future__ import annotations

import pickle

from hub import samples
from hub.api import HUB, create_app
from hub.errors import HubError, ValidationError
from hub.receipts_xml import verify_receipt
from hub.signing import sign_envelope
from support import MAU_A, VP_UBND

XML = {"Content-Type": "application/xml"}


def test_errors_keep_code_and_details_across_processes():
    err = ValidationError("bad", code="bad_date", details={"line": 3})
    back = pickle.loads(pickle.dumps(err))
    assert (type(back), back.code, back.details, back.http_status) == (ValidationError, "bad_date", {"line": 3}, 422)
    assert pickle.loads(pickle.dumps(HubError("x", http_status=418))).http_status == 418


async def test_worker_processes_accept_verify_and_refuse(aiohttp_client, make_settings, dev_keys):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    client = await aiohttp_client(create_app(make_settings(cpu_workers=1)))
    hub = client.app[HUB]
    key = serialization.load_pem_private_key((dev_keys / "orgs" / f"{MAU_A}.key").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((dev_keys / "orgs" / f"{MAU_A}.pem").read_bytes())
    headers = {"Authorization": f"Bearer {hub.tokens.issue(MAU_A)}", **XML}
    raw = sign_envelope(samples.edoc(MAU_A, [VP_UBND], 1), key, cert)
    resp = await client.post("/v1/envelopes", data=raw, headers=headers)
    body = await resp.json()
    assert resp.status == 202, body
    env = await hub.spool.envelope(body["id"])
    assert env["signature"]["result"] == "valid"
    rows = await hub.spool._all("SELECT xml FROM receipts WHERE id = ?", (body["receipt_id"],))
    assert verify_receipt(bytes(rows[0]["xml"]), hub.keys.cert).message_id == body["id"]
    # refusals made in a worker arrive with their code and path
    resp = await client.post("/v1/envelopes", data=raw.replace(b"2026/11/20</edXML:PromulgationDate>",
                                                                b"2026/02/30</edXML:PromulgationDate>"),
                             headers=headers)
    body = await resp.json()
    assert resp.status == 422 and body["error"]["code"] == "bad_date"
    assert body["error"]["details"]["path"].endswith("PromulgationDate")


def test_workers_die_with_a_killed_hub(live_server):
    # Given: a live hub with its default worker pool
    import os
    import signal
    import subprocess
    import time
    base, data, _mint = live_server
    hub_pid = int(subprocess.run(["pgrep", "-f", "--", f"serve --data {data}"], capture_output=True,
                                 text=True).stdout.split()[0])
    children = subprocess.run(["pgrep", "-P", str(hub_pid)], capture_output=True, text=True).stdout.split()
    workers = [int(c) for c in children
               if "spawn_main" in open(f"/proc/{c}/cmdline", "rb").read().decode(errors="replace")]
    assert workers, "the hub runs cleanup workers by default"
    # When: the hub is killed with SIGKILL
    os.kill(hub_pid, signal.SIGKILL)
    # Then: its workers go too
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(os.path.exists(f"/proc/{w}") and
                                              "Z" not in open(f"/proc/{w}/stat").read().split()[2]
                                              for w in workers):
        time.sleep(0.1)
    assert not [w for w in workers if os.path.exists(f"/proc/{w}")
                and open(f"/proc/{w}/stat").read().split()[2] != "Z"]
