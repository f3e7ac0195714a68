"""The command line, and the README walkthrough run verbatim against a real hub."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from serve import Served
from support import MAU_A, REPO, VP_UBND, free_port


def lienthong(*args, cwd=REPO, check=True):
    out = subprocess.run([sys.executable, "-m", "hub.cli", *args], cwd=cwd, capture_output=True,
                         text=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_help_lists_the_commands():
    out = lienthong("--help").stdout
    for name in ("serve", "submit", "token", "directory", "conf", "queue"):
        assert name in out


def test_directory_list(tmp_path):
    rows = json.loads(lienthong("directory", "list", "--json", "--data", str(tmp_path)).stdout)
    assert len(rows) == 136  # 128 organisations and the 8 peer hubs
    assert sum(r["route"] == "mailbox" for r in rows) == 76
    text = lienthong("directory", "list", "--kind", "department").stdout
    assert text.count("provincial") == 41 and "-- 41 organisations" in text


def test_token_issues_verifiable_tokens(tmp_path):
    from hub.auth import TokenAuthority, load_secret
    token = lienthong("token", MAU_A, "--role", "agency", "--data", str(tmp_path)).stdout.strip()
    ident = TokenAuthority(load_secret(tmp_path)).verify(token)
    assert (ident.organ, ident.role) == (MAU_A, "agency")
    out = lienthong("token", "999.99.99.X99", "--data", str(tmp_path), check=False)
    assert out.returncode == 2 and "not in the directory" in out.stderr
    examples = lienthong("token", "--examples", "--data", str(tmp_path)).stdout
    assert examples.count("lt1.") == 4


def test_conf_prints_effective_values(tmp_path):
    conf = tmp_path / "hub.toml"
    conf.write_text('maximal_lifetime = "2d"\n[adapters.provincial]\nclass = "stub"\n')
    out = lienthong("-c", str(conf), "conf", "--data", str(tmp_path / "d")).stdout
    assert 'maximal_lifetime = "2d"   # changed' in out
    assert f'data_dir = "{tmp_path / "d"}"   # changed' in out
    assert "[adapters.provincial]" in out
    bad = lienthong("conf", "-c", str(tmp_path / "missing.toml"), check=False)
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_conf_prints_toml_that_loads_back_to_the_same_settings(tmp_path):
    import tomllib

    from hub.config import build_settings, load_settings
    # Given: a config with every kind of value, and adapters with awkward names and values
    conf = tmp_path / "hub.toml"
    conf.write_text('dev_keys = false\nmax_xml_depth = 32\nlisten = "127.0.0.1:9555"\n'
                    '[adapters.provincial]\nclass = "stub"\n'
                    '[adapters."peer.lucyen"]\nclass = "edxml_http"\nurl = "https://x/\\"q\\"\\\\"\n'
                    'timeout = 2.5\nretries = [1, 2]\nheaders = { "X-Token" = "é", n = 1 }\n')
    # When: `lienthong conf` prints it
    out = lienthong("-c", str(conf), "conf", "--data", str(tmp_path / "d")).stdout
    # Then: its output is TOML, and builds the very same settings
    doc = tomllib.loads(out)
    assert doc["dev_keys"] is False
    adapters = doc.pop("adapters")
    again = build_settings(doc, adapters)
    first = load_settings(conf, data_dir=str(tmp_path / "d"))
    assert again.raw() == first.raw()
    assert again.adapters == first.adapters
    assert adapters["peer.lucyen"]["url"] == 'https://x/"q"\\'


def test_submit_reports_refusals(live_server, tmp_path):
    base, data, _mint = live_server
    doc = tmp_path / "doc.xml"
    from hub.edxml import samples
    doc.write_bytes(samples.edoc(MAU_A, [VP_UBND], 77))
    out = lienthong("submit", str(doc), "--as", MAU_A, "--data", str(data), "--url", base)
    assert json.loads(out.stdout)["recipients"] == [{"organ": VP_UBND, "route": "mailbox"}]
    out = lienthong("submit", str(doc), "--as", VP_UBND, "--data", str(data), "--url", base, check=False)
    assert out.returncode == 1 and "sender_mismatch" in out.stdout


@pytest.mark.slow
def test_readme_walkthrough_works_verbatim(tmp_path):
    # Given: a fresh directory laid out like the project, with the hub served by `lienthong serve`
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Walkthrough.*?```sh\n(.*?)```", readme, re.S).group(1)
    port = free_port()
    block = block.replace("127.0.0.1:8780", f"127.0.0.1:{port}")
    (tmp_path / ".venv").symlink_to(REPO / ".venv")  # the README calls .venv/bin/lienthong
    (tmp_path / "examples").symlink_to(REPO / "examples")
    server = Served(None, port=port, cwd=tmp_path, log=tmp_path / "serve.log",
                    program=[str(REPO / ".venv/bin/lienthong")])
    try:
        server.start()
        # When: the walkthrough runs as written
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PATH": os.environ["PATH"]})
        assert out.returncode == 0, out.stderr + out.stdout
        # Then: each step answered as the README says
        statuses = [line for line in out.stdout.splitlines() if line.startswith("HTTP ")]
        assert statuses == ["HTTP 202", "HTTP 200", "HTTP 200", "HTTP 200", "HTTP 202",
                            "HTTP 200", "HTTP 200"]
        assert "/tmp/" not in block  # its files come from mktemp
        lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        sent, inbox_b, ack, status, inbox_a, view = lines
        assert sent["recipients"] == [{"organ": VP_UBND, "route": "mailbox"}]
        assert [i["id"] for i in inbox_b["items"]] == [sent["id"]]
        assert "same bytes" in out.stdout
        assert ack["state"] == "delivered"
        assert status["kind"] == "status" and status["recipients"][0]["organ"] == MAU_A
        assert inbox_a["items"][0]["status_code"] == "03"
        assert view["deliveries"][0]["state"] == "delivered"
        assert view["deliveries"][0]["business_status"] == "03"
    finally:
        server.stop()
        server.close()


def test_clients_do_not_invent_a_token_secret(tmp_path):
    out = lienthong("queue", "list", "--data", str(tmp_path / "nowhere"), "--url", "http://127.0.0.1:9",
                    check=False)
    assert out.returncode == 2 and "no token secret" in out.stderr
    assert not (tmp_path / "nowhere").exists()
