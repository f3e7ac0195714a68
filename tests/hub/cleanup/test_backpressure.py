"""Backpressure: over quota or short of disk, new envelopes get 503 + Retry-After."""
from __future__ import annotations

from aiohttp.test_utils import TestClient

from hub.edxml import samples
from hub.api.app import HUB, create_app
from support import MAU_A, VP_UBND

XML = {"Content-Type": "application/xml"}


async def post(client: TestClient, token: str, raw: bytes):
    return await client.post("/v1/envelopes", data=raw,
                             headers={"Authorization": f"Bearer {token}", **XML})


async def test_over_quota_refuses_new_but_keeps_the_old_flowing(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(spool_quota="4KiB")))
    hub = client.app[HUB]
    a, b = hub.tokens.issue(MAU_A), hub.tokens.issue(VP_UBND)
    first = await post(client, a, samples.edoc(MAU_A, [VP_UBND], 1, size=6000))
    assert first.status == 202
    first_id = (await first.json())["id"]
    assert await hub.pressure.refresh()  # now over quota
    resp = await post(client, a, samples.edoc(MAU_A, [VP_UBND], 2))
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) > 0
    assert (await resp.json())["error"]["code"] == "spool_full"
    assert (await client.get("/readyz")).status == 503
    # what was accepted is untouched: fetched and acknowledged as usual
    got = await client.get(f"/v1/inbox/{first_id}", headers={"Authorization": f"Bearer {b}"})
    assert got.status == 200
    ack = await client.post(f"/v1/inbox/{first_id}/ack", headers={"Authorization": f"Bearer {b}"})
    assert (await ack.json())["state"] == "delivered"


async def test_low_disk_refuses_and_recovers(aiohttp_client, make_settings):
    client = await aiohttp_client(create_app(make_settings(min_free_space="1000000GiB")))
    hub = client.app[HUB]
    token = hub.tokens.issue(MAU_A)
    resp = await post(client, token, samples.edoc(MAU_A, [VP_UBND], 3))
    assert resp.status == 503 and "min_free_space" in (await resp.json())["error"]["message"]
    hub.settings = hub.settings.replace(min_free_space="1KiB")
    assert await hub.pressure.refresh() is None
    assert (await post(client, token, samples.edoc(MAU_A, [VP_UBND], 3))).status == 202
