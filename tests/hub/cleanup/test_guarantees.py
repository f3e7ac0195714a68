"""Guarantees from the review (issue 12.15): a failure notice survives a crash
between the ``failed`` commit and the notice, and backpressure refuses only new
documents: statuses about documents already held, and the hub's own notices,
still flow."""
from __future__ import annotations

from adapters.mailbox import MailboxAdapter
from adapters.stub import StubAdapter
from hub.auth import Identity
from hub.cleanup import accept as cleanup
from hub.edxml import samples
from hub.errors import BackpressureError
from hub.node import open_hub
from support import MAU_A, SO_NOIVU, VP_UBND, eventually

import pytest


def _adapters(refuse: bool = True):
    return {"mailbox": MailboxAdapter("mailbox"), "provincial": StubAdapter("provincial", {"refuse": refuse})}


async def test_a_failure_notice_survives_a_crash_after_the_failed_commit(make_settings, clock):
    settings = make_settings()
    # Given: a delivery fails for good, and the hub dies before its notice is issued
    # (no issuers running: the `failed` state is committed, the notice is not)
    async with open_hub(settings, clock=clock, run_queue=True, queue_auto=False, issuers=False,
                        adapters=_adapters()) as hub:
        doc = await cleanup.accept(hub, samples.edoc(MAU_A, [SO_NOIVU], 1), Identity(MAU_A, "agency"))
        await hub.qmgr.scan()
        await hub.qmgr.drain()
        [d] = await hub.spool.deliveries(doc.id)
        assert d["state"] == "failed"
        assert [i for i in await hub.spool.inbox(MAU_A)] == []
    # When: the hub starts again
    async with open_hub(settings, clock=clock, run_queue=True, queue_auto=False,
                        adapters=_adapters()) as hub:
        # Then: the notice is issued from the event log, once
        async def notice():
            return [i for i in await hub.spool.inbox(MAU_A) if i["kind"] == "status"]
        [n] = await eventually(notice)
        assert n["status_code"] == "02" and n["sender"] == hub.hub_id
        await hub.notices.catch_up()  # a second pass issues nothing twice
        assert len(await notice()) == 1


async def test_under_backpressure_only_new_documents_are_refused(make_settings, clock):
    settings = make_settings()
    async with open_hub(settings, clock=clock, run_queue=True, queue_auto=False,
                        adapters=_adapters()) as hub:
        doc = await cleanup.accept(hub, samples.edoc(MAU_A, [VP_UBND, SO_NOIVU], 2),
                                   Identity(MAU_A, "agency"))
        # Given: the spool over its quota
        hub.settings._values["spool_quota"] = 1
        await hub.pressure.refresh()
        assert hub.pressure.reason
        # Then: a new document is refused with 503
        with pytest.raises(BackpressureError):
            await cleanup.accept(hub, samples.edoc(MAU_A, [VP_UBND], 3), Identity(MAU_A, "agency"))
        # but a status about a document already held is taken
        st = await cleanup.accept(hub, samples.status(VP_UBND, MAU_A, doc.document_id, "03"),
                                  Identity(VP_UBND, "agency"))
        assert st.created
        # and so is the hub's own failure notice, when the department refuses it
        await hub.qmgr.scan()
        await hub.qmgr.drain()
        await hub.notices.catch_up()
        notices = [i for i in await hub.spool.inbox(MAU_A) if i["sender"] == hub.hub_id]
        assert [n["status_code"] for n in notices] == ["02"]
