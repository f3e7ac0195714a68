"""Cleanup's CPU work in worker processes (cpu_workers > 0) gives the same answers."""
from __future__ import annotations

import pickle

from hub.edxml import samples
from hub.api.app import HUB, create_app
from hub.errors import HubError, ValidationError
from hub.receipts.format import verify_receipt
from hub.crypto.signing import sign_envelope
from support import MAU_A, VP_UBND, eventually

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
    rows = [await hub.spool.receipt(body["receipt_id"])]
    assert verify_receipt(bytes(rows[0]["xml"]), hub.keys.cert).message_id == body["id"]
    # refusals made in a worker arrive with their code and path
    resp = await client.post("/v1/envelopes", data=raw.replace(b"2026/11/20</edXML:PromulgationDate>",
                                                                b"2026/02/30</edXML:PromulgationDate>"),
                             headers=headers)
    body = await resp.json()
    assert resp.status == 422 and body["error"]["code"] == "bad_date"
    assert body["error"]["details"]["path"].endswith("PromulgationDate")


async def test_workers_die_with_a_killed_hub(live_hub):
    # Given: a live hub with its default worker pool
    import os
    import signal
    import subprocess
    hub_pid = live_hub.pid
    children = subprocess.run(["pgrep", "-P", str(hub_pid)], capture_output=True, text=True).stdout.split()
    workers = [int(c) for c in children
               if "spawn_main" in open(f"/proc/{c}/cmdline", "rb").read().decode(errors="replace")]
    assert workers, "the hub runs cleanup workers by default"
    # When: the hub is killed with SIGKILL
    os.kill(hub_pid, signal.SIGKILL)
    # Then: its workers go too
    await eventually(lambda: not alive(workers), timeout=10, what="the workers of a killed hub exit")


def alive(pids) -> list:
    """Those of ``pids`` still running (a zombie has ended)."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split()[2] != "Z":
                    out.append(pid)
        except FileNotFoundError:
            pass
    return out


async def test_a_dead_worker_fails_its_calls_and_is_replaced():
    import asyncio
    import os
    import signal
    import threading
    import time

    import pytest

    from hub.cleanup.workers import WorkerLost, WorkerPool
    pool = WorkerPool(1, int, (0,), name="test")
    await pool.start()
    try:
        pid = await pool.call(os.getpid)
        assert pid != os.getpid()
        # answers and exceptions cross with their types; an unpicklable answer is named
        assert await pool.call(divmod, 7, 2) == (3, 1)
        with pytest.raises(ZeroDivisionError):
            await pool.call(divmod, 1, 0)
        with pytest.raises(RuntimeError, match="lock"):
            await pool.call(threading.Lock)
        # Given: a call in flight; When: its worker is killed
        slow = asyncio.ensure_future(pool.call(time.sleep, 30))
        await asyncio.sleep(0.2)
        os.kill(pid, signal.SIGKILL)
        # Then: the call fails with a retryable 503 and another worker answers the next one
        with pytest.raises(WorkerLost) as lost:
            await asyncio.wait_for(slow, 10)
        assert lost.value.http_status == 503
        new_pid = await asyncio.wait_for(pool.call(os.getpid), 30)
        assert new_pid not in (pid, os.getpid()) and pool.restarts == 1
    finally:
        await pool.close()
    # closing the pool ends its workers
    await eventually(lambda: not os.path.exists(f"/proc/{new_pid}"), timeout=10,
                     what="a closed pool's worker exits")


async def test_sigterm_to_the_process_group_twice_stops_the_hub_cleanly(tmp_path):
    # Given: a hub in a process group of its own, with its workers (as under
    # systemd, or `timeout`, which signals the process and then its group)
    import os
    import signal
    import subprocess
    import time

    from serve import Served
    server = Served(tmp_path / "d", log=tmp_path / "server.log", health="/readyz",
                    new_session=True)
    try:
        server.start()
        workers = subprocess.run(["pgrep", "-P", str(server.pid)], capture_output=True,
                                 text=True).stdout.split()
        assert workers
        # When: SIGTERM reaches every process of the group, twice
        os.killpg(server.pid, signal.SIGTERM)
        time.sleep(0.05)  # the second signal a moment after the first, as `timeout` sends it
        os.killpg(server.pid, signal.SIGTERM)
        # Then: one orderly shutdown; no traceback; the workers are gone
        assert server.proc.wait(20) == 0, server.log_text()
    finally:
        server.close()
    text = server.log_text()
    assert "Traceback" not in text and "exited (code" not in text, text
    assert "stopping" in text
    # multiprocessing's resource tracker leaves on its own
    await eventually(lambda: not alive(workers), timeout=10, what="the workers exit")


async def test_a_worker_that_cannot_start_is_retried_with_a_growing_delay():
    import os
    import time

    import pytest

    from hub.cleanup.workers import WorkerLost, WorkerPool
    pool = WorkerPool(1, int, ("not a number",), name="test")  # its initializer raises
    await pool.start()
    try:
        for _ in range(3):
            with pytest.raises(WorkerLost):
                await pool.call(os.getpid)
        assert pool.restarts >= 2 and pool._delay >= 1.0  # not restarted in a loop
    finally:
        t0 = time.monotonic()
        await pool.close()
        assert time.monotonic() - t0 < 5  # a restart waiting out its delay does not hold it up
