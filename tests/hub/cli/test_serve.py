"""``lienthong serve`` and how clients find it: DATA/run/serve.json, a port in use."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

from support import REPO, free_port


def lienthong(*args, check=False):
    out = subprocess.run([sys.executable, "-m", "hub.cli", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def wait_for(path, proc, log, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def test_clients_find_the_hub_of_their_data_directory(tmp_path):
    # Given: a hub on a port of its own (port 0: the system picks), and nothing on `listen`
    data, log = tmp_path / "d", tmp_path / "serve.log"
    conf = tmp_path / "hub.toml"
    conf.write_text(f'listen = "127.0.0.1:{free_port()}"\n')
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "hub.cli", "serve", "--data", str(data),
                                 "--listen", "127.0.0.1:0"], cwd=REPO, stdout=out, stderr=out)
    record = data / "run" / "serve.json"
    try:
        wait_for(record, proc, log)
        served = json.loads(record.read_text())
        assert served["pid"] == proc.pid and served["url"].startswith("http://127.0.0.1:")
        assert not served["url"].endswith(":0")
        # When: the clients are given only the data directory (or a config naming it)
        listed = lienthong("queue", "list", "--data", str(data), check=True)
        assert "-- 0 deliveries" in listed.stdout
        conf_d = tmp_path / "d.toml"
        conf_d.write_text(f'data_dir = "{data}"\n')
        assert lienthong("-c", str(conf_d), "audit", "verify", check=True).stdout.startswith("ok:")
        assert lienthong("tail", "--data", str(data), check=True).returncode == 0
        assert lienthong("receipts", "query", "--data", str(data), check=True).returncode == 0
    finally:
        proc.terminate()
        proc.wait(20)
    # Then: a clean stop removes the record, and a client says no hub runs there
    assert not record.exists()
    gone = lienthong("-c", str(conf), "queue", "list", "--data", str(data))
    assert gone.returncode == 2 and "Traceback" not in gone.stderr
    assert f"no hub is running for data directory {data}" in gone.stderr
    assert "tried http://127.0.0.1:" in gone.stderr


def test_a_stale_record_is_named(tmp_path):
    # Given: a record left by a hub that died (its pid is not alive)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    data = tmp_path / "d"
    lienthong("token", "--examples", "--data", str(data), check=True)  # the token secret
    (data / "run").mkdir()
    (data / "run" / "serve.json").write_text(json.dumps(
        {"address": "127.0.0.1:9", "url": "http://127.0.0.1:9", "pid": dead.pid}))
    conf = tmp_path / "hub.toml"
    conf.write_text(f'listen = "127.0.0.1:{free_port()}"\n')
    out = lienthong("-c", str(conf), "queue", "list", "--data", str(data))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"names pid {dead.pid} on 127.0.0.1:9, which is no longer running" in out.stderr


def test_serve_on_a_port_in_use_fails_in_one_line_and_creates_nothing(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        data = tmp_path / "d"
        out = lienthong("serve", "--data", str(data), "--listen", f"127.0.0.1:{port}")
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "listening" not in out.stdout
    assert not data.exists()


def test_bad_token_from_another_hub_says_so(live_server, tmp_path):
    # Given: a hub, and a client pointed at it with another data directory's secret
    base, _data, _mint = live_server
    other = tmp_path / "other"
    lienthong("token", "--examples", "--data", str(other), check=True)
    out = lienthong("queue", "list", "--data", str(other), "--url", base)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "bad_token" in out.stderr and f"secret of {other}" in out.stderr
    assert os.path.exists(other / "secrets" / "token.key")
