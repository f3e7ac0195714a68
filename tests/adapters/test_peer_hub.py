"""Federation between district hubs (``peer_hub``): two real hubs, both ways.

The README's "Peer districts" walkthrough runs verbatim against two
``lienthong serve`` processes; the rest shows what a peer may not do (relay
without its hop signature, answer with something that is not the hub API's)
and that a peer down for a while loses nothing.
"""
from __future__ import annotations

import asyncio
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
from support import MAU_A, REPO, SO_NOIVU, XML, eventually, free_port

YEN_THE = "000.01.44.H63"      # a commune of Lục Yên (examples/lucyen/directory.toml)
LUCYEN_HUB = "000.99.44.H63"
VANYEN_HUB = "000.99.48.H63"


def _readme_block(heading: str) -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    return re.search(rf"### {heading}.*?```sh\n(.*?)```", readme, re.S).group(1)


def test_the_peer_districts_walkthrough_works_verbatim(tmp_path):
    # Given: the README's block, on free ports, from a directory laid out like the project
    a, b, platform = free_port(), free_port(), free_port()
    block = (_readme_block("Peer districts").replace("8780", str(a)).replace("9200", str(b))
             .replace("9100", str(platform)))
    for name in (".venv", "examples"):
        (tmp_path / name).symlink_to(REPO / name)
    # When: it runs as written (it starts and stops both hubs itself)
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path,
                         capture_output=True, text=True, timeout=240, env=dict(os.environ))
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    # Then: each step answered as the README says
    lines = out.stdout.splitlines()
    assert [ln for ln in lines if ln.startswith("HTTP ")] == ["HTTP 202", "HTTP 200", "HTTP 200",
                                                              "HTTP 202", "HTTP 200", "HTTP 200"]
    answers = [json.loads(ln) for ln in lines if ln.startswith("{")]
    sent, inbox_y, ack, status, injected, inbox_a, platform_seen = answers
    assert sent["recipients"] == [{"organ": YEN_THE, "route": "peer.lucyen"},
                                  {"organ": SO_NOIVU, "route": "provincial"}]
    [doc] = inbox_y["items"]
    assert (doc["sender"], doc["document_id"]) == (MAU_A, sent["document_id"])
    assert ack["state"] == "delivered"
    assert status["recipients"] == [{"organ": MAU_A, "route": "peer.vanyen"}]
    assert injected["DocId"]
    # both statuses came back to the original sender: through the peer hub and the platform
    assert sorted((i["sender"], i["status_code"], i["document_id"]) for i in inbox_a["items"]) == \
        [(SO_NOIVU, "03", sent["document_id"]), (YEN_THE, "03", sent["document_id"])]
    health = [ln.split() for ln in lines if ln.startswith(("peer.", "provincial"))]
    assert [(h[0], h[3]) for h in health] == [("peer.lucyen", "ok"), ("provincial", "ok"),
                                              ("peer.vanyen", "ok")]
    # the platform saw Mậu A's document sent once (and the department's status)
    assert platform_seen["counters"]["sends"][sent["document_id"]] == 1
    assert sum(platform_seen["counters"]["sends"].values()) == 2


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


def _keys_init(conf) -> None:
    """``lienthong keys init -c conf``: a hub's development keys, made before it runs."""
    subprocess.run([sys.executable, "-m", "hub.cli", "keys", "init", "-c", str(conf)], cwd=REPO,
                   check=True, capture_output=True)


def _lucyen_with_keys(tmp_path):
    """Lục Yên's data directory, its keys made (the hub itself not started)."""
    b_data, conf = tmp_path / "lucyen", tmp_path / "lucyen.toml"
    conf.write_text(f'data_dir = "{b_data}"\ndirectory = "{REPO / "examples/lucyen/directory.toml"}"\n')
    _keys_init(conf)
    return b_data


def _peer_config(data, port: int, peer_port: int, token: str, cert) -> str:
    return (f'listen = "127.0.0.1:{port}"\ndata_dir = "{data}"\n'
            f'directory = "{REPO / "examples/lucyen/directory.toml"}"\n'
            f'[adapters."peer.vanyen"]\nclass = "peer_hub"\nurl = "http://127.0.0.1:{peer_port}"\n'
            f'token = "{token}"\npeer_cert = "{cert}"\n')


async def test_a_peer_down_for_a_while_then_back_loses_nothing(aiohttp_client, make_settings,
                                                               dev_keys, tmp_path):
    # Given: Lục Yên's hub, with its keys made but not running
    b_data, b_port = _lucyen_with_keys(tmp_path), free_port()
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


def _two_hubs(tmp_path):
    """Văn Yên's and Lục Yên's hubs, configured for each other as the README does."""
    a_port, b_port = free_port(), free_port()
    a_data, b_data = tmp_path / "vanyen", tmp_path / "lucyen"
    base_a = f'data_dir = "{a_data}"\nrate_limit_per_address = 0\n'
    base_b = (f'data_dir = "{b_data}"\ndirectory = "{REPO / "examples/lucyen/directory.toml"}"\n'
              f'rate_limit_per_address = 0\n')
    for name, text in (("a", base_a), ("b", base_b)):
        (tmp_path / f"{name}.toml").write_text(text)
        _keys_init(tmp_path / f"{name}.toml")
    for_vanyen = TokenAuthority(load_secret(b_data)).issue(VANYEN_HUB, "relay", route="peer.vanyen")
    for_lucyen = TokenAuthority(load_secret(a_data)).issue(LUCYEN_HUB, "relay", route="peer.lucyen")
    conf_a = base_a + (f'[adapters."peer.lucyen"]\nclass = "peer_hub"\n'
                       f'url = "http://127.0.0.1:{b_port}"\ntoken = "{for_vanyen}"\n'
                       f'peer_cert = "{b_data / "keys" / "hub.pem"}"\n')
    conf_b = base_b + (f'[adapters."peer.vanyen"]\nclass = "peer_hub"\n'
                       f'url = "http://127.0.0.1:{a_port}"\ntoken = "{for_lucyen}"\n'
                       f'peer_cert = "{a_data / "keys" / "hub.pem"}"\n')
    return (Served(a_data, port=a_port, config=conf_a, log=tmp_path / "a.log"),
            Served(b_data, port=b_port, config=conf_b, log=tmp_path / "b.log"))


async def test_two_districts_exchange_documents_both_ways_and_statuses_come_back(tmp_path):
    import aiohttp
    from support import VP_UBND
    minh_xuan = "000.02.44.H63"
    a, b = _two_hubs(tmp_path)
    with a, b:
        async with aiohttp.ClientSession() as http:
            async def post(hub, organ, raw):
                async with http.post(f"{hub.url}/v1/envelopes", data=raw,
                                     headers={"Authorization": f"Bearer {hub.mint(organ, 'agency')}",
                                              **XML}) as r:
                    assert r.status == 202, await r.text()
                    return await r.json()

            async def inbox(hub, organ):
                async with http.get(f"{hub.url}/v1/inbox",
                                    headers={"Authorization": f"Bearer {hub.mint(organ, 'agency')}"}) as r:
                    return (await r.json())["items"]

            # Given: a document each way between the districts
            one = await post(a, MAU_A, samples.edoc(MAU_A, [YEN_THE], 61))
            two = await post(b, minh_xuan, samples.edoc(minh_xuan, [VP_UBND], 62))
            # Then: each reaches its recipient on the other hub
            [got_one] = await eventually(lambda: inbox(b, YEN_THE), timeout=30)
            [got_two] = await eventually(lambda: inbox(a, VP_UBND), timeout=30)
            assert (got_one["sender"], got_one["document_id"]) == (MAU_A, one["document_id"])
            assert (got_two["sender"], got_two["document_id"]) == (minh_xuan, two["document_id"])
            # When: each recipient answers with status 03 on its own hub
            await post(b, YEN_THE, samples.status(YEN_THE, MAU_A, one["document_id"], "03"))
            await post(a, VP_UBND, samples.status(VP_UBND, minh_xuan, two["document_id"], "03"))
            # Then: the statuses flow back to the original senders, across the districts
            [st_one] = await eventually(lambda: inbox(a, MAU_A), timeout=30)
            [st_two] = await eventually(lambda: inbox(b, minh_xuan), timeout=30)
            assert (st_one["sender"], st_one["status_code"]) == (YEN_THE, "03")
            assert (st_two["sender"], st_two["status_code"]) == (VP_UBND, "03")
            # and each hub records the business status on its own delivery, in its own log
            async with http.get(f"{a.url}/v1/envelopes/{one['id']}",
                                headers={"Authorization": f"Bearer {a.mint(MAU_A, 'agency')}"}) as r:
                view = await r.json()
            assert [(d["recipient"], d["state"], d["business_status"]) for d in view["deliveries"]] == \
                [(YEN_THE, "delivered", "03")]
            for hub in (a, b):
                async with http.get(f"{hub.url}/v1/audit/verify", headers={
                        "Authorization": f"Bearer {hub.mint(hub_id_of(hub), 'auditor')}"}) as r:
                    assert (await r.json())["ok"] is True


def hub_id_of(hub) -> str:
    return LUCYEN_HUB if "lucyen" in str(hub.data) else VANYEN_HUB


async def test_one_document_for_two_units_of_a_peer_and_the_sender_reaches_each_once(tmp_path):
    """A peer hub hop-signs every delivery anew, so Lục Yên receives one document
    for two of its units in two different byte strings (and would again after a
    lost answer): the same message.  And Lục Yên delivers only to its own units:
    the sender's other recipients (its own district, the province) were sent
    their copies by Văn Yên, and passing them on would loop or reach them twice."""
    import aiohttp
    from support import VP_UBND
    minh_xuan = "000.02.44.H63"
    a, b = _two_hubs(tmp_path)
    with a, b:
        async with aiohttp.ClientSession() as http:
            async def call(hub, method, path, organ, role="agency", raw=None):
                headers = {"Authorization": f"Bearer {hub.mint(organ, role)}", **XML}
                async with http.request(method, f"{hub.url}{path}", data=raw,
                                        headers=headers) as r:
                    return r.status, await r.json()

            async def inbox(hub, organ, n):
                _, body = await call(hub, "GET", "/v1/inbox", organ)
                return body["items"] if len(body["items"]) >= n else None

            # Given: Mậu A sends one document to two units of Lục Yên, one of its own
            # district and a provincial department
            code, sent = await call(a, "POST", "/v1/envelopes", MAU_A,
                                    raw=samples.edoc(MAU_A, [YEN_THE, minh_xuan, VP_UBND,
                                                             SO_NOIVU], 71))
            assert code == 202, sent
            # Then: both deliveries to the peer hub succeed (the second is the same message)
            async def peer_settled():
                _, view = await call(a, "GET", f"/v1/envelopes/{sent['id']}", MAU_A)
                got = {d["recipient"]: d["state"] for d in view["deliveries"]
                       if d["route"] == "peer.lucyen"}
                return got if all(s in ("delivered", "failed") for s in got.values()) else None
            assert await eventually(peer_settled, timeout=30) == {YEN_THE: "delivered",
                                                                 minh_xuan: "delivered"}
            # and each Lục Yên unit has it once
            for unit in (YEN_THE, minh_xuan):
                [item] = await eventually(lambda u=unit: inbox(b, u, 1), timeout=30)
                assert item["document_id"] == sent["document_id"]
            # and Lục Yên holds one message, delivered only to its own units
            _, held = await call(b, "GET", "/v1/queue?limit=100", LUCYEN_HUB, "operator")
            rows = [(d["recipient"], d["route"]) for d in held["items"]
                    if d["document_id"] == sent["document_id"]]
            assert sorted(rows) == sorted([(YEN_THE, "mailbox"), (minh_xuan, "mailbox")]), held
            assert len({d["message_id"] for d in held["items"]
                        if d["document_id"] == sent["document_id"]}) == 1
            # When: the sender recalls it (status 13 to every recipient, twice to Lục Yên)
            code, recall = await call(a, "POST", "/v1/envelopes", MAU_A,
                                      raw=samples.status(MAU_A, MAU_A, sent["document_id"], "13"))
            assert code == 202, recall
            # Then: each Lục Yên unit is told once
            for unit in (YEN_THE, minh_xuan):
                items = await eventually(lambda u=unit: inbox(b, u, 2), timeout=30)
                assert [i["kind"] for i in items] == ["edoc", "status"]
            await asyncio.sleep(1.0)  # a second copy would have arrived by now
            for unit in (YEN_THE, minh_xuan):
                assert len(await inbox(b, unit, 0)) == 2


def _directory_with_rule_ca(tmp_path, ca_pem: bytes | None):
    """The bundled directory, Lục Yên's rule given its CA (relative to the file)."""
    text = (REPO / "conf" / "directory.toml").read_text(encoding="utf-8")
    rule = 'pattern = "*.*.44.H63"\nroute = "peer.lucyen"\n'
    assert rule in text
    tmp_path.mkdir(parents=True, exist_ok=True)
    if ca_pem is not None:
        (tmp_path / "lucyen-ca.pem").write_bytes(ca_pem)
        text = text.replace(rule, rule + 'ca = "lucyen-ca.pem"\n')
    path = tmp_path / "directory.toml"
    path.write_text(text, encoding="utf-8")
    return path


async def test_a_rule_carries_the_trust_of_a_peer_districts_code_space(aiohttp_client,
                                                                       make_settings, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from hub.crypto.keys import issue_cert, make_ca
    from hub.crypto.signing import sign_envelope
    unit = "000.05.44.H63"        # a Lục Yên unit no entry lists: known by its rule alone
    ca_key, ca = make_ca("CA of Lục Yên")
    key, cert = issue_cert(ca_key, ca, unit)
    rogue_key, rogue = issue_cert(*make_ca("someone else"), unit)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)

    async def submit(directory, number, signer):
        client = await aiohttp_client(create_app(make_settings(
            directory=str(directory), trust_ca_file="", data_dir=str(tmp_path / f"var{number}"))))
        hub = client.app[HUB]
        relay = {"Authorization": "Bearer " + hub.tokens.issue(LUCYEN_HUB, "relay",
                                                               route="peer.lucyen"), **XML}
        raw = sign_envelope(samples.edoc(unit, [MAU_A], number), *signer)
        resp = await client.post("/v1/envelopes", data=raw, headers=relay)
        body = await resp.json()
        if resp.status != 202:
            return resp.status, body["error"]
        admin = {"Authorization": "Bearer " + hub.tokens.issue(hub.hub_id, "admin")}
        view = await (await client.get(f"/v1/envelopes/{body['id']}", headers=admin)).json()
        return resp.status, view["signature"]

    # Given: a directory whose rule for Lục Yên names no CA: the signature cannot be checked
    status, error = await submit(_directory_with_rule_ca(tmp_path / "a", None), 81, (key, cert))
    assert (status, error["code"]) == (422, "signature_invalid")
    assert f"no certificate or CA is known for {unit}" in error["message"]
    # When: the rule names Lục Yên's CA
    with_ca = _directory_with_rule_ca(tmp_path / "b", ca_pem)
    status, signature = await submit(with_ca, 82, (key, cert))
    # Then: the unit's signature is verified against it
    assert status == 202 and signature["result"] == "valid", signature
    # and a certificate from any other CA is refused
    status, error = await submit(with_ca, 83, (rogue_key, rogue))
    assert (status, error["code"]) == (422, "signature_invalid")
    assert "does not chain to the CA" in error["message"]


def _tls_server_cert(tmp_path):
    """A self-signed TLS certificate for 127.0.0.1 (the listener's, not a signing one)."""
    import datetime as dt
    import ipaddress
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(
                "127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "tls.pem", tmp_path / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


async def test_a_peer_hub_authenticated_by_mutual_tls_instead_of_a_token(aiohttp_client, make_settings,
                                                                          dev_keys, tmp_path):
    import ssl

    import aiohttp
    # Given: Lục Yên's hub on HTTPS, whose adapter for Văn Yên accepts Văn Yên's hub
    # certificate (the one it hop-signs with) as its TLS client certificate
    b_data, b_port = _lucyen_with_keys(tmp_path), free_port()
    tls_cert, tls_key = _tls_server_cert(tmp_path)
    config = (f'tls_cert_file = "{tls_cert}"\ntls_key_file = "{tls_key}"\n'
              + _peer_config(b_data, b_port, 9, "unused", dev_keys / "hub.pem")
              + "accept_client_cert = true\n")
    # and Văn Yên's hub, whose adapter for Lục Yên has no token: its client certificate
    peer = PeerHubAdapter("peer.lucyen", {
        "url": f"https://127.0.0.1:{b_port}", "peer_cert": str(b_data / "keys" / "hub.pem"),
        "client_cert": str(dev_keys / "hub.pem"), "client_key": str(dev_keys / "hub.key"),
        "ca_file": str(tls_cert)})
    client = await aiohttp_client(create_app(make_settings(minimal_backoff="1s",
                                                           maximal_backoff="1s"),
                                             adapters={"mailbox": MailboxAdapter("mailbox"),
                                                       "peer.lucyen": peer}))
    a = client.app[HUB]
    with Served(b_data, port=b_port, log=tmp_path / "lucyen.log", config=config,
                scheme="https", ca_file=tls_cert) as b:
        # When: Mậu A sends a document to Yên Thế
        resp = await client.post("/v1/envelopes", data=samples.edoc(MAU_A, [YEN_THE], 91),
                                 headers={"Authorization": f"Bearer {a.tokens.issue(MAU_A)}", **XML})
        sent = await resp.json()

        async def delivered():
            [d] = await a.spool.deliveries(sent["id"])
            return d if d["state"] in ("delivered", "failed") else None
        d = await eventually(delivered, timeout=30)
        # Then: it was delivered over mutual TLS, taken in as Văn Yên's relay
        assert d["state"] == "delivered", d
        ctx = ssl.create_default_context(cafile=str(tls_cert))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
            token = b.mint(YEN_THE, "agency")
            async with http.get(f"{b.url}/v1/inbox",
                                headers={"Authorization": f"Bearer {token}"}) as r:
                [item] = (await r.json())["items"]
            assert (item["sender"], item["document_id"]) == (MAU_A, sent["document_id"])
            # and with neither a token nor a client certificate, nothing is accepted
            async with http.post(f"{b.url}/v1/envelopes", data=samples.edoc(MAU_A, [YEN_THE], 92),
                                 headers=XML) as r:
                assert r.status == 401
        # and a client certificate it does not pin does not even finish the handshake
        from hub.crypto.keys import issue_cert, make_ca
        from cryptography.hazmat.primitives import serialization
        rogue_key, rogue = issue_cert(*make_ca("someone"), VANYEN_HUB)
        (tmp_path / "rogue.pem").write_bytes(rogue.public_bytes(serialization.Encoding.PEM))
        (tmp_path / "rogue.key").write_bytes(rogue_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        ctx.load_cert_chain(str(tmp_path / "rogue.pem"), str(tmp_path / "rogue.key"))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as http:
            try:
                async with http.post(f"{b.url}/v1/envelopes",
                                     data=samples.edoc(MAU_A, [YEN_THE], 93), headers=XML) as r:
                    refused = r.status
            except aiohttp.ClientError:
                refused = "handshake"
        assert refused in ("handshake", 401), refused
