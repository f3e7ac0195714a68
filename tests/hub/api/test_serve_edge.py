"""The edge of a real ``lienthong serve`` process: its log, its connections, its limits,
its files, and the CLI printing hostile text from it.

Every test starts the hub as a child process on 127.0.0.1 with a small
hub.toml (short timeouts, a low connection cap, low rate limits), talks to it
over raw sockets or HTTP, and reads what it wrote.  A fake peer hub (a real
aiohttp server in the test) refuses deliveries with hostile error text.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from hub.auth import TokenAuthority, load_secret
from hub.edxml import samples
from support import MAU_A, REPO, SO_NOIVU, VP_UBND, AN_BINH, free_port

FORGED = "2026-12-01 00:00:00,000 ERROR hub: FORGED LINE"
#: Every kind of text a terminal or a log reader acts on.
HOSTILE = f"Ký\n{FORGED}\rOVER\x1b]0;pwned\x07\x1b[2J\u009b31m\u202egnp.exe\u2066x\u2069"


class Served:
    """``lienthong serve -c hub.toml --data D`` as a child process."""

    def __init__(self, tmp: Path, dev_keys: Path, config: str = "") -> None:
        self.data = tmp / "var"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.conf = tmp / "hub.toml"
        self.conf.write_text(
            f'cpu_workers = 0\nhub_key_file = "{dev_keys / "hub.key"}"\n'
            f'hub_cert_file = "{dev_keys / "hub.pem"}"\ntrust_ca_file = "{dev_keys / "ca.pem"}"\n'
            + config, encoding="utf-8")
        self.log_path = tmp / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Served":
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "serve", "-c", str(self.conf), "--data", str(self.data),
             "--listen", f"127.0.0.1:{self.port}"], cwd=REPO, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(self.base + "/healthz", timeout=1).read()
                break
            except OSError:
                assert self.proc.poll() is None and time.monotonic() < deadline, self.log()
                time.sleep(0.1)
        self.mint = TokenAuthority(load_secret(self.data)).issue
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def call(self, method: str, path: str, token: str | None = None, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict, dict]:
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={**(headers or {})})
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            req.add_header("Content-Type", "application/xml")
        try:
            with urllib.request.urlopen(req, timeout=20) as resp:
                return resp.status, json.loads(resp.read() or b"null"), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null"), dict(exc.headers)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hub.cli", *args, "--data", str(self.data),
                               "-c", str(self.conf), "--url", self.base],
                              cwd=REPO, capture_output=True, text=True, timeout=60)


@pytest.fixture
def served(tmp_path, dev_keys):
    servers: list[Served] = []

    def make(config: str = "") -> Served:
        (tmp_path / f"hub{len(servers)}").mkdir()
        server = Served(tmp_path / f"hub{len(servers)}", dev_keys, config)
        servers.append(server)
        return server.start()
    yield make
    for server in servers:
        server.stop()


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def log_lines_start_with_a_timestamp(text: str) -> list[str]:
    """The lines of the log that start a record (not a traceback's indented lines)."""
    return [line for line in text.splitlines() if line and not line.startswith("  ")]


# -- a peer that refuses with hostile text -----------------------------------------

@pytest.fixture
async def hostile_peer(aiohttp_server):
    async def refuse(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=400, text=f"refused: {HOSTILE}")
    app = web.Application()
    app.router.add_post("/v1/envelopes", refuse)
    return await aiohttp_server(app)


def peer_config(peer) -> str:  # type: ignore[no-untyped-def]
    return (f'[adapters.provincial]\nclass = "edxml_http"\n'
            f'url = "http://127.0.0.1:{peer.port}/v1/envelopes"\n')


# -- 4 and 5: no field forges a log line or steers a terminal -----------------------

async def test_hostile_text_neither_forges_log_lines_nor_reaches_the_terminal_raw(served, hostile_peer):
    # Given: a hub whose provincial route refuses with hostile error text
    hub = await asyncio.to_thread(served, peer_config(hostile_peer))
    # When: Mậu A sends a document with a hostile subject to a department (refused by the peer)
    raw = samples.edoc(MAU_A, [SO_NOIVU], 91, subject=HOSTILE.replace("\x1b", "").replace("\x07", ""))
    status, sent, _ = await asyncio.to_thread(hub.call, "POST", "/v1/envelopes", hub.mint(MAU_A), raw)
    assert status == 202, sent
    # and a client sends a header and a token full of control characters
    head = (b"GET /v1/inbox HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer lt1.\xe2\x80\xae\x1b[31m.\xc2\x9b\r\n\r\n")
    await asyncio.to_thread(_exchange, hub.port, head)

    def refused_in_log() -> bool:
        return "refused by" in hub.log()
    await asyncio.to_thread(wait_for, refused_in_log, 20, "the refusal was never logged")

    # Then: the log has the peer's text, escaped, and no forged line
    log = hub.log()
    assert "FORGED LINE" in log
    for line in log_lines_start_with_a_timestamp(log):
        assert not line.startswith("2026-12-01 00:00:00,000 ERROR"), line
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ", line) or \
            line.startswith("lienthong-hub listening"), line
    assert "\x1b" not in log and "\x9b" not in log and "\u202e" not in log and "\r" not in log
    assert "\\n2026-12-01 00:00:00,000 ERROR hub: FORGED LINE\\rOVER\\x1b]0;pwned\\x07" in log

    # And: every CLI view of that text shows it escaped, on its own line
    outputs = {}
    outputs["show"] = (await asyncio.to_thread(hub.cli, "queue", "show", sent["id"])).stdout
    outputs["show_json"] = (await asyncio.to_thread(hub.cli, "queue", "show", sent["id"], "--json")).stdout
    outputs["list"] = (await asyncio.to_thread(hub.cli, "queue", "list", "--state", "failed")).stdout
    outputs["tail"] = (await asyncio.to_thread(hub.cli, "tail", "--text")).stdout
    outputs["tail_json"] = (await asyncio.to_thread(hub.cli, "tail", "--json")).stdout
    outputs["receipts"] = (await asyncio.to_thread(hub.cli, "receipts", "query", "--json")).stdout
    outputs["audit"] = (await asyncio.to_thread(hub.cli, "audit", "export")).stdout
    for name, out in outputs.items():
        assert out, name
        for bad in ("\x1b", "\x07", "\r", "\x9b", "\u202e", "\u2066", "\u2069"):
            assert bad not in out, (name, repr(bad), out[:2000])
        assert not any(line.startswith(FORGED) for line in out.splitlines()), (name, out)
    assert "FORGED LINE" in outputs["show"] and "\\u202e" in outputs["show"]
    assert "\\x1b]0;pwned" in outputs["show"]  # the peer's error, as the last error
    # JSON stays JSON and means the same text
    body = json.loads(outputs["show_json"])
    assert body["subject"].startswith("Ký\n2026") and "\u202e" in body["subject"]
    assert "\x1b]0;pwned" in body["deliveries"][0]["last_error"]


def _exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


# -- 9: a dropped upload is INFO, not an ERROR with a traceback ---------------------------

def test_a_client_that_drops_an_upload_half_way_is_an_info_line(served):
    hub = served()
    head = (f"POST /v1/envelopes HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
            f"Authorization: Bearer {hub.mint(MAU_A)}\r\nContent-Length: 100000\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
        s.sendall(head + b"<edXML>" + b" " * 2000)
    wait_for(lambda: "disconnected" in hub.log(), 10, hub.log())
    assert " ERROR " not in hub.log() and "Traceback" not in hub.log(), hub.log()
    assert hub.call("GET", "/healthz")[0] == 200


# -- 10: timeouts and the connection cap ------------------------------------------------

GUARD = ('header_read_timeout = "1s"\nidle_timeout = "2s"\nbody_read_timeout = "1s"\n'
         'min_body_rate = "1KiB"\nmax_connections = 8\n')


def _closed_within(sock: socket.socket, limit: float, trickle: bytes = b"") -> float:
    """Seconds until the server closes ``sock`` (sending ``trickle`` a byte every 0.2 s)."""
    start = time.monotonic()
    sock.settimeout(0.2)
    sent = 0
    while time.monotonic() - start < limit:
        if sent < len(trickle):
            try:
                sock.send(trickle[sent:sent + 1])
            except OSError:
                return time.monotonic() - start
            sent += 1
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return time.monotonic() - start
        if not data:
            return time.monotonic() - start
    raise AssertionError(f"still open after {limit}s")


def test_a_slow_loris_header_trickle_is_closed_within_the_header_timeout(served):
    hub = served(GUARD)
    with socket.create_connection(("127.0.0.1", hub.port)) as s:
        took = _closed_within(s, 8, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100)
    assert took < 3, took
    # a connection that sends nothing at all is closed the same way
    with socket.create_connection(("127.0.0.1", hub.port)) as s:
        assert _closed_within(s, 8) < 3


def test_an_idle_keepalive_connection_is_closed(served):
    hub = served(GUARD)
    with socket.create_connection(("127.0.0.1", hub.port)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        took = _closed_within(s, 10)
    assert 1 <= took < 4, took


def test_a_body_trickled_a_byte_at_a_time_gets_408(served):
    hub = served(GUARD)
    head = (f"POST /v1/envelopes HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\n"
            f"Authorization: Bearer {hub.mint(MAU_A)}\r\nContent-Length: 5000\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", hub.port)) as s:
        s.sendall(head)
        s.settimeout(0.2)
        start, answer = time.monotonic(), b""
        while time.monotonic() - start < 10 and b"\r\n\r\n" not in answer:
            try:
                s.send(b"<")
                answer += s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request_timeout" in answer or b"Content-Length" in answer
    assert time.monotonic() - start < 4


def test_connections_over_the_cap_are_refused_and_service_resumes(served):
    hub = served(GUARD)
    idle = [socket.create_connection(("127.0.0.1", hub.port)) for _ in range(8)]
    try:
        time.sleep(0.3)  # all 8 accepted by the hub
        with socket.create_connection(("127.0.0.1", hub.port)) as extra:
            extra.settimeout(5)
            answer = extra.recv(65536)
            assert answer.startswith(b"HTTP/1.1 503") and b"too_many_connections" in answer, answer
            assert extra.recv(65536) == b""  # and closed
        # the idle ones are dropped by the header timeout; then a normal client is served
        for s in idle:
            _closed_within(s, 5)
        assert hub.call("GET", "/healthz")[0] == 200
    finally:
        for s in idle:
            s.close()


# -- 11: rate limits, and the audit log under a flood ----------------------------------

def test_a_flood_from_one_identity_is_limited_and_barely_touches_another(served):
    hub = served('rate_limit_per_identity = 20\nrate_limit_identity_burst = 20\n'
                 'rate_limit_per_address = 0\nrefusal_audit_window = "60s"\nrefusal_audit_burst = 5\n')
    flooder, normal = hub.mint(AN_BINH), hub.mint(MAU_A)
    # a cheap refusal: An Bình submits a document that claims to be from Mậu A
    forged = samples.edoc(MAU_A, [VP_UBND], 5)
    codes: dict[int, int] = {}
    normal_ok = normal_tried = 0
    stop = time.monotonic() + 3

    def flood() -> None:
        while time.monotonic() < stop:
            status, body, headers = hub.call("POST", "/v1/envelopes", flooder, forged)
            codes[status] = codes.get(status, 0) + 1
            if status == 429:
                assert body["error"]["code"] == "rate_limited" and int(headers["Retry-After"]) >= 1

    import threading
    threads = [threading.Thread(target=flood) for _ in range(4)]
    for t in threads:
        t.start()
    n = 0
    while time.monotonic() < stop:
        n += 1
        normal_tried += 1
        status, body, _ = hub.call("GET", "/v1/inbox", normal)
        normal_ok += status == 200
        time.sleep(0.1)  # 10 requests a second: under its limit
    for t in threads:
        t.join()
    assert codes.get(429, 0) > codes.get(403, 0) > 0, codes
    assert codes.get(403, 0) <= 20 + 3 * 20 + 5, codes  # burst + rate × time (and a little)
    assert normal_ok >= 0.9 * normal_tried, (normal_ok, normal_tried)
    # the audit log: at most refusal_audit_burst individual entries, the rest summarised at stop
    hub.stop()
    out = hub.cli("audit", "export", "--db") if False else None
    del out
    import sqlite3
    conn = sqlite3.connect(hub.data / "spool.db")
    rows = conn.execute("SELECT kind, detail FROM events WHERE kind LIKE 'refused%'").fetchall()
    conn.close()
    singles = [r for r in rows if r[0] == "refused"]
    summaries = [json.loads(r[1]) for r in rows if r[0] == "refused_summary"]
    assert len(singles) == 5, rows
    assert sum(s["count"] for s in summaries) + 5 == codes[403], (summaries, codes)


def test_a_relay_identity_has_its_own_limit_not_one_agencys(served):
    # Given: an agency limit of 10 at once, and a relay limit well above it
    hub = served('rate_limit_per_identity = 1\nrate_limit_identity_burst = 10\n'
                 'rate_limit_per_relay = 1\nrate_limit_relay_burst = 60\n'
                 'rate_limit_per_address = 0\n')
    # the provincial platform's relay (it speaks for the departments, not for Mậu A)
    relay = hub.mint("000.00.00.H63", "relay", route="provincial")
    agency = hub.mint(AN_BINH)
    forged = samples.edoc(MAU_A, [VP_UBND], 6)   # a cheap refusal for both
    # When: each sends 40 at once
    relay_codes = [hub.call("POST", "/v1/envelopes", relay, forged)[0] for _ in range(40)]
    agency_codes = [hub.call("POST", "/v1/envelopes", agency, forged)[0] for _ in range(40)]
    # Then: the relay is refused on the merits, the agency is limited after its 10
    assert set(relay_codes) == {403}, relay_codes
    assert agency_codes.count(403) <= 12 and agency_codes.count(429) >= 28, agency_codes
    # and the relay's own limit holds too: past its burst of 60, it is 429
    more = [hub.call("POST", "/v1/envelopes", relay, forged)[0] for _ in range(40)]
    assert more.count(429) >= 15, more


# -- 13: the data directory is private ------------------------------------------------

def test_everything_under_the_data_directory_is_private(served):
    hub = served()
    big = samples.edoc(MAU_A, [VP_UBND], 3, size=200_000)  # a payload file, not inline
    for raw in (samples.edoc(MAU_A, [VP_UBND], 2), big):
        assert hub.call("POST", "/v1/envelopes", hub.mint(MAU_A), raw)[0] == 202
    wait_for(lambda: (hub.data / "spool.db-wal").exists(), 5, "no WAL")
    hub.stop()
    checked = 0
    for path in [hub.data, *hub.data.rglob("*")]:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        if path.is_dir():
            assert mode == 0o700, (path, oct(mode))
        elif path.suffix == ".pem":
            assert mode & 0o077 & ~0o040 == 0, (path, oct(mode))  # certificates 0640 at most
        else:
            assert mode == 0o600, (path, oct(mode))
        checked += 1
    names = {p.name for p in hub.data.rglob("*")}
    assert {"spool.db", "token.key", "payloads", "secrets"} <= names, names
    assert any(p.is_file() and len(p.name) == 64 for p in (hub.data / "payloads").rglob("*"))
    assert checked >= 8
