"""``GET /v1/adapters``: every adapter instance and its health (operators, auditors).

Each item: name, class, mode (deliver, ingest, pull), routes, rules,
state, health (ok, degraded, down, unserved), last error and its time,
queued deliveries, attempts and outcomes since start, last poll and
documents taken in (ingesting adapters), errors by code.  Built by
``hub.health.adapter_report``.
"""
from __future__ import annotations

from aiohttp import web

from hub.api.base import hub_of, identity, json_response
from hub.health import adapter_report


async def list_adapters(request: web.Request) -> web.Response:
    hub = hub_of(request)
    identity(request, "operator", "auditor")
    return json_response({"items": adapter_report(hub, await hub.spool.stats())})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/adapters", list_adapters)
