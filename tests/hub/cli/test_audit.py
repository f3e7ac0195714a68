"""``lienthong audit export`` and ``audit verify``: against a real hub, a file, a database."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

from support import AN_BINH, MAU_A, REPO, VP_UBND

from hub.edxml import samples
from hub.api.app import HUB, create_app
from hub.cli.main import main as cli_main


def lienthong(*args):
    return subprocess.run([sys.executable, "-m", "hub.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)


def post(base, token, raw) -> int:
    req = urllib.request.Request(f"{base}/v1/envelopes", data=raw, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/xml"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def rewrite(src, dst, change) -> None:
    """Copy an export, passing each parsed line through ``change`` (None drops it)."""
    out = []
    for line in src.read_text(encoding="utf-8").splitlines():
        obj = change(json.loads(line))
        if obj is not None:
            out.append(json.dumps(obj, ensure_ascii=False))
    dst.write_text("\n".join(out) + "\n", encoding="utf-8")


def test_export_then_verify_offline_and_from_the_database(live_server, tmp_path):
    base, data, mint = live_server
    # Given: a hub that accepted two documents and refused one
    assert post(base, mint(MAU_A, "agency"), samples.edoc(MAU_A, [VP_UBND], 1)) == 202
    assert post(base, mint(AN_BINH, "agency"), samples.edoc(MAU_A, [VP_UBND], 2)) == 403
    assert post(base, mint(AN_BINH, "agency"), samples.edoc(AN_BINH, [VP_UBND], 3)) == 202

    # When: an auditor exports the log
    export = tmp_path / "audit.jsonl"
    done = lienthong("audit", "export", "-o", str(export), "--data", str(data), "--url", base)
    assert done.returncode == 0, done.stderr
    assert "exported 3 entries" in done.stderr
    lines = [json.loads(line) for line in export.read_text(encoding="utf-8").splitlines()]
    assert lines[0]["export"]["format"] == "lienthong-audit/1" and lines[0]["export"]["complete"]
    assert [e["kind"] for e in lines[1:]] == ["accepted", "refused", "accepted"]

    # Then: the file verifies offline against the hub's certificate
    done = lienthong("audit", "verify", str(export), "--data", str(data))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"ok: 3 entries, head #3 {lines[3]['hash']}, 0 checkpoints verified")

    # And: one edited line is named
    edited = tmp_path / "edited.jsonl"
    rewrite(export, edited, lambda o: {**o, "detail": {**o["detail"], "code": "accepted_after_all"}}
            if o.get("id") == 2 else o)
    done = lienthong("audit", "verify", str(edited), "--data", str(data))
    assert done.returncode == 1
    assert done.stdout.strip() == "BROKEN at entry #2: entry #2 was edited: its content does not " \
                                  "match its hash"
    # And: so is a removed one, and a line that is not JSON
    removed = tmp_path / "removed.jsonl"
    rewrite(export, removed, lambda o: None if o.get("id") == 2 else o)
    done = lienthong("audit", "verify", str(removed), "--data", str(data))
    assert done.returncode == 1 and "BROKEN at entry #3: entry #2 is missing" in done.stdout
    garbled = tmp_path / "garbled.jsonl"
    garbled.write_text(export.read_text(encoding="utf-8").replace('"kind":"refused"', '"kind":'))
    done = lienthong("audit", "verify", str(garbled), "--data", str(data))
    assert done.returncode == 1 and done.stdout.startswith("BROKEN at line 3: not a JSON object")

    # And: the live database, read-only, and the hub itself agree
    done = lienthong("audit", "verify", "--db", "--data", str(data))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: 3 entries, head #3")
    done = lienthong("audit", "verify", "--data", str(data), "--url", base)
    assert done.returncode == 0 and done.stdout.startswith("ok: 3 entries, head #3"), done.stderr


async def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = await asyncio.to_thread(cli_main, list(args))
    return code, capsys.readouterr().out


async def test_checkpoints_travel_with_the_export(aiohttp_client, make_settings, dev_keys,
                                                  tmp_path, capsys):
    settings = make_settings()
    client = await aiohttp_client(create_app(settings))
    hub = client.app[HUB]
    for n in range(1, 4):
        raw = samples.edoc(MAU_A, [VP_UBND], n)
        resp = await client.post("/v1/envelopes", data=raw, headers={
            "Authorization": f"Bearer {hub.tokens.issue(MAU_A)}", "Content-Type": "application/xml"})
        assert resp.status == 202
    await client.app[HUB].auditor.checkpoint()
    data, cert = str(settings.data_path), str(dev_keys / "hub.pem")
    base = str(client.make_url("/")).rstrip("/")

    export = tmp_path / "audit.jsonl"
    assert (await run_cli(capsys, "audit", "export", "-o", str(export), "--data", data,
                          "--url", base))[0] == 0
    assert json.loads(export.read_text().splitlines()[-1])["checkpoint"]["event_id"] == 3
    code, out = await run_cli(capsys, "audit", "verify", str(export), "--data", data, "--cert", cert)
    assert (code, out.split(",")[-1].strip()) == (0, "1 checkpoints verified")

    # the last entry cut from the file: its checkpoint still says it was there
    cut = tmp_path / "cut.jsonl"
    rewrite(export, cut, lambda o: None if o.get("id") == 3 else o)
    code, out = await run_cli(capsys, "audit", "verify", str(cut), "--data", data, "--cert", cert)
    assert code == 1 and "BROKEN at entry #3: the log ends at #2 but checkpoint #1 covers #3" in out

    # a partial export verifies from its first entry, and says it is not anchored
    partial = tmp_path / "partial.jsonl"
    rewrite(export, partial, lambda o: {"export": {**o["export"], "complete": False}}
            if "export" in o else None if o.get("id") == 1 else o)
    code, out = await run_cli(capsys, "audit", "verify", str(partial), "--data", data, "--cert", cert)
    assert code == 0 and "(from #2: not anchored at genesis)" in out

    # with no hub running: the database read-only, then edited
    await client.close()
    code, out = await run_cli(capsys, "audit", "verify", "--db", "--data", data, "--cert", cert)
    assert code == 0 and "1 checkpoints verified" in out, out
    conn = sqlite3.connect(settings.data_path / "spool.db")
    conn.execute("UPDATE events SET organ = ? WHERE id = 2", (AN_BINH,))
    conn.commit()
    conn.close()
    code, out = await run_cli(capsys, "audit", "verify", "--db", "--data", data, "--cert", cert)
    assert code == 1 and out.startswith("BROKEN at entry #2: entry #2 was edited")
