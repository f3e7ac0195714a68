"""Fault (c): the provincial platform answering 5xx, timing out and talking garbage.

A real ``lienthong serve`` runs the ``provincial`` adapter against the fake
VXP platform (``hub.sim.vxp_platform``) on 127.0.0.1, both ways: communes
send documents to Sở Nội vụ, whose system (a ``VxpClient``, as its document
software would be) fetches, confirms and answers each with a status 03, and
sends documents of its own to the communes, who fetch and acknowledge.
While that goes on the platform is made to fail in turn: 503s on any
operation, sendEdoc timing out, bodies that are not JSON, 502 on getEdoc,
and a sendEdoc that commits and then loses its answer.  Afterwards:

* every document the hub answered 202 reached the department (at least
  once: after a lost answer the hub sends again, and the platform lists it
  twice — the department deduplicates by sender + DocumentId, as the
  adapter's documentation says), and its delivery is ``delivered``;
* every document and status the department sent reached its commune's
  mailbox exactly once, and was confirmed ``done`` to the platform;
* the event chain and ``lienthong audit verify --db`` pass.
"""
from __future__ import annotations

import asyncio
import collections
import re
import subprocess
import sys

import aiohttp
import pytest
from serve import Served
from support import AN_BINH, HUB_ID, MAU_A, REPO, SO_NOIVU, eventually
from traffic import Client, Doc, check_event_chain, open_ro

from hub.edxml import samples
from hub.sim.vxp_platform import start_platform
from hub.vxp.client import VxpClient

pytestmark = pytest.mark.slow

HUB_SYSTEM, HUB_SECRET = "hub.vanyen", "hub-secret-7c1d"
DEPT_SYSTEM, DEPT_SECRET = "sys.sonoivu", "sonoivu-secret-42ab"
COMMUNES = (MAU_A, AN_BINH)
UP = 24            #: documents from the communes to the department
DOWN = 12          #: documents from the department to the communes
DOC_ID = re.compile(rb"<(?:\w+:)?DocumentId>([^<]+)</(?:\w+:)?DocumentId>")

#: What the platform suffers, in turn, while the traffic flows.
FAULTS = [
    dict(kind="http_error", status=503, count=6),
    dict(kind="timeout", operation="sendEdoc", count=2, delay=2.0),
    dict(kind="not_json", count=4),
    dict(kind="http_error", operation="getEdoc", status=502, count=2),
    dict(kind="timeout", operation="sendEdoc", count=1, delay=2.0, after=True),
    dict(kind="slow", operation="getReceivedEdocList", count=3, delay=0.2),
]


def config(url: str) -> str:
    return f"""rate_limit_per_address = 0
rate_limit_per_identity = 0
cpu_workers = 0
minimal_backoff = "100ms"
maximal_backoff = "500ms"
queue_run_delay = "200ms"

[adapters.provincial]
class = "provincial"
url = "{url}"
system_id = "{HUB_SYSTEM}"
secret = "{HUB_SECRET}"
poll_interval = "100ms"
timeout = "400ms"
"""


class Department:
    """Sở Nội vụ's document system on the platform: takes what arrives (deduplicating
    by DocumentId), confirms it, answers each document once with a status 03."""

    def __init__(self, vxp: VxpClient) -> None:
        self.vxp = vxp
        self.got: collections.Counter[str] = collections.Counter()   # listings per DocumentId
        self.answered: set[str] = set()
        self.errors = 0
        self.running = True

    async def run(self) -> None:
        while self.running:
            try:
                for item in await self.vxp.get_received_edoc_list("edoc"):
                    raw = await self.vxp.get_edoc(item.doc_id)
                    m = DOC_ID.search(raw)
                    assert m and item.from_ in COMMUNES, (item, raw[:200])
                    doc_id = m[1].decode()
                    self.got[doc_id] += 1
                    if doc_id not in self.answered:
                        status = samples.status(SO_NOIVU, item.from_, doc_id, "03",
                                                description="Đã tiếp nhận")
                        await self.vxp.send_edoc(status, SO_NOIVU, "status")
                        self.answered.add(doc_id)
                    await self.vxp.update_status(item.doc_id, "done")
            except Exception:  # the platform is failing on purpose: try again
                self.errors += 1
            await asyncio.sleep(0.05)


async def test_provincial_platform_failing_in_every_way_loses_nothing(tmp_path):
    platform = await start_platform("127.0.0.1", 0, systems=[
        (HUB_SYSTEM, HUB_SECRET, [*COMMUNES, HUB_ID]), (DEPT_SYSTEM, DEPT_SECRET, [SO_NOIVU])])
    server = Served(tmp_path / "var", log=tmp_path / "hub.log", config=config(platform.url))
    vxp = VxpClient(platform.url, DEPT_SYSTEM, DEPT_SECRET, timeout=2.0)
    dept = Department(vxp)
    up = [Doc(n, COMMUNES[n % 2], (SO_NOIVU,),
              samples.edoc(COMMUNES[n % 2], [SO_NOIVU], n, size=90 * 1024 if n % 6 == 0 else 3000))
          for n in range(1, UP + 1)]
    down = [samples.edoc(SO_NOIVU, [COMMUNES[n % 2]], 500 + n, sender_name="Sở Nội vụ")
            for n in range(DOWN)]
    down_sent: list[str] = []
    try:
        await server.start_async()
        worker = asyncio.create_task(dept.run())
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            client = Client(http, server.url, server.data)
            # Given: traffic both ways, and the platform failing in turn
            for step, fault in enumerate(FAULTS):
                platform.fail(**fault)
                for doc in up[step * UP // len(FAULTS):(step + 1) * UP // len(FAULTS)]:
                    await client.submit(doc)
                    assert doc.status == 202, (doc.status, doc.body)
                for raw in down[step * DOWN // len(FAULTS):(step + 1) * DOWN // len(FAULTS)]:
                    for _try in range(20):  # the department's software retries its sends
                        try:
                            await vxp.send_edoc(raw, SO_NOIVU, "edoc")
                            break
                        except Exception:
                            await asyncio.sleep(0.1)
                    else:
                        raise AssertionError("the department could not send for 20 tries")
                    down_sent.append(DOC_ID.search(raw)[1].decode())  # type: ignore[index]
                await asyncio.sleep(0.3)  # let this fault meet the traffic before the next
            applied = dict(platform.counters.faults_applied)
            platform.faults.clear()

            # Then: every document of the communes reaches the department, delivered
            up_ids = {d.document_id for d in up}
            await eventually(lambda: set(dept.got) >= up_ids and dept.answered >= up_ids,
                             timeout=60, what="every commune's document at the department")

            async def all_delivered() -> bool:
                for d in up:
                    view = await client.get_json(d.sender, f"/v1/envelopes/{d.id}")
                    if [x["state"] for x in view["deliveries"]] != ["delivered"]:
                        return False
                return True
            await eventually(all_delivered, timeout=30, what="every upward delivery delivered")

            # ... and everything the department sent is in the communes' inboxes, once
            async def inboxes() -> dict[str, list[dict]]:
                return {c: await client.inbox(c) for c in COMMUNES}

            def docs_in(boxes: dict[str, list[dict]], kind: str) -> collections.Counter[str]:
                return collections.Counter(i["document_id"] for items in boxes.values()
                                           for i in items if i["kind"] == kind
                                           and i["sender"] == SO_NOIVU)

            async def arrived() -> dict[str, list[dict]] | None:
                boxes = await inboxes()
                ok = (set(docs_in(boxes, "edoc")) == set(down_sent)
                      and set(docs_in(boxes, "status")) == up_ids)
                return boxes if ok else None
            boxes = await eventually(arrived, timeout=60, what="the department's documents "
                                                               "and statuses in the inboxes")
            for kind in ("edoc", "status"):
                twice = [k for k, n in docs_in(boxes, kind).items() if n > 1]
                assert not twice, f"{kind}s in a commune's mailbox twice: {twice}"
            for organ, items in boxes.items():
                for item in items:
                    status, _raw = await client.fetch(organ, item["id"])
                    assert status == 200
                    assert (await client.ack(organ, item["id"]))[0] == 200

            # ... confirmed done to the platform: nothing waits there for the hub
            await eventually(lambda: not platform.state.mailbox(HUB_SYSTEM, "edoc")
                             and not platform.state.mailbox(HUB_SYSTEM, "status"),
                             timeout=20, what="the hub's platform mailbox emptied")
        dept.running = False
        await worker
        assert server.stop() == 0, server.log_tail()
    finally:
        dept.running = False
        server.close()
        await vxp.close()
        await platform.close()

    # every fault met the traffic
    kinds = {f["kind"] for f in FAULTS}
    assert sum(applied.values()) >= sum(f["count"] for f in FAULTS) - 2, applied
    resent = {k: n for k, n in dept.got.items() if n > 1}
    conn = open_ro(server.data)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        check_event_chain(conn)
    finally:
        conn.close()
    verify = subprocess.run([sys.executable, "-m", "hub.cli", "audit", "verify", "--db",
                             "--data", str(server.data)], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    print(f"\nprovincial faults {sorted(kinds)}: applied {applied}; {UP} up, {DOWN} down; "
          f"sent again after a lost answer: {resent}; department errors {dept.errors}")
