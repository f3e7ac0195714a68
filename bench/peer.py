"""A fake peer hub / agency system: the HTTP recipient of the hub's push deliveries.

Runs as its own process on 127.0.0.1.  It verifies nothing heavy: it counts
what arrives (and whether it carries the hub's hop signature), answers 200,
and with ``--status-back`` acts as the recipient organisation answering each
document with an edXML status 01 (arrived) POSTed to the hub with that
organisation's token, which the hub relays to the sender's inbox.

``GET /stats`` reports counts and the wall-clock times of the first and last
arrivals and of the last status the hub accepted (202).
"""
from __future__ import annotations

import argparse
import asyncio
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import token_for
from hub.edxml import samples

_DOC_ID = re.compile(rb"<(?:\w+:)?DocumentId>([^<]+)</(?:\w+:)?DocumentId>")
_FROM = re.compile(rb"<(?:\w+:)?From>\s*<(?:\w+:)?OrganId>([^<]+)</")


class Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.received = 0
        self.bytes = 0
        self.hop_signed = 0
        self.first: float | None = None
        self.last: float | None = None
        self.status_codes: dict[str, int] = {}
        self.status_last: float | None = None
        self.status_errors: list[str] = []
        self.session: aiohttp.ClientSession | None = None
        self.sem = asyncio.Semaphore(args.status_concurrency)
        self.tasks: set[asyncio.Task[None]] = set()
        self.token = token_for(Path(args.ident), args.organ) if args.status_back else ""

    async def receive(self, request: web.Request) -> web.Response:
        raw = await request.read()
        now = time.time()
        self.received += 1
        self.bytes += len(raw)
        if b"lienthong-hop-" in raw[:1 << 20] or b"lienthong-hop-" in raw[-(1 << 16):]:
            self.hop_signed += 1
        self.first = self.first or now
        self.last = now
        if self.args.status_back:
            head = raw[:1 << 16]
            doc, sender = _DOC_ID.search(head), _FROM.search(head)
            if doc and sender:
                task = asyncio.create_task(self.status(sender[1].decode(), doc[1].decode()))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        return web.json_response({"ok": True})

    async def status(self, original_sender: str, document_id: str) -> None:
        raw = samples.status(self.args.organ, original_sender, document_id, "01")
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/xml"}
        async with self.sem:
            assert self.session is not None
            for attempt in range(5):
                try:
                    async with self.session.post(f"{self.args.hub}/v1/envelopes", data=raw,
                                                 headers=headers) as resp:
                        body = await resp.read()
                        code = str(resp.status)
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    code, body = type(exc).__name__, str(exc).encode()
                if code in ("200", "202") or code.startswith("4"):
                    break
                await asyncio.sleep(0.2 * (attempt + 1))
        self.status_codes[code] = self.status_codes.get(code, 0) + 1
        if code in ("200", "202"):
            self.status_last = time.time()
        elif len(self.status_errors) < 5:
            self.status_errors.append(body[:300].decode(errors="replace"))

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({
            "received": self.received, "bytes": self.bytes, "hop_signed": self.hop_signed,
            "first": self.first, "last": self.last, "status_codes": self.status_codes,
            "status_last": self.status_last, "status_errors": self.status_errors,
            "status_pending": len(self.tasks)})

    async def ctx(self, app: web.Application) -> Any:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.args.status_concurrency * 2),
            timeout=aiohttp.ClientTimeout(total=60))
        yield
        await self.session.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--hub", default="", help="hub base URL (for --status-back)")
    p.add_argument("--ident", default="", help="the run's identity dir (token secret)")
    p.add_argument("--organ", default="000.00.44.H63", help="the recipient organisation we act as")
    p.add_argument("--status-back", action="store_true")
    p.add_argument("--status-concurrency", type=int, default=64)
    args = p.parse_args(argv)
    peer = Peer(args)
    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_post("/{tail:.*}", peer.receive)
    app.router.add_get("/stats", peer.stats)
    app.cleanup_ctx.append(peer.ctx)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
