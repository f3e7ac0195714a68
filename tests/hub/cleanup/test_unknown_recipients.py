"""A recipient not in the directory (issue 13.4): said so in the 202 answer,
warned about at start when its route has no adapter, or refused by configuration."""
from __future__ import annotations

from hub.api.app import create_app
from hub.edxml import samples
from serve import Served
from support import MAU_A, VP_UBND, XML, submit

TYPO = "000.77.48.H64"   # well formed, in nobody's directory


async def test_the_202_answer_names_recipients_sent_upstream_by_default(client, auth):
    body = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND, TYPO], 96))
    assert body["upstream"] == [TYPO]
    assert any(TYPO in w and "not in the directory" in w for w in body["warnings"])
    assert {"organ": TYPO, "route": "provincial"} in body["recipients"]
    # a known recipient alone gets no warning
    body = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 97))
    assert "upstream" not in body and "warnings" not in body


async def test_unknown_recipients_can_be_refused(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(unknown_recipient="refuse")))
    from hub.api.app import HUB
    hub = client.app[HUB]
    resp = await client.post("/v1/envelopes", data=samples.edoc(MAU_A, [VP_UBND, TYPO], 98),
                             headers={"Authorization": f"Bearer {hub.tokens.issue(MAU_A)}", **XML})
    assert resp.status == 422
    err = (await resp.json())["error"]
    assert err["code"] == "unknown_recipient" and err["details"]["organ_id"] == TYPO
    assert err["details"]["path"].endswith("/To[2]/OrganId")
    # a rule of the directory makes an OrganId known: not refused
    ok = await client.post("/v1/envelopes", data=samples.edoc(MAU_A, ["000.05.44.H63"], 99),
                           headers={"Authorization": f"Bearer {hub.tokens.issue(MAU_A)}", **XML})
    assert ok.status == 202


def test_serve_warns_at_start_for_every_route_without_an_adapter(tmp_path):
    with Served(tmp_path / "var", log=tmp_path / "hub.log") as hub:
        log = hub.log_text()
    for route in ("provincial", "peer.lucyen", "peer.yenbinh"):
        assert f"route '{route}' is in the directory but no adapter instance serves it" in log
