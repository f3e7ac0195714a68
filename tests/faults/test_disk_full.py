"""Fault (d): the disk fills up while documents are being submitted.

The hub's data directory is on a small filesystem of its own (a 20 MiB
tmpfs mounted for the test; mounting needs root, which CI has — on this
machine kind ``mount -t tmpfs`` works, so under ``CI=true`` the test is
required and a failing mount fails it; elsewhere it is skipped).  A filler
file takes every free byte while submissions go on.  Every submission is
then refused with a clear ``503`` — ``spool_error`` when a write hits the full
disk, ``spool_full`` once backpressure sees free space under
``min_free_space`` — never a 500 and never a 202 that is not stored.  The
spool stays sound (``lienthong audit verify --db``, ``integrity_check``), and
once the filler is deleted the hub takes documents again.
"""
from __future__ import annotations

import collections
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from faults.twoway import hub_config
from serve import Served
from support import MAU_A, REPO, VP_UBND, eventually
from traffic import Client, Doc, check_event_chain, open_ro

from hub.edxml import samples

pytestmark = pytest.mark.slow

SIZE = "20m"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE},mode=0700", "tmpfs",
                           str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        why = f"cannot mount a {SIZE} tmpfs here ({done.stderr.strip() or done.returncode})"
        if in_ci():
            pytest.fail(f"{why}: CI runs as root, where this works; the disk-full test is "
                        f"required there")
        pytest.skip(f"{why}: needs root (CI runs it)")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(path: Path) -> int:
    """Write zeros to ``path`` until the filesystem has no byte left; return the size."""
    chunk = b"\0" * (1 << 20)
    written = 0
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            while True:
                try:
                    written += f.write(chunk[:size])
                except OSError:
                    break
    return written


async def test_a_full_disk_answers_503_loses_nothing_and_recovers(tmp_path, small_disk, peer):
    data = small_disk / "var"
    server = Served(data, log=tmp_path / "hub.log",
                    config=hub_config(peer, 'min_free_space = "2MiB"\n'))
    docs: list[Doc] = []
    try:
        await server.start_async()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            client = Client(http, server.url, server.data)

            async def send(n: int, big: bool) -> list[Doc]:
                out = []
                for _ in range(n):
                    number = len(docs) + 1
                    doc = Doc(number, MAU_A, (VP_UBND,),
                              samples.edoc(MAU_A, [VP_UBND], number,
                                           size=90 * 1024 if big and number % 2 else 3000))
                    docs.append(doc)
                    out.append(doc)
                    await client.submit(doc)
                return out

            # Given: the hub takes documents on its small disk
            first = await send(10, big=True)
            assert [d.status for d in first] == [202] * 10

            # When: a filler takes every free byte, while submissions go on
            filler = small_disk / "filler"
            filled = fill(filler)
            assert filled > 0
            during = await send(30, big=True)

            # Then: every one is refused with a clear 503, none half-taken
            answers = collections.Counter((d.status, (d.body or {}).get("error", {}).get("code"))
                                          for d in during)
            assert set(answers) <= {(503, "spool_error"), (503, "spool_full")}, answers
            # ... and once backpressure has measured the disk, it says why
            async def pressure_says() -> bool:
                (d,) = await send(1, big=False)
                assert d.status == 503, (d.status, d.body)
                return d.body["error"]["code"] == "spool_full"
            await eventually(pressure_says, timeout=15, interval=0.5,
                             what="503 spool_full from backpressure")
            ready = await http.get(f"{server.url}/readyz")
            assert ready.status == 503 and "min_free_space" in await ready.text()

            # When: space returns
            filler.unlink()

            # Then: the hub takes documents again
            async def accepting() -> bool:
                (d,) = await send(1, big=True)
                return d.status == 202
            await eventually(accepting, timeout=15, interval=0.5, what="202 after space returns")
            after = await send(10, big=True)
            assert [d.status for d in after] == [202] * 10, [(d.status, d.body) for d in after]

            # ... and every document it answered 202 is there, as sent, once
            accepted = [d for d in docs if d.status == 202]
            inbox = await client.inbox_ids(VP_UBND, limit=50)
            assert sorted(inbox) == sorted(d.id for d in accepted)
            for d in accepted:
                await client.fetch_and_ack(VP_UBND, d)
        assert server.stop() == 0, server.log_tail()
        conn = open_ro(data)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert conn.execute("SELECT COUNT(*) FROM envelopes").fetchone()[0] == len(accepted)
            check_event_chain(conn)
        finally:
            conn.close()
        verify = subprocess.run([sys.executable, "-m", "hub.cli", "audit", "verify", "--db",
                                 "--data", str(data)], cwd=REPO, capture_output=True, text=True,
                                timeout=60)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        # the spool opens again and serves
        await server.start_async()
        assert server.stop() == 0, server.log_tail()
    finally:
        server.close()
    print(f"\ndisk full: {answers} while full; {len(accepted)} accepted in all")
