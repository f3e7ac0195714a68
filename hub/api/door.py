"""``/vxp/*``: the national-SDK door's HTTP edge (the logic is ``hub.door.service``).

An SDK user sets its endpoint to ``http://HOST:PORT/vxp``; the SDK appends
the operation (``/vxp/sendEdoc``...).  Every answer is the JSON object the
SDK parses (``status``, ``ErrorCode``, ``ErrorDesc``, then the operation's
fields), a refusal included: this module answers every request itself and
never lets the hub's ``{"error": ...}`` shape out.  The HTTP status is
informative only (the SDK ignores it): 200, 403 for a refused signature or
a forbidden call, 404 for a document not in the mailbox, cleanup's own
status for a refused envelope, 503 under backpressure.

``Expect: 100-continue`` (getEdoc, updateStatus, the count calls,
registerAgency, deleteAgency) is answered by aiohttp before the handler
reads the body, so the SDK does not stall.  The sendEdoc answer is ASCII
(the SDK reads it as US-ASCII).  ``downloadEdoc`` answers the document's
bytes; the unsigned ``downloadEdoc2`` variant is refused (``missing_header``).
"""
from __future__ import annotations

import logging

from aiohttp import web

from hub.api.base import HUB, hub_of, read_body
from hub.door.service import OPERATIONS, Caller, Door, DoorRefusal, is_auth_error
from hub.errors import HubError
from hub.vxp.protocol import answer

log = logging.getLogger("hub.api.door")

DOOR = web.AppKey("door", Door)
PREFIX = "/vxp"
#: Bodies of calls other than sendEdoc (``{}``, registerAgency's data) are read up to this.
SMALL_BODY = 64 * 1024
#: Every operation and its method, as the SDK sends it.
METHODS = {**{name: "POST" for name in OPERATIONS}, "downloadEdoc": "GET"}


def _answer(body: bytes, status: int = 200, content_type: str = "application/json") -> web.Response:
    return web.Response(body=body, status=status, content_type=content_type)


def _fail(exc: HubError, operation: str) -> web.Response:
    status = 403 if is_auth_error(exc) else exc.http_status
    return _answer(answer("FAIL", exc.code, exc.message, ascii_only=operation == "sendEdoc"),
                   status)


async def handle(request: web.Request, *, operation: str) -> web.StreamResponse:
    door = request.app[DOOR]
    hub = hub_of(request)
    caller: Caller | None = None
    try:
        if operation == "sendEdoc":
            body: bytes | None = await read_body(request, hub.settings.max_envelope_size + 2)  # type: ignore[assignment]
        else:
            await read_body(request, SMALL_BODY)
            body = None
        caller = await door.authenticate(request.headers, body)
        if operation == "downloadEdoc":
            return _answer(await door.document(caller), content_type="application/xml")
        fields = await OPERATIONS[operation](door, caller)
        return _answer(answer(ascii_only=operation == "sendEdoc", **fields))
    except HubError as exc:
        door.refused(exc, operation=operation, remote=request.remote or "-",
                     headers=request.headers, caller=caller)
        return _fail(exc, operation)
    except Exception:
        log.exception("internal error in door operation %s", operation)
        return _fail(HubError("internal error; see the hub's log", code="internal_error"),
                     operation)


def _handler(operation: str):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        return await handle(request, operation=operation)
    handler.__name__ = f"door_{operation}"
    return handler


async def unknown(request: web.Request) -> web.StreamResponse:
    """Any other path or method under ``/vxp/``: an SDK-shaped refusal, not the hub's."""
    name = request.match_info["operation"]
    if name in METHODS:
        exc: HubError = DoorRefusal("bad_request", f"{name} is {METHODS[name]}, not "
                                    f"{request.method}", http_status=405)
    else:
        exc = DoorRefusal("unknown_operation", f"the door has no operation {name!r}",
                          http_status=404)
    return _fail(exc, name)


async def _open_door(app: web.Application) -> None:
    app[DOOR] = Door(app[HUB])


def setup_routes(app: web.Application) -> None:
    for name, method in METHODS.items():
        app.router.add_route(method, f"{PREFIX}/{name}", _handler(name))
    app.router.add_route("*", PREFIX + "/{operation}", unknown)
    app.on_startup.append(_open_door)


__all__ = ["DOOR", "PREFIX", "setup_routes"]
