"""The authorisation matrix: every operation of the OpenAPI document × every role.

The operations come from ``hub/api/openapi.json`` as served at
``GET /v1/openapi.json``: an operation missing from ``TABLE`` fails the test,
so a new endpoint cannot be added without saying who may call it.

Callers: no token; an agency that is the document's sender (A), its
recipient (B), its co-recipient (C), an unrelated one (X); a relay bound to
the ``provincial`` route; the hub's operator, auditor and admin.  Every
caller is tried on real data: a document A → B, C, a status B → A about
it, a document the relay brought in from a provincial department for A, and
receipts (the acceptance, which every party reads, and one about B, which
the co-recipient C may not read); each ``{id}`` is a real id of the right kind.

The rules (DESIGN "Roles"): an agency only its own documents, inbox and
receipts; a relay only what concerns the organisations its route speaks
for; operator the queue and the live tail; auditor reads (receipts, audit,
queue, events); admin everything, except that it still speaks as its own
organisation (its inbox is its organisation's, and cleanup's "sender =
authenticated identity" holds for it as for anyone).  ``/vxp`` is the
national-SDK door: bearer tokens are not credentials there, every one of
them gets the SDK's ``FAIL`` answer; door credentials (HMAC headers) do work.
"""
from __future__ import annotations

import dataclasses
import json
import re

import pytest

from hub.auth import ROLES
from hub.door.credentials import issue as issue_door_secret
from hub.edxml import samples
from hub.vxp.protocol import VN_TZ, format_timestamp, sign_headers
from support import AN_BINH, HUB_ID, MAU_A, SO_NOIVU, VP_UBND, XML, eventually

A, B, C, X = MAU_A, AN_BINH, VP_UBND, "000.03.48.H63"
ROUTE = "provincial"  #: the relay's route; it speaks for SO_NOIVU
PROVINCE = "000.00.00.H63"  #: the relay token's organisation: the provincial platform

#: Per operation: the roles that may call it (admin always may; "*" = anyone,
#: no token needed), and its scope for the organisation-bound callers:
#:   None     - everything the role may touch
#:   "party"  - only documents the caller (or the relay's route) sent or receives
#:   "mailbox"- only what is addressed to the caller's own organisation (admin too)
#:   "sender" - only envelopes whose From is the caller (admin too) or its route's
#:   "list"   - a listing: always 200, filtered to the caller's own
#: and the status of success.  "door" rows are the /vxp SDK operations.
TABLE: dict[str, tuple[str, str | None, int]] = {
    "POST /v1/envelopes": ("agency relay", "sender", 202),
    "GET /v1/envelopes/{id}": ("agency relay operator auditor", "party", 200),
    "GET /v1/inbox": ("agency", "list", 200),
    "GET /v1/inbox/{id}": ("agency", "mailbox", 200),
    "POST /v1/inbox/{id}/ack": ("agency", "mailbox", 200),
    "GET /v1/queue": ("operator auditor", None, 200),
    "GET /v1/queue/{id}": ("operator auditor", None, 200),
    "POST /v1/queue/{id}/hold": ("operator", None, 200),
    "POST /v1/queue/{id}/release": ("operator", None, 200),
    "POST /v1/queue/{id}/retry": ("operator", None, 200),
    "POST /v1/queue/{id}/drop": ("operator", None, 200),
    "GET /v1/events": ("operator auditor", None, 200),
    "GET /v1/adapters": ("operator auditor", None, 200),
    "GET /v1/receipts": ("agency operator auditor", "list", 200),
    "GET /v1/receipts/{id}": ("agency operator auditor", "party", 200),
    "GET /v1/hub/certificate": ("*", None, 200),
    "GET /v1/audit": ("auditor", None, 200),
    "GET /v1/audit/verify": ("auditor", None, 200),
    "GET /v1/audit/checkpoints": ("auditor", None, 200),
    "GET /metrics": ("*", None, 200),
    "GET /healthz": ("*", None, 200),
    "GET /readyz": ("*", None, 200),
    "GET /v1/openapi.json": ("*", None, 200),
    **{f"POST /vxp/{op}": ("door", None, 200) for op in (
        "sendEdoc", "getReceivedEdocList", "getEdoc", "updateStatus", "getSentEdocList",
        "getAgenciesList", "getAgenciesListQD20", "getSynchronizeUnit", "countReceiveEdoc",
        "countReceiveStatus", "registerAgency", "deleteAgency")},
    "GET /vxp/downloadEdoc": ("door", None, 200),
}


@dataclasses.dataclass(frozen=True)
class Caller:
    label: str
    role: str | None        #: None: no token
    organ: str = HUB_ID
    route: str | None = None


CALLERS = (
    Caller("none", None),
    Caller("agency sender", "agency", A),
    Caller("agency recipient", "agency", B),
    Caller("agency co-recipient", "agency", C),
    Caller("agency other", "agency", X),
    Caller("relay", "relay", PROVINCE, ROUTE),
    Caller("operator", "operator"),
    Caller("auditor", "auditor"),
    Caller("admin", "admin"),
)


def parties(data: "Data", caller: Caller, target: str) -> bool:
    """Is ``caller`` a party of ``target`` (a message id, or a receipt id)?"""
    if target in data.receipts:
        return caller.role != "relay" and caller.organ in data.receipts[target]
    if caller.role == "relay":
        return target == data.relayed
    return caller.organ in data.party[target]


def expected(op: str, caller: Caller, data: "Data", target: str | None) -> int:
    roles, scope, ok = TABLE[op]
    if roles == "*":
        return ok
    if caller.role is None:
        return 401
    if caller.role != "admin" and caller.role not in roles.split():
        return 403
    bound = caller.role in ("agency", "relay") or (caller.role == "admin" and scope in
                                                     ("mailbox", "sender"))
    if not bound or scope in (None, "list", "sender"):
        return ok  # "sender": each caller posts its own; the other's is a separate row
    if scope == "mailbox":
        return ok if target is not None and caller.organ in data.recipients[target] else 403
    return ok if target is not None and parties(data, caller, target) else 403


@dataclasses.dataclass
class Data:
    doc: str = ""                   #: A → B, C
    status: str = ""                #: B → A, about doc
    relayed: str = ""               #: SO_NOIVU (by the relay) → A
    #: receipts about doc -> who of its parties may read each: its acceptance (every
    #: party), B's business status about it (A and B, never the co-recipient C)
    receipts: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    party: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    recipients: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    kind: dict[str, str] = dataclasses.field(default_factory=dict)


@pytest.fixture
def settings(make_settings):
    return make_settings(rate_limit_per_address=0, rate_limit_per_identity=0)


def token(hub, caller: Caller) -> dict[str, str]:
    if caller.role is None:
        return {}
    return {"Authorization": f"Bearer {hub.tokens.issue(caller.organ, caller.role, route=caller.route)}"}


class World:
    """The running hub, its data, and fresh documents for operations that change state."""

    def __init__(self, client, hub) -> None:
        self.client, self.hub, self.data, self.n = client, hub, Data(), 0

    async def post(self, raw: bytes, as_: Caller) -> dict:
        resp = await self.client.post("/v1/envelopes", data=raw, headers={**token(self.hub, as_), **XML})
        body = await resp.json()
        assert resp.status == 202, body
        env = await self.hub.spool.envelope(body["id"])
        recipients = {r["organ"] for r in body["recipients"]}
        self.data.party[body["id"]] = {env["sender"], *recipients}
        self.data.recipients[body["id"]] = recipients
        return body

    async def fresh(self, kind: str = "doc") -> str:
        """A new message of ``kind``: a document A → B, C; a status B → A about
        one; a document the relay brought in for A from SO_NOIVU.  Its id."""
        self.n += 1
        if kind == "doc":
            body = await self.post(samples.edoc(A, [B, C], f"m{self.n}"), CALLERS[1])
        elif kind == "status":
            about = await self.post(samples.edoc(A, [B], f"s{self.n}"), CALLERS[1])
            body = await self.post(samples.status(B, A, about["document_id"], "01"), CALLERS[2])
        else:
            relay = next(c for c in CALLERS if c.role == "relay")
            body = await self.post(samples.edoc(SO_NOIVU, [A], f"r{self.n}"), relay)
        self.data.kind[body["id"]] = kind
        return body["id"]

    async def setup(self) -> None:
        d = self.data
        d.doc = await self.fresh("doc")
        d.status = await self.fresh("status")
        d.relayed = await self.fresh("relayed")
        # B answers the shared document too: a receipt of its business status
        env = await self.hub.spool.envelope(d.doc)
        await self.post(samples.status(B, A, env["document_id"], "01"), CALLERS[2])

        async def receipts() -> list | None:
            rows = await self.hub.spool.receipts({"message_id": d.doc, "after": 0, "limit": 100})
            accepted = [r["id"] for r in rows if r["recipient"] is None]
            of_b = [r["id"] for r in rows if r["recipient"] == B]
            return (accepted[:1] + of_b[:1]) if accepted and of_b else None
        accepted, of_b = await eventually(receipts, what="receipts of doc: accepted, and B's")
        d.receipts = {accepted: {A, B, C}, of_b: {A, B}}

    async def target_for(self, op: str, caller: Caller, which: str) -> str | None:
        """The id to put in the path: the shared document or a fresh one for an
        operation that changes it (so the cases do not depend on their order)."""
        method, path = op.split(" ", 1)
        if "{id}" not in path:
            return None
        if method == "GET":
            return which
        target = await self.fresh(self.data.kind[which])
        if path.endswith("/release"):
            operator = next(c for c in CALLERS if c.role == "operator")
            resp = await self.client.post(f"/v1/queue/{target}/hold", json={"reason": "matrix"},
                                          headers=token(self.hub, operator))
            assert resp.status == 200, await resp.text()
        return target

    def body_for(self, op: str, caller: Caller, own: bool) -> tuple[bytes | None, dict[str, str]]:
        if op == "POST /v1/envelopes":
            self.n += 1
            if caller.role == "relay":
                sender = SO_NOIVU if own else A
            elif caller.role is None or not own:
                sender = B if caller.organ == A else A
            else:
                sender = caller.organ
            return samples.edoc(sender, [C if sender != C else B], f"p{self.n}"), XML
        if op.startswith("POST /v1/queue/"):
            return json.dumps({"reason": "matrix"}).encode(), {"Content-Type": "application/json"}
        return None, {}

    async def call(self, op: str, caller: Caller, target: str | None,
                   body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        method, path = op.split(" ", 1)
        if target is not None:
            path = path.replace("{id}", target)
        if path == "/v1/events":
            path += "?after=0"
        headers = {**token(self.hub, caller), **headers}
        resp = await self.client.request(method, path, data=body, headers=headers)
        try:
            if path.startswith("/v1/events") and resp.status == 200:
                return resp.status, b""  # a stream: its status is the answer here
            return resp.status, await resp.read()
        finally:
            resp.close()


def operations(spec: dict) -> list[str]:
    methods = {"get", "post", "put", "patch", "delete"}
    return sorted(f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m in ops if m in methods)


async def test_every_operation_is_in_the_table(client):
    resp = await client.get("/v1/openapi.json")
    ops = operations(await resp.json())
    missing = [op for op in ops if op not in TABLE]
    assert not missing, f"operations with no row in the authorisation table: {missing}"
    stale = [op for op in TABLE if op not in ops]
    assert not stale, f"rows for operations the OpenAPI document does not have: {stale}"


def documented_roles(description: str) -> str:
    """The roles an operation's "Roles: ..." sentence names, as in ``TABLE``."""
    if description.startswith("Authenticated by the SDK's signed headers"):
        return "door"
    sentence = description.split("Roles:", 1)[1].split(".", 1)[0]
    if "anyone" in sentence:
        return "*"
    named = {r for r in ROLES if re.search(rf"\b{r}\b", sentence)}
    if "its sender" in sentence or "its recipients" in sentence:
        named.add("agency")
    return " ".join(r for r in ROLES if r in named and r != "admin")


async def test_the_document_says_what_the_table_says(client):
    spec = await (await client.get("/v1/openapi.json")).json()
    differ = {}
    for op in operations(spec):
        method, path = op.split(" ", 1)
        said = documented_roles(spec["paths"][path][method.lower()].get("description", "Roles: ."))
        if said != TABLE[op][0]:
            differ[op] = (said, TABLE[op][0])
    assert not differ, differ


async def test_the_matrix(client, hub):
    world = World(client, hub)
    await world.setup()
    data = world.data
    ops = operations(await (await client.get("/v1/openapi.json")).json())
    wrong, tried = [], 0
    for op in ops:
        roles, scope, _ = TABLE[op]
        for caller in CALLERS:
            if roles == "door":
                status, raw = await world.call(op, caller, None, b"{}", {"Content-Type": "application/json"})
                tried += 1
                answer = json.loads(raw)
                if answer.get("status") != "FAIL":
                    wrong.append((op, caller.label, "-", "FAIL", status, answer))
                continue
            # the documents each caller is tried on: shared (A → B, C), the status
            # B → A, the relayed one; POST /v1/envelopes: its own and someone else's
            variants: list[tuple[str | None, bool]]
            if scope == "sender":
                variants = [(None, True), (None, False)]
            elif op == "GET /v1/receipts/{id}":
                variants = [(rid, True) for rid in data.receipts]
            elif "{id}" in op:
                variants = [(data.doc, True), (data.status, True), (data.relayed, True)]
            else:
                variants = [(data.doc, True)]
            for which, own in variants:
                target = await world.target_for(op, caller, which) if which else None
                body, headers = world.body_for(op, caller, own)
                want = expected(op, caller, data, target)
                if scope == "sender" and not own and want == 202:
                    want = 403  # someone else's envelope: sender_mismatch / not_spoken_for
                status, raw = await world.call(op, caller, target, body, headers)
                tried += 1
                if status != want:
                    wrong.append((op, caller.label, which, want, status, raw[:200]))
    assert not wrong, "\n".join(map(repr, wrong))
    assert tried > 150


async def test_listings_show_an_agency_only_its_own(client, hub):
    world = World(client, hub)
    await world.setup()
    data = world.data
    # Given documents about A, B, C and one unrelated caller X
    for caller in CALLERS[1:5]:
        resp = await client.get("/v1/receipts?limit=1000", headers=token(hub, caller))
        assert resp.status == 200
        items = (await resp.json())["items"]
        seen = {i["message_id"] for i in items}
        mine = {m for m, organs in data.party.items() if caller.organ in organs}
        # Then receipts name only documents it is party to, and all of them
        if caller.organ == X:
            assert seen == set()
        else:
            assert data.doc in seen and seen <= mine, (caller, seen, mine)
        resp = await client.get("/v1/inbox", headers=token(hub, caller))
        inbox = {i["id"] for i in (await resp.json())["items"]}
        assert inbox == {m for m, organs in data.recipients.items() if caller.organ in organs}


async def test_door_credentials_are_credentials_there(client, hub):
    # Given A's door credential (issued before the first call: the door reads it then)
    secret = issue_door_secret(hub.settings.data_path, A)[0].secret
    world = World(client, hub)
    await world.setup()
    when = format_timestamp(__import__("datetime").datetime.now(VN_TZ))
    headers = sign_headers([("timestamp", when), ("systemid", A), ("Content-Type", "application/json"),
                            ("from", A), ("messagetype", "edoc")], secret)
    resp = await client.post("/vxp/getReceivedEdocList", data=b"{}", headers=headers)
    answer = json.loads(await resp.read())
    assert (resp.status, answer["status"]) == (200, "OK"), answer
    # And a bearer token beside valid door headers changes nothing; a bearer token alone fails
    resp = await client.post("/vxp/getReceivedEdocList", data=b"{}",
                             headers={"Authorization": f"Bearer {hub.tokens.issue(A, 'admin')}",
                                      "Content-Type": "application/json"})
    assert json.loads(await resp.read())["status"] == "FAIL"
