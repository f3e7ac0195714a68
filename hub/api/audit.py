"""``/v1/audit``: the hash-chained log for auditors and admins.

``GET /v1/audit`` (filters; ``format=jsonl`` is the export format: one event
per line, every column, ``detail`` as an object), ``GET /v1/audit/verify``
and ``GET /v1/audit/checkpoints``.  The auditor itself (start-up records,
checkpoints, verification) is ``hub.audit.auditor``, started by ``hub.node``.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from hub.api.base import hub_of, identity, int_param, iso, json_response, parse_time
from hub.api.events import event_data, filters
from hub.errors import HubError, ValidationError
from spool.base import EventQuery

log = logging.getLogger("hub.api.audit")


async def get_audit(request: web.Request) -> web.Response:
    hub = hub_of(request)
    identity(request, "auditor")
    q = request.query
    query: EventQuery = {"after": int_param(request, "after", 0),
                         "limit": int_param(request, "limit", 100, 1, 1000)}
    for name in ("since", "until"):
        if q.get(name):
            query[name] = parse_time(name, q[name])  # type: ignore[literal-required]
    query.update(filters(request))  # type: ignore[typeddict-item]
    fmt = q.get("format", "json")
    if fmt not in ("json", "jsonl"):
        raise ValidationError(f"format must be json or jsonl, not {fmt!r}", code="bad_parameter",
                              details={"parameter": "format", "allowed": ["json", "jsonl"]})
    events = await hub.spool.query_events(query)
    nxt = (str(request.rel_url.update_query({"after": events[-1].id}))
           if len(events) == query["limit"] else None)
    if fmt == "jsonl":
        text = "".join(json.dumps(e.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"
                       for e in events)
        return web.Response(text=text, content_type="application/x-ndjson",
                            headers={"Link": f'<{nxt}>; rel="next"'} if nxt else None)
    body: dict[str, Any] = {"items": [event_data(e) for e in events]}
    if nxt:
        body["next"] = nxt
    return json_response(body)


async def get_verify(request: web.Request) -> web.Response:
    hub = hub_of(request)
    identity(request, "auditor")
    if hub.auditor is None:
        raise HubError("the auditor is not running", code="not_ready", http_status=503)
    report = await hub.auditor.verify()
    if not report.ok:
        log.error("audit log verification failed: %s", report.summary())
    return json_response(report.to_dict())  # a broken chain is an answer, not an error


async def get_checkpoints(request: web.Request) -> web.Response:
    hub = hub_of(request)
    identity(request, "auditor")
    limit = int_param(request, "limit", 100, 1, 1000)
    rows = await hub.spool.checkpoints(int_param(request, "after", 0), limit)
    items = [{"id": r["id"], "at": r["at"], "at_iso": iso(r["at"]), "event_id": r["event_id"],
              "head_hash": r["head_hash"], "xml": r["xml"].decode("utf-8")} for r in rows]
    body: dict[str, Any] = {"items": items}
    if len(items) == limit:
        body["next"] = str(request.rel_url.update_query({"after": str(items[-1]["id"])}))
    return json_response(body)


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/audit", get_audit)
    app.router.add_get("/v1/audit/verify", get_verify)
    app.router.add_get("/v1/audit/checkpoints", get_checkpoints)
