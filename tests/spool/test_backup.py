"""``lienthong backup DEST``: a consistent copy of a running hub's data directory."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request

from hub.edxml import samples
from support import MAU_A, REPO, VP_UBND


def lienthong(*args):
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_backup_under_load_opens_and_its_audit_log_verifies(live_server, tmp_path):
    base, data, mint = live_server
    token = mint(MAU_A)
    stop, sent = threading.Event(), []

    def load() -> None:  # submits as fast as one client can, until told to stop
        n = 0
        while not stop.is_set() and n < 2000:
            n += 1
            req = urllib.request.Request(f"{base}/v1/envelopes",
                                         data=samples.edoc(MAU_A, [VP_UBND], n, size=80_000),
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/xml"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                sent.append(resp.status)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while len(sent) < 20:  # Given: the hub is busy accepting
            assert worker.is_alive() and time.monotonic() < deadline
            time.sleep(0.02)
        # When: a backup is taken while the accepts go on
        dest = tmp_path / "copy"
        done = lienthong("backup", str(dest), "--data", str(data))
        during = len(sent)
    finally:
        stop.set()
        worker.join(60)
    assert done.returncode == 0, done.stderr
    assert len(sent) > during or during >= 20  # the hub kept accepting
    # Then: the copy opens, its chain and checkpoints verify, and its payload files came along
    verified = lienthong("audit", "verify", "--db", "--data", str(dest))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.startswith("ok: ")
    assert (dest / "keys" / "hub.pem").is_file() and (dest / "secrets" / "token.key").is_file()
    assert any((dest / "payloads").rglob("*")), "no payload file was copied"
    assert not (dest / "run").exists()
    # And: a second backup into the same place is refused in one line
    again = lienthong("backup", str(dest), "--data", str(data))
    assert again.returncode == 2 and "is not an empty directory" in again.stderr and "Traceback" not in again.stderr
