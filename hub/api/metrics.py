"""``GET /metrics``: the hub's numbers in Prometheus text format (``hub.metrics``).

The counters are fed by a spool listener that ``hub.node`` installs whether or
not the web app runs; this route only renders them with the gauges read from
``spool.stats()`` at scrape time.
"""
from __future__ import annotations

from aiohttp import web

from hub.api.base import hub_of
from hub.errors import HubError
from hub.health import adapter_report
from hub.metrics import CONTENT_TYPE, render


async def get_metrics(request: web.Request) -> web.Response:
    hub = hub_of(request)
    if hub.metrics is None:
        raise HubError("metrics are not running", code="not_ready", http_status=503)
    stats = await hub.spool.stats()
    text = render(hub.metrics, stats, hub.clock(), hub.spool, hub.missing_routes,
                  adapter_report(hub, stats))
    return web.Response(body=text.encode("utf-8"), headers={"Content-Type": CONTENT_TYPE})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", get_metrics)
