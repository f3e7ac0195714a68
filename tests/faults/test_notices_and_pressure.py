"""Issue 12.15 over HTTP: a failure notice owed when the hub stopped, and
statuses about held documents, get in under backpressure; new documents
get ``503``.

tests/hub/cleanup/test_guarantees.py (the lead's) shows the notice survives
a stop between the ``failed`` commit and the notice, and the backpressure
rule, at the ``accept`` level.  Here the same stop (``open_hub(settings,
issuers=False)``: a hub that committed ``failed`` with ``notify`` and was
gone before any notice issuer ran — what a SIGKILL right after that commit
leaves on disk) is followed by a hub that comes back *under pressure*,
served over HTTP: ``spool_quota = "1B"``, or ``min_free_space`` above any
disk.  The owed notice is still issued, the office's status 03 and its
fetch and acknowledgement are taken, ``/readyz`` says why it is not ready,
and a new document gets ``503 spool_full`` with ``Retry-After``.

On the old design (the queue manager built and accepted the notice in the
same call that committed ``failed``, from memory) the notice part fails:
the second hub finds a delivery ``failed`` for good and nothing that
remembers a notice is owed, so Mậu A's inbox holds only the 03.  Now the
notice issuer follows the event log from a cursor kept in the spool, so the
second hub replays the ``failed`` event and issues the notice, once.
"""
from __future__ import annotations

from support import MAU_A, SO_NOIVU, VP_UBND, XML, eventually

from adapters.mailbox import MailboxAdapter
from adapters.stub import StubAdapter
from hub.api.app import HUB, create_app
from hub.auth import Identity
from hub.cleanup import accept as cleanup
from hub.edxml import samples
from hub.node import open_hub


def adapters() -> dict:
    return {"mailbox": MailboxAdapter("mailbox", {}),
            "provincial": StubAdapter("provincial", {"refuse": True})}


async def fail_without_notice(settings) -> tuple[str, str, str]:
    """Mậu A sends one document the province refuses for good (failed) and one the
    office holds in its mailbox; the hub stops before any notice is issued."""
    async with open_hub(settings, run_queue=True, queue_auto=False, issuers=False,
                        adapters=adapters()) as hub:
        assert hub.notices is None
        refused = samples.edoc(MAU_A, [SO_NOIVU], 1)
        held = samples.edoc(MAU_A, [VP_UBND], 2)
        r1 = await cleanup.accept(hub, refused, Identity(MAU_A, "agency"))
        r2 = await cleanup.accept(hub, held, Identity(MAU_A, "agency"))
        assert await hub.qmgr.scan() == 1
        await hub.qmgr.drain()
        (d,) = await hub.spool.deliveries(r1.id)
        assert d["state"] == "failed" and "stub told to refuse" in d["last_error"]
        assert await hub.spool.inbox(MAU_A) == [], "a notice without the issuer"
        return r1.id, r2.id, f"{MAU_A},2026/11/20,2/UBND"


async def notices(hub) -> list[dict]:
    return [i for i in await hub.spool.inbox(MAU_A) if i["kind"] == "status"]


async def test_under_backpressure_notices_and_statuses_flow_new_documents_wait(
        aiohttp_client, make_settings):
    refused_id, held_id, held_doc = await fail_without_notice(make_settings())

    # Given: the hub comes back over its spool quota (one byte: anything is too much)
    settings = make_settings(spool_quota="1B", rate_limit_per_address=0,
                             rate_limit_per_identity=0)
    client = await aiohttp_client(create_app(settings, adapters=adapters()))
    hub = client.app[HUB]

    def auth(organ: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {hub.tokens.issue(organ)}"}

    ready = await client.get("/readyz")
    assert ready.status == 503 and "spool_quota" in str(await ready.json())

    # Then: a new document is refused for now: 503 spool_full with Retry-After
    resp = await client.post("/v1/envelopes", data=samples.edoc(MAU_A, [VP_UBND], 3),
                             headers={**auth(MAU_A), **XML})
    body = await resp.json()
    assert resp.status == 503 and body["error"]["code"] == "spool_full", body
    assert int(resp.headers["Retry-After"]) > 0

    # ... but the hub's failure notice owed from before the stop gets in
    (notice,) = await eventually(lambda: notices(hub), what="the failure notice under pressure")
    assert notice["status_code"] == "02"
    assert (await hub.spool.envelope(notice["id"]))["response_for"] == refused_id

    # ... and the office's status 03 about the document it holds is accepted
    status = samples.status(VP_UBND, MAU_A, held_doc, "03", description="Đã tiếp nhận")
    resp = await client.post("/v1/envelopes", data=status, headers={**auth(VP_UBND), **XML})
    assert resp.status == 202, await resp.json()
    # ... as are fetching and acknowledging what is held
    resp = await client.get(f"/v1/inbox/{held_id}", headers=auth(VP_UBND))
    assert resp.status == 200
    resp = await client.post(f"/v1/inbox/{held_id}/ack", headers=auth(VP_UBND))
    assert resp.status == 200 and (await resp.json())["state"] == "delivered"
    # ... and the status reaches Mậu A, beside the notice
    codes = sorted(i["status_code"] for i in await notices(hub))
    assert codes == ["02", "03"], codes


async def test_a_full_disk_refuses_new_documents_only(aiohttp_client, make_settings):
    """The same with ``min_free_space`` above what any disk has."""
    _refused, _held_id, held_doc = await fail_without_notice(make_settings())
    client = await aiohttp_client(create_app(make_settings(min_free_space="1000000GiB"),
                                             adapters=adapters()))
    hub = client.app[HUB]

    def auth(organ: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {hub.tokens.issue(organ)}"}

    resp = await client.post("/v1/envelopes", data=samples.edoc(MAU_A, [VP_UBND], 4),
                             headers={**auth(MAU_A), **XML})
    body = await resp.json()
    assert resp.status == 503 and "min_free_space" in body["error"]["message"], body
    status = samples.status(VP_UBND, MAU_A, held_doc, "03")
    resp = await client.post("/v1/envelopes", data=status, headers={**auth(VP_UBND), **XML})
    assert resp.status == 202, await resp.json()
    await eventually(lambda: notices(hub), what="the failure notice")
