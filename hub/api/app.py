"""The HTTP API (aiohttp): the hub's front door and its operators' window.

Built by ``create_app(settings)``; the hub's parts are opened in a
``cleanup_ctx`` generator and kept under ``HUB``.  Every error leaves through
one middleware that turns ``hub.errors`` into the contract's shape
``{"error": {"code", "message", "details"}}`` — the only place HTTP status
codes are chosen.
"""
from __future__ import annotations

import asyncio
import importlib
import os
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Mapping, NoReturn, Sequence

from aiohttp import web

from hub.api.guard import GUARD, ConnectionGuard, guard_middleware
from hub.api.ratelimit import LIMITS, Limits, ratelimit_middleware
from hub.cleanup import accept as cleanup
from hub.config import Settings
from hub.context import HubContext
from hub.node import open_hub
from hub.errors import ForbiddenError, NotFoundError, PayloadCorruptError, ValidationError
from hub.quarantine import quarantine
from hub.api.base import (HUB, XML_TYPES, errors_middleware, fit_page, hub_of, identity,
                          int_param, iso, json_response, read_body, resolve_document,
                          speaks_for)
from spool.payloads import LARGE, SpooledBody
from spool.records import standing
from spool.states import State

#: Feature modules that mount their own routes: each has ``setup_routes(app)``.
ROUTE_MODULES: tuple[str, ...] = ("hub.api.queue", "hub.api.events", "hub.api.metrics",
                                  "hub.api.receipts", "hub.api.audit", "hub.api.door", "hub.api.adapters")

# -- envelopes ---------------------------------------------------------------

async def post_envelope(request: web.Request) -> web.Response:
    hub = hub_of(request)
    ident = identity(request, "agency", "relay")
    ctype = request.content_type.lower()
    if ctype not in XML_TYPES:
        raise ValidationError(f"Content-Type must be application/xml, not {ctype}: send the edXML "
                              f"envelope itself as the body, with Content-Type: application/xml",
                              code="unsupported_media_type", http_status=415)
    raw = await read_body(request, hub.settings.max_envelope_size, spill=hub.spool.payloads)
    if not raw:
        raise ValidationError("empty body: send an edXML envelope", code="empty_body")
    try:
        result = await cleanup.accept(hub, raw, ident, origin="http")
    finally:
        if isinstance(raw, SpooledBody):  # not adopted by the spool: refused, or a duplicate
            await asyncio.to_thread(raw.discard)
    status = 202 if result.created else 200
    return json_response(result.to_dict(), status=status,
                         headers={"Location": f"/v1/envelopes/{result.id}"})


async def get_envelope(request: web.Request) -> web.Response:
    hub = hub_of(request)
    ident = identity(request)
    message_id = await resolve_document(hub, request.match_info["id"])
    env = await hub.spool.envelope(message_id)
    if env is None:
        raise NotFoundError(f"no envelope {message_id}")
    deliveries = await hub.spool.deliveries(message_id)
    # A party sees it: its sender, or a recipient (who sees only its own rows).
    if not speaks_for(hub, ident, env["sender"]):
        deliveries = [d for d in deliveries if speaks_for(hub, ident, d["recipient"])]
        if not deliveries:
            raise ForbiddenError(f"envelope {message_id} is not yours")
        mine = {d["recipient"] for d in deliveries}
        statuses = [s for s in await hub.spool.statuses(message_id) if s["organ"] in mine]
    else:
        statuses = await hub.spool.statuses(message_id)
    links = await hub.spool.links(message_id)
    return json_response(envelope_view(env, deliveries, statuses, links))


def envelope_view(env: Mapping[str, Any], deliveries: Sequence[Mapping[str, Any]],
                  statuses: Sequence[Mapping[str, Any]],
                  links: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    return {
        "id": env["id"], "kind": env["kind"], "sender": env["sender"],
        "document_id": env["document_id"], "subject": env["subject"], "code": env["code"],
        "status_code": env["status_code"], "response_for": env["response_for"],
        "sha256": env["sha256"], "size": env["size"], "signature": env["signature"],
        "origin": env["origin"], "received_at": iso(env["received_at"]),
        "deliveries": [{
            "recipient": d["recipient"], "route": d["route"], "state": d["state"],
            "attempts": d["attempts"], "last_error": d["last_error"],
            "next_attempt_at": iso(d["next_attempt_at"]) if d["state"] == "deferred" else None,
            "expires_at": iso(d["expires_at"]), "updated_at": iso(d["updated_at"]),
            "fetched_at": iso(d["fetched_at"]),
            "business_status": d["business_status"],
            "business_status_at": iso(d["business_status_at"]),
        } for d in deliveries],
        "statuses": [{**s, "received_at": iso(s["received_at"])} for s in statuses],
        "irregularities": env.get("irregularities", []),
        "standing": standing({link["type"] for link in links}),
        "links": [{"type": link["type"], "id": link["id"], "document_id": link["document_id"],
                   **link["detail"]} for link in links],
    }


# -- the mailbox (pull mode) --------------------------------------------------------

async def get_inbox(request: web.Request) -> web.Response:
    hub = hub_of(request)
    ident = identity(request, "agency")
    limit = int_param(request, "limit", 100, 1, 1000)
    items = await hub.spool.inbox(ident.organ, after=int_param(request, "after", 0), limit=limit)
    out = [{"id": i["id"], "kind": i["kind"], "sender": i["sender"],
            "document_id": i["document_id"], "subject": i["subject"], "code": i["code"],
            "status_code": i["status_code"], "size": i["size"], "sha256": i["sha256"],
            "received_at": iso(i["received_at"]), "fetched": i["fetched_at"] is not None,
            "url": f"/v1/inbox/{i['id']}", "cursor": i["delivery_id"]} for i in items]
    fits = fit_page(out, hub.settings.max_listing_bytes)
    full = len(out) == limit or fits < len(out)
    out = out[:fits]
    body: dict[str, Any] = {"organ": ident.organ, "items": out}
    if full:
        body["next"] = f"/v1/inbox?after={out[-1]['cursor']}&limit={limit}"
    return json_response(body)


async def get_inbox_item(request: web.Request) -> web.Response:
    hub = hub_of(request)
    ident = identity(request, "agency")
    message_id = await resolve_document(hub, request.match_info["id"])
    item = await hub.spool.inbox_item(ident.organ, message_id)
    if item is None:
        await not_in_inbox(hub, ident.organ, message_id)
    try:
        # Checked against its digest before a byte goes out: a large file is
        # read through once first, so a corrupt one is a clean 500, never a
        # 200 with the wrong bytes or a stream cut off half-way.
        raw = await hub.spool.payload(item["sha256"], path_over=LARGE)
    except PayloadCorruptError as exc:
        await quarantine(hub, exc, delivery_id=item["id"], message_id=message_id,
                         organ=ident.organ, expected=(State.QUEUED,), where="inbox")
        raise
    if request.method == "GET":  # HEAD only looks: the item stays unfetched
        await hub.spool.mark_fetched(item["id"])
    headers = {"X-Lienthong-Message-Id": message_id, "X-Lienthong-Sender": item["sender"],
               "X-Lienthong-Kind": item["kind"], "X-Lienthong-State": item["state"],
               "ETag": f'"{item["sha256"]}"'}
    if not isinstance(raw, Path):
        return web.Response(body=raw, content_type="application/xml", charset="utf-8",
                            headers=headers)
    # A large document goes out from its payload file, 1 MiB at a time.
    resp = web.StreamResponse(headers={**headers, "Content-Type": "application/xml; charset=utf-8"})
    with open(raw, "rb") as f:
        resp.content_length = os.fstat(f.fileno()).st_size
        await resp.prepare(request)
        while chunk := await asyncio.to_thread(f.read, 1 << 20):
            await resp.write(chunk)
    await resp.write_eof()
    return resp  # type: ignore[return-value]


async def not_in_inbox(hub: HubContext, organ: str, message_id: str) -> NoReturn:
    """Raise 403 for a message that exists but is not addressed to ``organ``, else 404."""
    if await hub.spool.envelope(message_id) is not None:
        raise ForbiddenError(f"message {message_id} is not addressed to {organ}")
    raise NotFoundError(f"message {message_id} is not in the inbox of {organ}")


async def ack_inbox_item(request: web.Request) -> web.Response:
    hub = hub_of(request)
    ident = identity(request, "agency")
    message_id = await resolve_document(hub, request.match_info["id"])
    try:
        state = await hub.spool.ack(ident.organ, message_id)
    except NotFoundError:  # tell "not yours" (403) from "no such message" (404)
        await not_in_inbox(hub, ident.organ, message_id)
        raise
    return json_response({"id": message_id, "recipient": ident.organ, "state": state})


# -- health -----------------------------------------------------------------------

async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    hub = hub_of(request)
    problems = []
    try:
        await hub.spool.ping()
    except Exception as exc:  # not ready is an answer, not an error
        problems.append(f"spool: {exc}")
    pressure = hub.pressure
    if pressure is not None and pressure.reason:
        problems.append(pressure.reason)
    if problems:
        return json_response({"status": "unavailable", "problems": problems}, status=503)
    return json_response({"status": "ready", "hub": hub.hub_id, "spool": hub.spool.backend})


async def openapi(request: web.Request) -> web.Response:
    spec = (Path(__file__).parent / "openapi.json").read_text(encoding="utf-8")
    return web.Response(text=spec, content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/envelopes", post_envelope)
    # {id:.+}: a DocumentId holds "/" (000.01.48.H63,2026/11/20,125/UBND), sent %2F-encoded
    app.router.add_get("/v1/envelopes/{id:.+}", get_envelope)
    app.router.add_get("/v1/inbox", get_inbox)
    app.router.add_get("/v1/inbox/{id:.+}", get_inbox_item)
    app.router.add_post("/v1/inbox/{id:.+}/ack", ack_inbox_item)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/openapi.json", openapi)
    for name in ROUTE_MODULES:
        importlib.import_module(name).setup_routes(app)


def create_app(settings: Settings, *, clock: Callable[[], float] | None = None,
               adapters: dict[str, Any] | None = None) -> web.Application:
    """The aiohttp application for ``settings``; the hub opens with the app."""
    app = web.Application(middlewares=[guard_middleware, errors_middleware, ratelimit_middleware],
                          client_max_size=settings.max_envelope_size + 1)
    app[GUARD] = ConnectionGuard(settings)
    app[LIMITS] = Limits(settings)

    async def hub_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_hub(settings, clock=clock, run_queue=True, adapters=adapters) as hub:
            app[HUB] = hub
            yield

    app.cleanup_ctx.append(hub_ctx)
    add_routes(app)
    return app
