"""``/v1/receipts``: the signed receipts, for agencies and auditors.

``GET /v1/receipts`` (filters, paging by ``after`` = the receipt's row
sequence, which only grows, so incremental exports never miss a late
receipt; ``format=json|csv``), ``GET /v1/receipts/{id}`` (the signed XML as
stored), ``GET /v1/hub/certificate`` (public: what auditors verify with).
An agency sees the receipts of documents it sent or received.  The receipts
themselves are issued by ``hub.receipts.issuer``, started by ``hub.node``.
"""
from __future__ import annotations

import csv
import io
from typing import Any

from aiohttp import web

from hub.api.base import (fit_page, hub_of, identity, int_param, iso, json_response,
                          parse_time, resolve_document)
from hub.errors import ForbiddenError, NotFoundError, ValidationError
from hub.receipts.format import EVENTS
from hub.receipts.issuer import RECORDED
from spool.base import ReceiptQuery, ReceiptRow
from spool.states import State

COLUMNS = ("seq", "id", "message_id", "event", "sender", "recipient", "state",
           "business_status", "time", "document_sha256", "sender_signature", "url")
_STATES = frozenset(s.value for s in State) | {RECORDED}


def _bad(name: str, message: str, **details: Any) -> ValidationError:
    return ValidationError(message, code="bad_parameter", details={"parameter": name, **details})


def time_param(request: web.Request, name: str) -> float | None:
    """ISO 8601 (naive = UTC) or epoch seconds → epoch seconds; absent → None."""
    value = request.query.get(name, "").strip()
    return parse_time(name, value) if value else None


def _choice(request: web.Request, name: str, allowed: Any) -> str | None:
    value = request.query.get(name, "").strip() or None
    if value is not None and value not in allowed:
        raise _bad(name, f"{name} must be one of {', '.join(sorted(allowed))}",
                   allowed=sorted(allowed))
    return value


def item(r: ReceiptRow) -> dict[str, Any]:
    return {"seq": r["seq"], "id": r["id"], "message_id": r["message_id"], "event": r["event"],
            "sender": r["sender"], "recipient": r["recipient"], "state": r["state"],
            "business_status": r["business_status"], "time": iso(r["at"]),
            "document_sha256": r["sha256"], "sender_signature": r["sig"],
            "url": f"/v1/receipts/{r['id']}"}


async def list_receipts(request: web.Request) -> web.Response:
    hub = hub_of(request)
    ident = identity(request, "agency", "operator", "auditor")  # an agency: its own documents'
    q = request.query
    fmt = _choice(request, "format", {"json", "csv"}) or "json"
    query: ReceiptQuery = {"after": int_param(request, "after", 0),
                           "limit": int_param(request, "limit", 100, 1, 1000)}
    if ident.role == "agency":
        query["visible_to"] = ident.organ
    document = (q.get("document") or q.get("message_id") or "").strip()
    if document:
        query["message_id"] = await resolve_document(hub, document, parameter="document")
    organ = q.get("organ", "").strip()
    if organ:
        query["organ"] = organ
    event = _choice(request, "event", set(EVENTS))
    if event:
        query["event"] = event
    state = _choice(request, "state", _STATES)
    if state:
        query["state"] = state
    for name in ("since", "until"):
        when = time_param(request, name)
        if when is not None:
            query[name] = when  # type: ignore[literal-required]
    rows = await hub.spool.receipts(query)
    items = [item(r) for r in rows]
    fits = fit_page(items, hub.settings.max_listing_bytes)
    full = len(rows) == query["limit"] or fits < len(rows)
    rows, items = rows[:fits], items[:fits]
    nxt = str(request.rel_url.update_query({"after": rows[-1]["seq"]})) if full else None
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(items)
        headers = {"Content-Disposition": 'inline; filename="receipts.csv"'}
        if nxt:
            headers["Link"] = f'<{nxt}>; rel="next"'
        return web.Response(text=buf.getvalue(), content_type="text/csv", charset="utf-8",
                            headers=headers)
    body: dict[str, Any] = {"items": items}
    if nxt:
        body["next"] = nxt
    return json_response(body)


async def get_receipt(request: web.Request) -> web.Response:
    hub = hub_of(request)
    ident = identity(request, "agency", "operator", "auditor")  # an agency: its own documents'
    receipt_id = request.match_info["id"]
    doc = await hub.spool.receipt(receipt_id)
    if doc is None:
        raise NotFoundError(f"no receipt {receipt_id}")
    # An agency: receipts of what it sent, of its own deliveries and statuses, and the
    # acceptance receipt of what it received; never another recipient's.
    if not ident.may_see(doc["sender"], doc["recipient"]) and not (
            doc["recipient"] is None and await hub.spool.has_delivery(doc["message_id"],
                                                                      ident.organ)):
        raise ForbiddenError(f"receipt {receipt_id} is about a delivery that is not yours")
    return web.Response(body=doc["xml"], content_type="application/xml",
                        headers={"Content-Disposition": f'inline; filename="{receipt_id}.xml"'})


async def hub_certificate(request: web.Request) -> web.Response:
    """The hub's certificate (public): what receipts are verified with, offline."""
    return web.Response(body=hub_of(request).keys.cert_pem, content_type="application/x-pem-file")


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/receipts", list_receipts)
    app.router.add_get("/v1/receipts/{id}", get_receipt)
    app.router.add_get("/v1/hub/certificate", hub_certificate)
