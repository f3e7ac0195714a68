"""The adapters' health, as operators see it (``lienthong adapters list``, ``GET /v1/adapters``).

Where it sits: beside the queue manager and the ingest supervisor, reading
them.  Each adapter instance gets one ``RouteHealth``, fed by the queue
manager after every attempt (``record``) and read together with the ingest
loop's restarts, the adapter's own ``health()`` facts (last poll, documents
taken in, platform errors by code) and the spool's queue counts.

Health
    ``ok``        the last attempt (or poll) succeeded, or nothing happened yet;
    ``degraded``  the last attempt deferred, or the ingest loop restarted in
                  the last ``RECENT`` seconds;
    ``down``      ``DOWN_AFTER`` attempts in a row failed, or the ingest loop
                  keeps failing (restarted ``DOWN_AFTER`` times in a row);
    ``unserved``  a route of the directory with no adapter instance: its
                  documents wait and fail after ``maximal_lifetime``.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from spool.base import Stats
from spool.states import PENDING_STATES

if TYPE_CHECKING:
    from hub.context import HubContext

#: Failures in a row after which an instance is down.
DOWN_AFTER = 3
#: How recent an ingest restart must be to count as degraded (seconds).
RECENT = 300.0
_PENDING = frozenset(s.value for s in PENDING_STATES)


@dataclasses.dataclass
class RouteHealth:
    attempts: int = 0
    delivered: int = 0
    deferred: int = 0
    refused: int = 0
    failures_in_a_row: int = 0
    last_ok_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None

    def record(self, verdict: str, reason: str, now: float) -> None:
        """One attempt's outcome (``delivered``, ``refused``, ``defer``)."""
        self.attempts += 1
        if verdict == "delivered":
            self.delivered += 1
            self.failures_in_a_row = 0
            self.last_ok_at = now
            return
        if verdict == "refused":
            self.refused += 1
            self.failures_in_a_row = 0  # the destination answered: it is up
            self.last_ok_at = now
        else:
            self.deferred += 1
            self.failures_in_a_row += 1
        self.last_error, self.last_error_at = reason[:500], now


def _iso(at: float | None) -> str | None:
    return datetime.fromtimestamp(at, timezone.utc).isoformat().replace("+00:00", "Z") if at else None


def adapter_report(hub: "HubContext", stats: Stats) -> list[dict[str, Any]]:
    """One entry per adapter instance (and per unserved route), for operators."""
    queued: dict[str, int] = {}
    for state, route, n in stats["deliveries"]:
        if state in _PENDING:
            queued[route] = queued.get(route, 0) + n
    now = hub.clock()
    routes_of: dict[str, list[str]] = {}
    for organ in hub.directory:
        routes_of.setdefault(organ.route, []).append(organ.id)
    out = []
    for name, adapter in sorted(hub.adapters.items()):
        rh = hub.qmgr.health.get(name) if hub.qmgr is not None else None
        loop = hub.ingest.loops.get(name) if hub.ingest is not None else None
        extra = _extra(adapter)
        health = "ok"
        if rh is not None and rh.failures_in_a_row >= DOWN_AFTER:
            health = "down"
        elif rh is not None and rh.failures_in_a_row:
            health = "degraded"
        last_error, last_error_at = (rh.last_error, rh.last_error_at) if rh else (None, None)
        if loop is not None:
            if loop.failures_in_a_row >= DOWN_AFTER:
                health = "down"
            elif loop.last_error_at is not None and now - loop.last_error_at < RECENT \
                    and health == "ok":
                health = "degraded"
            if loop.last_error_at and (last_error_at is None or loop.last_error_at > last_error_at):
                last_error, last_error_at = loop.last_error, loop.last_error_at
        own_error, own_at = extra.get("last_error"), extra.get("last_error_at")
        if own_error and last_error is None:  # the adapter's own (a poll's platform error)
            last_error, shown_at = str(own_error), own_at
        else:
            shown_at = _iso(last_error_at)
        mode = "pull" if adapter.pull else "+".join(
            m for m, on in (("deliver", adapter.delivers), ("ingest", adapter.ingests)) if on)
        out.append({
            "name": name, "class": type(adapter).__name__, "mode": mode,
            "routes": [name], "organisations": len(routes_of.get(name, [])),
            "rules": [r.pattern for r in hub.directory.rules if r.route == name],
            "state": "running" if hub.qmgr is not None else "stopped",
            "health": health, "last_error": last_error, "last_error_at": shown_at,
            "queued": queued.get(name, 0),
            "attempts": rh.attempts if rh else 0, "delivered": rh.delivered if rh else 0,
            "deferred": rh.deferred if rh else 0, "refused": rh.refused if rh else 0,
            "last_delivered_at": _iso(rh.last_ok_at) if rh else None,
            "ingest_restarts": loop.restarts if loop else None,
            "last_poll_at": extra.get("last_poll_at"), "taken_in": extra.get("taken_in"),
            "errors_by_code": extra.get("errors_by_code", {}),
            "facts": {k: v for k, v in extra.items()
                      if k not in ("last_poll_at", "taken_in", "errors_by_code", "last_error",
                                   "last_error_at")},
        })
    for name in hub.missing_routes:
        out.append({"name": name, "class": None, "mode": None, "routes": [name],
                    "organisations": len(routes_of.get(name, [])),
                    "rules": [r.pattern for r in hub.directory.rules if r.route == name],
                    "state": "unserved", "health": "unserved",
                    "last_error": "no adapter instance serves this route: configure "
                                  f"[adapters.{name}] in hub.toml",
                    "last_error_at": None, "queued": queued.get(name, 0), "attempts": 0,
                    "delivered": 0, "deferred": 0, "refused": 0, "last_delivered_at": None,
                    "ingest_restarts": None, "last_poll_at": None, "taken_in": None,
                    "errors_by_code": {}, "facts": {}})
    return out


def _extra(adapter: Any) -> dict[str, Any]:
    """The adapter's own facts; ``errors.<code>`` keys are gathered as ``errors_by_code``."""
    try:
        facts = adapter.health()
    except Exception as exc:  # a failing hook never breaks the view
        return {"health_error": f"{type(exc).__name__}: {exc}"}
    if not isinstance(facts, dict):
        return {}
    out: dict[str, Any] = {k: v for k, v in facts.items() if not k.startswith("errors.")}
    by_code = dict(out.pop("errors_by_code", None) or {})
    by_code.update({k[len("errors."):]: v for k, v in facts.items() if k.startswith("errors.")})
    out["errors_by_code"] = by_code
    return out
