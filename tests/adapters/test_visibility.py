"""What operators see of the adapters: ``GET /v1/adapters``, ``lienthong adapters list``, metrics."""
from __future__ import annotations

import json
import subprocess
import sys

from adapters.folder import FolderAdapter
from adapters.mailbox import MailboxAdapter
from adapters.stub import StubAdapter
from hub.api.app import HUB, create_app
from hub.edxml import samples
from serve import Served
from support import MAU_A, REPO, SO_NOIVU, XML, eventually

LUCYEN_UNIT = "000.05.44.H63"  # routed to peer.lucyen by the directory's rule


async def test_each_instance_with_its_health_queue_and_last_error(aiohttp_client, make_settings,
                                                                  tmp_path):
    (tmp_path / "drop").mkdir()
    adapters = {"mailbox": MailboxAdapter("mailbox"),
                "provincial": StubAdapter("provincial"),
                "peer.lucyen": StubAdapter("peer.lucyen", {"fail_times": 100}),
                "drop": FolderAdapter("drop", {"path": str(tmp_path / "drop"), "interval": "1s"})}
    client = await aiohttp_client(create_app(make_settings(), adapters=adapters))
    hub = client.app[HUB]
    op = {"Authorization": f"Bearer {hub.tokens.issue(hub.hub_id, 'operator')}"}
    agency = {"Authorization": f"Bearer {hub.tokens.issue(MAU_A)}", **XML}
    # Given: one document that reaches the provincial stub, one the Lục Yên stub keeps deferring
    for n, to in ((1, SO_NOIVU), (2, LUCYEN_UNIT)):
        resp = await client.post("/v1/envelopes", data=samples.edoc(MAU_A, [to], n), headers=agency)
        assert resp.status == 202
    await eventually(lambda: adapters["provincial"].delivered and adapters["peer.lucyen"].attempts)

    async def report():
        resp = await client.get("/v1/adapters", headers=op)
        assert resp.status == 200
        return {a["name"]: a for a in (await resp.json())["items"]}
    items = await report()
    prov, lucyen, drop = items["provincial"], items["peer.lucyen"], items["drop"]
    assert (prov["class"], prov["mode"], prov["health"], prov["delivered"]) == \
        ("StubAdapter", "deliver", "ok", 1)
    assert lucyen["health"] == "degraded" and lucyen["queued"] == 1
    assert "stub failure" in lucyen["last_error"] and lucyen["last_error_at"].endswith("Z")
    assert lucyen["rules"] == ["*.*.44.H63"] and lucyen["organisations"] == 2  # UBND and its hub
    assert (drop["mode"], drop["taken_in"], drop["ingest_restarts"]) == ("ingest", 0, 0)
    assert items["mailbox"]["mode"] == "pull"
    # routes of the directory that nothing serves are shown, and say what to do
    unserved = [a for a in items.values() if a["health"] == "unserved"]
    assert {"peer.yenbinh", "peer.vanchan"} <= {a["name"] for a in unserved}
    assert all("configure [adapters." in a["last_error"] for a in unserved)
    # failures in a row make an instance down: an operator retries twice, it fails twice more
    [row] = await hub.spool.queue(route="peer.lucyen")
    for n in (2, 3):
        await eventually(lambda: not hub.qmgr.inflight)
        resp = await client.post(f"/v1/queue/{row['id']}/retry", headers=op, json={"reason": "t"})
        assert resp.status == 200, await resp.text()
        await eventually(lambda: hub.qmgr.health["peer.lucyen"].failures_in_a_row >= n)
    assert (await report())["peer.lucyen"]["health"] == "down"
    # the numbers are in the metrics, by instance
    text = await (await client.get("/metrics")).text()
    assert 'lienthong_adapter_health{instance="peer.lucyen",health="down"} 1' in text
    assert 'lienthong_adapter_queued{instance="peer.lucyen"} 1' in text
    assert 'lienthong_adapter_taken_in_total{instance="drop"} 0' in text
    assert 'lienthong_route_without_adapter{route="peer.yenbinh"} 1' in text
    # an agency may not look
    resp = await client.get("/v1/adapters", headers=agency)
    assert resp.status == 403


def test_lienthong_adapters_list_against_a_running_hub(tmp_path):
    conf = (f'[adapters.provincial]\nclass = "stub"\n'
            f'[adapters.drop]\nclass = "folder"\npath = "{tmp_path / "drop"}"\n')
    with Served(tmp_path / "var", config=conf, log=tmp_path / "hub.log") as hub:
        out = subprocess.run([sys.executable, "-m", "hub.cli", "-c", str(hub.config),
                              "adapters", "list", "--json", "--data", str(hub.data)], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        items = {a["name"]: a for a in json.loads(out.stdout)}
        assert items["provincial"]["class"] == "StubAdapter" and items["drop"]["mode"] == "ingest"
        text = subprocess.run([sys.executable, "-m", "hub.cli", "-c", str(hub.config),
                               "adapters", "list", "--data", str(hub.data)], cwd=REPO,
                              capture_output=True, text=True, timeout=60).stdout
        assert text.splitlines()[0].split()[:4] == ["NAME", "CLASS", "MODE", "HEALTH"]
        assert any(line.startswith("peer.lucyen") and "unserved" in line
                   for line in text.splitlines())


async def test_an_adapters_own_facts_and_errors_by_code_reach_the_report(aiohttp_client,
                                                                         make_settings):
    class Polling(StubAdapter):
        def health(self):
            return {"polls": 7, "taken_in": 3, "last_poll_at": "2026-12-01T00:00:00Z",
                    "errors.vxp_timeout": 2, "errors.http_503": 1,
                    "last_error": "platform timed out", "last_error_at": "2026-12-01T00:00:01Z"}
    adapters = {"mailbox": MailboxAdapter("mailbox"), "provincial": Polling("provincial")}
    client = await aiohttp_client(create_app(make_settings(), adapters=adapters))
    hub = client.app[HUB]
    op = {"Authorization": f"Bearer {hub.tokens.issue(hub.hub_id, 'auditor')}"}
    items = {a["name"]: a for a in (await (await client.get("/v1/adapters", headers=op)).json())["items"]}
    prov = items["provincial"]
    assert prov["errors_by_code"] == {"vxp_timeout": 2, "http_503": 1}
    assert (prov["taken_in"], prov["last_poll_at"], prov["facts"]["polls"]) == \
        (3, "2026-12-01T00:00:00Z", 7)
    assert (prov["last_error"], prov["last_error_at"]) == ("platform timed out",
                                                           "2026-12-01T00:00:01Z")
    text = await (await client.get("/metrics")).text()
    assert 'lienthong_adapter_errors_total{instance="provincial",code="vxp_timeout"} 2' in text
    assert 'lienthong_adapter_polls_total{instance="provincial"} 7' in text
