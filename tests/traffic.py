"""The agencies' side of a real hub, shared by the crash and fault tests.

``Doc`` is one envelope and what the hub answered for it; ``Client`` talks to
a real hub over HTTP with tokens minted from the server's own secret (for
any organ, on first use); ``bounded`` runs jobs with a cap on those in
flight; ``open_ro``/``check_event_chain`` read the spool database from
outside, as an auditor would.  ``Peer`` is a push destination on 127.0.0.1
that records what the hub delivers to it, and can refuse connections or
answer 503 for a while.
"""
from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import sqlite3
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from support import free_port

from hub.auth import TokenAuthority, load_secret
from spool.chain import GENESIS_HASH, event_hash

XML = "application/xml"
CONCURRENCY = 32


@dataclasses.dataclass
class Doc:
    """One envelope of the load and what the hub answered for it."""

    number: int
    sender: str
    recipients: tuple[str, ...]
    raw: bytes
    status: int | None = None      #: HTTP status of the last answer (None: no answer)
    id: str | None = None          #: message id the hub gave it
    error: str | None = None       #: the client error when the request got no answer
    body: Any = None
    kind: str = "edoc"
    #: A status's DocumentId is the document it is about (for the documents: None).
    about: str | None = None

    @property
    def document_id(self) -> str:
        return f"{self.sender},2026/11/20,{self.number}/UBND"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def accepted(self) -> bool:
        return self.status in (200, 202)


class Client:
    """The agencies' side: one session, tokens minted with the server's own secret."""

    def __init__(self, http: aiohttp.ClientSession, base: str, data: Path) -> None:
        self.http = http
        self.base = base
        self._authority = TokenAuthority(load_secret(data))
        self._tokens: dict[str, str] = {}

    def auth(self, organ: str) -> dict[str, str]:
        if organ not in self._tokens:
            self._tokens[organ] = self._authority.issue(organ)
        return {"Authorization": f"Bearer {self._tokens[organ]}"}

    async def submit(self, doc: Doc) -> None:
        """POST the envelope; record the answer, or the error if the hub died first."""
        doc.status = doc.id = doc.error = doc.body = None
        try:
            headers = {**self.auth(doc.sender), "Content-Type": XML}
            async with self.http.post(f"{self.base}/v1/envelopes", data=doc.raw,
                                      headers=headers) as resp:
                body = await resp.json(content_type=None)
                doc.status, doc.body = resp.status, body
                doc.id = body.get("id") if isinstance(body, dict) else None
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            doc.status, doc.id = None, None
            doc.error = type(exc).__name__

    async def get_json(self, organ: str, path: str) -> Any:
        async with self.http.get(f"{self.base}{path}", headers=self.auth(organ)) as resp:
            body = await resp.json()
            assert resp.status == 200, (path, organ, resp.status, body)
            return body

    async def inbox_ids(self, organ: str, limit: int = 100) -> list[str]:
        """Every id in the organ's inbox, following ``next`` to the last page."""
        return [item["id"] for item in await self.inbox(organ, limit)]

    async def inbox(self, organ: str, limit: int = 100) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        path: str | None = f"/v1/inbox?limit={limit}"
        pages = 0
        while path is not None:
            page = await self.get_json(organ, path)
            items.extend(page["items"])
            path = page.get("next")
            pages += 1
            assert pages < 1000, f"inbox of {organ} does not end"
        return items

    async def fetch(self, organ: str, message_id: str) -> tuple[int, bytes]:
        async with self.http.get(f"{self.base}/v1/inbox/{message_id}",
                                 headers=self.auth(organ)) as resp:
            return resp.status, await resp.read()

    async def ack(self, organ: str, message_id: str) -> tuple[int, Any]:
        async with self.http.post(f"{self.base}/v1/inbox/{message_id}/ack",
                                  headers=self.auth(organ)) as resp:
            return resp.status, await resp.json()

    async def fetch_and_ack(self, organ: str, doc: Doc, acks: int = 1) -> None:
        assert doc.id is not None
        url = f"{self.base}/v1/inbox/{doc.id}"
        async with self.http.get(url, headers=self.auth(organ)) as resp:
            raw = await resp.read()
            assert resp.status == 200, (organ, doc.id, resp.status, raw[:300])
            assert raw == doc.raw, f"{doc.id}: {organ} got other bytes than {doc.sender} sent"
            assert resp.headers["X-Lienthong-Sender"] == doc.sender
        for _ in range(acks):
            status, body = await self.ack(organ, doc.id)
            assert status == 200, (organ, doc.id, status, body)
            assert body["state"] == "delivered", body


async def bounded(jobs: Iterable[Awaitable[Any]], limit: int = CONCURRENCY) -> list[Any]:
    """Run the jobs with at most ``limit`` at a time; the first failure propagates."""
    sem = asyncio.Semaphore(limit)

    async def one(job: Awaitable[Any]) -> Any:
        async with sem:
            return await job

    return await asyncio.gather(*(one(j) for j in jobs))


# -- the spool database, read from outside ------------------------------------------------------

def open_ro(data: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{data / 'spool.db'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def check_event_chain(conn: sqlite3.Connection) -> int:
    """Ids dense from 1, each row links to the one before, each hash recomputes."""
    prev, count = GENESIS_HASH, 0
    for count, r in enumerate(conn.execute("SELECT id, at, kind, message_id, delivery_id, organ, "
                                           "state, detail, prev_hash, hash FROM events "
                                           "ORDER BY id"), start=1):
        assert r["id"] == count, f"event ids not dense: expected {count}, found {r['id']}"
        assert r["prev_hash"] == prev, f"event {count}: prev_hash does not link to the one before"
        digest = event_hash(prev, r["id"], r["at"], r["kind"], r["message_id"], r["delivery_id"],
                            r["organ"], r["state"], r["detail"])
        assert r["hash"] == digest, f"event {count}: hash does not recompute"
        prev = r["hash"]
    return count


# -- a push destination ---------------------------------------------------------------------

class Peer:
    """An HTTP receiver on 127.0.0.1 for an ``edxml_http`` route: records every
    POST (its ``X-Lienthong-Message-Id`` and body), answers 200, or — while
    ``mode`` says so — 503 (``"503"``) or nothing at all: ``"down"`` closes the
    listening socket, so connections are refused, until ``mode = "ok"``."""

    def __init__(self) -> None:
        self.port = 0
        self.mode = "ok"
        self.seen: collections.Counter[str] = collections.Counter()
        self.bodies: dict[str, bytes] = {}
        self.refused = 0          #: answers 503 given
        self.no_header = 0        #: POSTs without X-Lienthong-Message-Id
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/envelopes"

    async def _receive(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if self.mode != "ok":
            self.refused += 1
            return web.Response(status=503, text="peer is down for maintenance")
        mid = request.headers.get("X-Lienthong-Message-Id")
        if not mid:
            self.no_header += 1
            return web.Response(status=400, text="no message id")
        self.seen[mid] += 1
        self.bodies[mid] = raw
        return web.json_response({"id": mid}, status=202)

    async def start(self) -> "Peer":
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/envelopes", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self._listen()
        return self

    async def _listen(self) -> None:
        assert self._runner is not None
        self.port = self.port or free_port()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def set_mode(self, mode: str) -> None:
        """``ok``, ``503`` or ``down`` (connections refused)."""
        if mode == "down" and self._site is not None:
            await self._site.stop()
            self._site = None
        elif mode != "down" and self._site is None:
            await self._listen()
        self.mode = mode

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
