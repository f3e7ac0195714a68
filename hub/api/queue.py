"""The operators' window on the queue: list, show, hold, release, retry, drop.

``GET /v1/queue`` is Postfix's ``mailq`` (one row per delivery, filters),
``GET /v1/queue/{id}`` its ``postcat`` (metadata, attempts, last error,
payload summary, the message's events), and ``POST /v1/queue/{id}/<action>``
its ``postsuper``.  ``{id}`` is a delivery id (a number) or a message id (all
of that message's deliveries).  Reading needs operator, auditor or admin;
acting needs operator or admin, and every action is recorded with who did it
and why.
"""
from __future__ import annotations

from typing import Any, Mapping

from aiohttp import web

from hub.config import parse_duration
from hub.context import HubContext
from hub.errors import ConfigError, ConflictError, NotFoundError, ValidationError
from hub.api.base import fit_page, hub_of, identity, int_param, iso, json_response, resolve_document
from spool.states import OPERATOR_MOVES
from spool.states import State

_STATES = {s.value for s in State}


def queue_row(r: Mapping[str, Any], now: float) -> dict[str, Any]:
    return {"delivery_id": r["id"], "message_id": r["envelope_id"], "kind": r["kind"],
            "sender": r["sender"], "recipient": r["recipient"], "route": r["route"],
            "state": r["state"], "attempts": r["attempts"], "crashes": r["crashes"],
            "last_error": r["last_error"], "document_id": r["document_id"],
            "subject": r.get("subject"), "size": r.get("size"),
            "created_at": iso(r["created_at"]), "age_seconds": round(now - r["created_at"], 3),
            "next_attempt_at": iso(r["next_attempt_at"]), "expires_at": iso(r["expires_at"])}


async def list_queue(request: web.Request) -> web.Response:
    hub = hub_of(request)
    identity(request, "operator", "auditor")
    q = request.query
    states = [s for s in q.get("state", "").split(",") if s]
    bad = [s for s in states if s not in _STATES]
    if bad:
        raise ValidationError(f"unknown state(s) {', '.join(bad)}: state is a comma list of "
                              f"{', '.join(s.value for s in State)}", code="bad_parameter",
                              details={"parameter": "state", "allowed": [s.value for s in State]})
    older_than = None
    if q.get("older_than"):
        try:
            older_than = hub.clock() - parse_duration(q["older_than"])
        except ConfigError as exc:
            raise ValidationError(exc.message, code="bad_parameter",
                                  details={"parameter": "older_than"}) from None
    limit = int_param(request, "limit", 100, 1, 1000)
    rows = await hub.spool.queue(states=states, route=q.get("route") or None,
                                 organ=q.get("organ") or None, older_than=older_than,
                                 message_id=q.get("message_id") or None,
                                 after=int_param(request, "after", 0), limit=limit)
    now = hub.clock()
    items = [queue_row(r, now) for r in rows]
    fits = fit_page(items, hub.settings.max_listing_bytes)
    full = len(rows) == limit or fits < len(rows)
    rows, items = rows[:fits], items[:fits]
    body: dict[str, Any] = {"items": items}
    if full:
        nxt = request.rel_url.update_query({"after": rows[-1]["id"]})
        body["next"] = str(nxt)
    return json_response(body)


async def show(request: web.Request) -> web.Response:
    hub = hub_of(request)
    identity(request, "operator", "auditor")
    target = request.match_info["id"]
    if not target.isdigit():  # a delivery id, or a message named by its id or DocumentId
        target = await resolve_document(hub, target)
    message_id = target
    if target.isdigit():
        row = await hub.spool.delivery(int(target))
        if row is None:
            raise NotFoundError(f"no delivery {target}")
        message_id = row["envelope_id"]
    env = await hub.spool.envelope(message_id)
    if env is None:
        raise NotFoundError(f"no message {target} in the spool")
    rows = await hub.spool.queue(message_id=message_id, limit=1000)
    events = await hub.spool.events(0, 1000, message_id=message_id)
    now = hub.clock()
    return json_response({
        "message_id": message_id, "kind": env["kind"], "sender": env["sender"],
        "document_id": env["document_id"], "subject": env["subject"], "code": env["code"],
        "status_code": env["status_code"], "origin": env["origin"],
        "received_at": iso(env["received_at"]),
        "payload": {"size": env["size"], "sha256": env["sha256"],
                    "signature": env["signature"]},
        "deliveries": [queue_row(r, now) for r in rows],
        "events": [{**e.to_dict(), "at": iso(e.at)} for e in events],
    })


async def act(request: web.Request) -> web.Response:
    hub = hub_of(request)
    who = identity(request, "operator")
    action = request.match_info["action"]
    target = request.match_info["id"]
    if not target.isdigit():  # a delivery id, or a message named by its id or DocumentId
        target = await resolve_document(hub, target)
    reason = ""
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            raise ValidationError("body must be JSON: {\"reason\": \"...\"}", code="bad_json") from None
        reason = str((body or {}).get("reason", "")).strip()
    reason = reason or request.query.get("reason", "").strip()
    if action == "drop" and not reason:
        raise ValidationError("drop needs a reason", code="reason_required")
    found, changed = await hub.spool.operator_action(target, action, reason,
                                                     f"{who.organ}/{who.role}")
    if not found:
        raise NotFoundError(f"no delivery or message {target} in the spool")
    if not changed:
        raise await _wrong_state(hub, target, action)
    if hub.qmgr is not None and action in ("release", "retry"):
        hub.qmgr.wake()
    return json_response({"action": action, "target": target, "changed": changed})


async def _wrong_state(hub: HubContext, target: str, action: str) -> ConflictError:
    """Refusal of an action that applies to none of the target's deliveries: what
    state they are in, and which states the action applies to."""
    applies = [s.value for s in OPERATOR_MOVES[action][0]]
    if target.isdigit():
        row = await hub.spool.delivery(int(target))
        states = [row["state"]] if row is not None else []
        now = f"delivery {target} is {states[0] if states else 'gone'}"
    else:
        states = [d["state"] for d in await hub.spool.deliveries(target)]
        counts = {s: states.count(s) for s in dict.fromkeys(states)}
        now = f"the deliveries of message {target} are " + ", ".join(
            f"{s} ({n})" if len(counts) > 1 else s for s, n in counts.items())
    return ConflictError(f"cannot {action}: {now}; {action} applies only to deliveries in "
                         f"{' or '.join(applies)}", code="wrong_state",
                         details={"action": action, "states": sorted(set(states)),
                                  "applies_to": applies})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/v1/queue", list_queue)
    app.router.add_get("/v1/queue/{id:.+}", show)
    app.router.add_post("/v1/queue/{id:.+}/{action:hold|release|retry|drop}", act)
