"""``lienthong fake-platform``: the fake VXP platform run from the hub's command line."""
from __future__ import annotations

import asyncio
import re
import sys

from hub.edxml import samples
from hub.vxp.client import VxpClient
from support import MAU_A, REPO, SO_NOIVU


async def test_fake_platform_runs_as_a_process_and_carries_a_document():
    # Given: the platform started as an operator would, on any free port
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hub.cli", "fake-platform", "--listen", "127.0.0.1:0",
        "--prefix", "/vxp", "--system", f"hub.vanyen:HUB-SECRET:{MAU_A}",
        "--system", f"sys.sonoivu:DEPT-SECRET:{SO_NOIVU}",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        found = re.search(r"endpoint (http://127\.0\.0\.1:\d+/vxp)\b", line)
        assert found, line
        url = found.group(1)
        # When: the department's system sends a document to Mậu A
        raw = samples.edoc(SO_NOIVU, [MAU_A], 7)
        async with VxpClient(url, "sys.sonoivu", "DEPT-SECRET", timeout=5) as dept, \
                VxpClient(url, "hub.vanyen", "HUB-SECRET", timeout=5) as hub:
            doc_id = await dept.send_edoc(raw, SO_NOIVU)
            # Then: the hub's system finds it in its mailbox, the same bytes, and confirms it
            [item] = await hub.get_received_edoc_list()
            assert item.doc_id == doc_id and item.from_ == SO_NOIVU
            assert await hub.get_edoc(doc_id) == raw
            await hub.update_status(doc_id, "done")
            assert await hub.get_received_edoc_list() == []
    finally:
        proc.terminate()
        # And: SIGTERM stops it cleanly
        assert await asyncio.wait_for(proc.wait(), 10) == 0
