"""Federation between district hubs (``peer_hub``): two real hubs, both ways.

The README's "Peer districts" walkthrough runs verbatim against two
``lienthong serve`` processes; the rest shows what a peer may not do (relay
without its hop signature, answer with something that is not the hub API's)
and that a peer down for a while loses nothing.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from aiohttp import web

from adapters.mailbox import MailboxAdapter
from adapters.peer_hub import PeerHubAdapter
from hub.api.app import HUB, create_app
from hub.auth import TokenAuthority, load_secret
from hub.edxml import samples
from serve import Served
from support import MAU_A, REPO, XML, eventually, free_port

YEN_THE = "000.01.44.H63"      # a commune of Lục Yên (examples/lucyen/directory.toml)
LUCYEN_HUB = "000.99.44.H63"
VANYEN_HUB = "000.99.48.H63"


def _readme_block(heading: str) -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return re.search(rf"### {heading}.*?```sh\n(.*?)```", readme, re.S).group(1)


def test_the_peer_districts_walkthrough_works_verbatim(tmp_path):
    # Given: the README's block, on free ports, from a directory laid out like the project
    a, b = free_port(), free_port()
    block = _readme_block("Peer districts").replace("8780", str(a)).replace("9200", str(b))
    for name in (".venv", "examples"):
        (tmp_path / name).symlink_to(REPO / name)
    # When: it runs as written (it starts and stops both hubs itself)
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path,
                         capture_output=True, text=True, timeout=240, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    # Then: each step answered as the README says
    lines = out.stdout.splitlines()
    assert [ln for ln in lines if ln.startswith("HTTP ")] == ["HTTP 202", "HTTP 200", "HTTP 200",
                                                              "HTTP 202", "HTTP 200"]
    answers = [json.loads(ln) for ln in lines if ln.startswith("{")]
    sent, inbox_y, ack, status, inbox_a = answers
    assert sent["recipients"] == [{"organ": YEN_THE, "route": "peer.lucyen"}]
    [doc] = inbox_y["items"]
    assert (doc["sender"], doc["document_id"]) == (MAU_A, sent["document_id"])
    assert ack["state"] == "delivered"
    assert status["recipients"] == [{"organ": MAU_A, "route": "peer.vanyen"}]
    [st] = inbox_a["items"]
    assert (st["sender"], st["status_code"], st["document_id"]) == (YEN_THE, "03", sent["document_id"])
    health = [ln.split() for ln in lines if ln.startswith("peer.")]
    assert [(h[0], h[3]) for h in health] == [("peer.lucyen", "ok"), ("peer.vanyen", "ok")]


async def test_a_peer_answer_that_is_not_the_hub_apis_is_not_believed(aiohttp_client,
                                                                        aiohttp_server,
                                                                        make_settings, dev_keys):
    answers = {"n": 0}

    async def envelopes(request: web.Request) -> web.Response:
        await request.read()
        answers["n"] += 1
        if answers["n"] == 1:
            return web.Response(text="<html>welcome to the proxy</html>", status=200)
        if answers["n"] == 2:
            return web.json_response({"ok": True}, status=202)
        return web.json_response({"error": {"code": "unknown_recipient", "message": "no such unit"}},
                                 status=422)
    app = web.Application()
    app.router.add_post("/v1/envelopes", envelopes)
    server = await aiohttp_server(app)
    peer = PeerHubAdapter("peer.lucyen", {"url": f"http://127.0.0.1:{server.port}/",
                                          "token": "t", "peer_cert": str(dev_keys / "hub.pem")})
    client = await aiohttp_client(create_app(make_settings(minimal_backoff="1s",
                                                           maximal_backoff="1s"),
                                             adapters={"mailbox": MailboxAdapter("mailbox"),
                                                       "peer.lucyen": peer}))
    hub = client.app[HUB]
    resp = await client.post("/v1/envelopes", data=samples.edoc(MAU_A, [YEN_THE], 41),
                             headers={"Authorization": f"Bearer {hub.tokens.issue(MAU_A)}", **XML})
    mid = (await resp.json())["id"]

    async def state():
        [d] = await hub.spool.deliveries(mid)
        return d if d["state"] == "failed" else None
    d = await eventually(state, timeout=20)
    events = [e for e in await hub.spool.events(0, 100, message_id=mid, kinds=["state"])
              if e.state in ("deferred", "failed")]
    # a 200 page and a 202 without the message id were deferred, the peer's 422 refused
    assert [e.state for e in events] == ["deferred", "deferred", "failed"]
    assert "not believed" in events[0].detail["reason"] and "not believed" in events[1].detail["reason"]
    assert "unknown_recipient: no such unit" in d["last_error"]


async def test_a_peers_documents_must_carry_its_hop_signature(client, hub):
    # Given: a relay token for Lục Yên's hub, and an adapter that names its certificate
    # (the shared test keys' hub certificate stands in for the peer's: it is not Lục Yên's)
    relay = {"Authorization": f"Bearer {hub.tokens.issue(LUCYEN_HUB, 'relay', route='peer.lucyen')}",
             **XML}
    hub.adapters["peer.lucyen"] = PeerHubAdapter("peer.lucyen", {
        "url": "http://127.0.0.1:9", "token": "t",
        "peer_cert": str(hub.settings.hub_cert_file)})
    try:
        # When: it relays a document of one of its units with no hop signature at all
        resp = await client.post("/v1/envelopes", data=samples.edoc(YEN_THE, [MAU_A], 42),
                                 headers=relay)
        # Then: refused, not believed
        assert resp.status == 422
        body = await resp.json()
        assert body["error"]["code"] == "signature_invalid" and "no hop signature" in \
            body["error"]["message"]
    finally:
        del hub.adapters["peer.lucyen"]


def _peer_config(data, port: int, peer_port: int, token: str, cert) -> str:
    return (f'listen = "127.0.0.1:{port}"\ndata_dir = "{data}"\n'
            f'directory = "{REPO / "examples/lucyen/directory.toml"}"\n'
            f'[adapters."peer.vanyen"]\nclass = "peer_hub"\nurl = "http://127.0.0.1:{peer_port}"\n'
            f'token = "{token}"\npeer_cert = "{cert}"\n')


async def test_a_peer_down_for_a_while_then_back_loses_nothing(aiohttp_client, make_settings,
                                                               dev_keys, tmp_path):
    # Given: Lục Yên's hub, with its keys made but not running
    b_data, b_port = tmp_path / "lucyen", free_port()
    conf = tmp_path / "lucyen.toml"
    conf.write_text(f'data_dir = "{b_data}"\ndirectory = "{REPO / "examples/lucyen/directory.toml"}"\n')
    subprocess.run([sys.executable, "-m", "hub.cli", "keys", "init", "-c", str(conf)], cwd=REPO,
                   check=True, capture_output=True)
    for_vanyen = TokenAuthority(load_secret(b_data)).issue(VANYEN_HUB, "relay", route="peer.vanyen")
    # and Văn Yên's hub (the test app), whose peer.lucyen adapter retries every second
    peer = PeerHubAdapter("peer.lucyen", {"url": f"http://127.0.0.1:{b_port}", "token": for_vanyen,
                                          "peer_cert": str(b_data / "keys" / "hub.pem")})
    client = await aiohttp_client(create_app(
        make_settings(minimal_backoff="1s", maximal_backoff="1s"),
        adapters={"mailbox": MailboxAdapter("mailbox"), "peer.lucyen": peer}))
    a = client.app[HUB]
    agency = {"Authorization": f"Bearer {a.tokens.issue(MAU_A)}", **XML}
    # When: Mậu A sends three documents while the peer is down
    ids = []
    for n in (51, 52, 53):
        resp = await client.post("/v1/envelopes", data=samples.edoc(MAU_A, [YEN_THE], n),
                                 headers=agency)
        ids.append((await resp.json())["id"])

    async def deferred():
        states = [d["state"] for i in ids for d in await a.spool.deliveries(i)]
        return all(s == "deferred" for s in states) and states
    await eventually(deferred, timeout=20)
    # Then: once the peer is back, every one arrives, once
    served = Served(b_data, port=b_port, log=tmp_path / "lucyen.log",
                    config=_peer_config(b_data, b_port, client.port, "unused",
                                        dev_keys / "hub.pem"))
    with served as b:
        async def delivered():
            states = [d["state"] for i in ids for d in await a.spool.deliveries(i)]
            return all(s == "delivered" for s in states)
        await eventually(delivered, timeout=30)
        token = b.mint(YEN_THE, "agency")
        import aiohttp
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{b.url}/v1/inbox", headers={"Authorization": f"Bearer {token}"}) as r:
                items = (await r.json())["items"]
    assert sorted(i["document_id"] for i in items) == sorted(
        f"{MAU_A},2026/11/20,{n}/UBND" for n in (51, 52, 53))
