"""The ingest side of adapters and the relay identity, end to end.

An adapter that only ingests (the folder adapter) takes documents in through
cleanup as its route's relay, confirms to its source (moves the file) only
after the commit, and is refused for organisations its route may not speak
for.  An HTTP client holding a relay token bound to a route is held to the
same rule.
"""
from __future__ import annotations

import json

import pytest

from adapters.base import Adapter, parse_options
from adapters.folder import FolderAdapter
from adapters.mailbox import MailboxAdapter
from adapters.stub import StubAdapter
from hub.api.app import create_app, HUB
from hub.edxml import samples
from hub.errors import ConfigError
from hub.ingress import RESTART_MIN, IngestSupervisor
from support import MAU_A, SO_NOIVU, VP_UBND, XML, eventually

LUCYEN = "000.00.44.H63"  # peer district (route peer.lucyen)


@pytest.fixture
async def folder_hub(aiohttp_client, make_settings, tmp_path):
    drop = tmp_path / "drop"
    drop.mkdir()
    adapters = {"mailbox": MailboxAdapter("mailbox"),
                "provincial": FolderAdapter("provincial", {"path": str(drop), "interval": "50ms"})}
    client = await aiohttp_client(create_app(make_settings(), adapters=adapters))
    return client, drop, adapters["provincial"]


async def test_an_ingest_only_adapter_takes_a_document_in_end_to_end(folder_hub):
    client, drop, adapter = folder_hub
    hub = client.app[HUB]
    # Given: a provincial department's document dropped in the folder (written, then renamed in)
    raw = samples.edoc(SO_NOIVU, [MAU_A], 71)
    (drop / "doc.tmp").write_bytes(raw)
    (drop / "doc.tmp").rename(drop / "doc.xml")
    # Then: it reaches the commune's inbox, and only then is the file confirmed (moved)
    token = {"Authorization": f"Bearer {hub.tokens.issue(MAU_A)}"}

    async def in_inbox():
        items = (await (await client.get("/v1/inbox", headers=token)).json())["items"]
        return items or None
    [item] = await eventually(in_inbox, what="the dropped document in the inbox")
    assert item["sender"] == SO_NOIVU
    assert await (await client.get(f"/v1/inbox/{item['id']}", headers=token)).read() == raw
    await eventually(lambda: (drop / "done" / "doc.xml").exists(), what="the file moved to done/")
    assert not (drop / "doc.xml").exists()
    env = await hub.spool.envelope(item["id"])
    assert env is not None and env["origin"] == "folder:provincial"
    # And: the same file dropped again is the same message, not a second delivery
    (drop / "again.xml").write_bytes(raw)
    await eventually(lambda: (drop / "done" / "again.xml").exists())
    items = (await (await client.get("/v1/inbox", headers=token)).json())["items"]
    assert [i["id"] for i in items] == [item["id"]]


async def test_an_ingest_adapter_may_not_speak_for_other_organisations(folder_hub):
    client, drop, adapter = folder_hub
    hub = client.app[HUB]
    # A commune of this district does not arrive by the provincial route
    (drop / "spoof.xml").write_bytes(samples.edoc(MAU_A, [VP_UBND], 72))
    await eventually(lambda: (drop / "refused" / "spoof.xml.error.json").exists())
    error = json.loads((drop / "refused" / "spoof.xml.error.json").read_text())
    assert error["error"]["code"] == "route_not_allowed"
    # and the refusal is in the audit log, with the route
    refused = await eventually(lambda: hub.spool.events(0, 100, kinds=["refused"]))
    assert [(e.detail["code"], e.detail.get("route")) for e in refused] == \
        [("route_not_allowed", "provincial")]


async def test_a_relay_token_speaks_for_its_routes_organisations_only(client, hub):
    relay = {"Authorization": f"Bearer {hub.tokens.issue(LUCYEN, 'relay', route='peer.lucyen')}",
             **XML}
    # Given: a document of the peer district Lục Yên, relayed by its hub
    ok = await client.post("/v1/envelopes", data=samples.edoc(LUCYEN, [MAU_A], 73), headers=relay)
    assert ok.status == 202, await ok.text()
    # When: the same relay submits a document from one of our own communes
    bad = await client.post("/v1/envelopes", data=samples.edoc(MAU_A, [VP_UBND], 74), headers=relay)
    # Then: it is refused, and the refusal is audited
    assert bad.status == 403
    assert (await bad.json())["error"]["code"] == "route_not_allowed"
    refused = await eventually(lambda: hub.spool.events(0, 100, kinds=["refused"]))
    assert refused[-1].detail["code"] == "route_not_allowed" and refused[-1].organ == LUCYEN
    # And: a department (route provincial) is not Lục Yên's to speak for either
    bad = await client.post("/v1/envelopes", data=samples.edoc(SO_NOIVU, [MAU_A], 75), headers=relay)
    assert (await bad.json())["error"]["code"] == "route_not_allowed"
    # And: an agency token is still held to its own OrganId
    agency = {"Authorization": f"Bearer {hub.tokens.issue(MAU_A)}", **XML}
    bad = await client.post("/v1/envelopes", data=samples.edoc(LUCYEN, [MAU_A], 76), headers=agency)
    assert (await bad.json())["error"]["code"] == "sender_mismatch"


def test_a_relay_token_needs_a_route(hub):
    with pytest.raises(ValueError):
        hub.tokens.issue(LUCYEN, "relay")
    with pytest.raises(ValueError):
        hub.tokens.issue(MAU_A, "agency", route="peer.lucyen")


class _Flaky(Adapter):
    """Ingests by failing: the supervisor must restart it, with a delay."""

    ingests = True
    delivers = False

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.runs = 0

    async def ingest(self, port) -> None:
        self.runs += 1
        raise RuntimeError(f"source unreachable (run {self.runs})")


async def test_ingest_loops_are_restarted_with_backoff_and_stopped_cleanly(hub):
    flaky = _Flaky("provincial")
    supervisor = IngestSupervisor(hub, [flaky, StubAdapter("peer.lucyen")])
    assert list(supervisor.loops) == ["provincial"]  # only adapters that ingest
    await supervisor.start()
    await eventually(lambda: flaky.runs >= 2, timeout=RESTART_MIN * 4)
    loop = supervisor.loops["provincial"]
    assert loop.restarts >= 1 and "source unreachable" in (loop.last_error or "")
    await supervisor.stop()
    runs = flaky.runs
    assert all(lp.task is not None and lp.task.done() for lp in supervisor.loops.values())
    assert flaky.runs == runs


@pytest.mark.parametrize("raw,message", [
    ({"path": "/x", "colour": "red"}, "unknown key(s) colour"),
    ({"path": "/x", "interval": 5}, "a duration needs a unit"),
    ({"path": "/x", "interval": "5 parsecs"}, "interval"),
    ({"path": 7}, "path: must be str"),
    ({}, "needs path"),
])
def test_options_are_typed_and_checked_at_start(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_options(FolderAdapter, "drop", raw)
    assert message in err.value.message and "[adapters.drop]" in err.value.message


def test_options_parse_to_their_types():
    opts = parse_options(FolderAdapter, "drop", {"path": "/srv/drop", "interval": "2m"})
    assert str(opts.path) == "/srv/drop" and opts.interval == 120.0
