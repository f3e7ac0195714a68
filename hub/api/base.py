"""Shared pieces of the HTTP edge: the app key, JSON and error responses, callers.

Every route module (``hub.api`` and the feature modules it mounts) uses these,
so errors look the same everywhere and roles are checked the same way.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, DecompressSizeError

from hub.api.ratelimit import check_identity
from hub.api.tls import client_cert_identity
from hub.auth import Identity
from hub.context import HubContext
from hub.errors import (BadRequestError, ConflictError, HubError, NotFoundError,
                        RequestTimeoutError, TooLargeError, ValidationError)
from spool.payloads import LARGE, BodyWriter, PayloadStore, SpooledBody

log = logging.getLogger("hub.api.app")

HUB = web.AppKey("hub", HubContext)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

XML_TYPES = {"application/xml", "text/xml", "application/edxml+xml", "application/octet-stream", ""}


def json_response(data: Any, status: int = 200, **kwargs: Any) -> web.Response:
    return web.Response(text=json.dumps(data, ensure_ascii=False, default=str), status=status,
                        content_type="application/json", **kwargs)


def fit_page(items: list[Any], max_bytes: int) -> int:
    """How many of ``items`` (at least one, so paging always moves on) fit in a
    JSON page of about ``max_bytes``: listings are bounded in bytes as well as
    in count (``max_listing_bytes``), and a page cut short carries its cursor."""
    total = 0
    for count, item in enumerate(items):
        total += len(json.dumps(item, ensure_ascii=False, default=str).encode("utf-8")) + 1
        if total > max_bytes and count:
            return count
    return len(items)


def error_response(exc: HubError) -> web.Response:
    headers = {}
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="lienthong-hub"'
    retry_after = exc.details.get("retry_after") if exc.details else None
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    return json_response(exc.to_dict(), status=exc.http_status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RequestTimeoutError as exc:
        log.info("client %s sent its body too slowly on %s %s: %s", request.remote, request.method,
                 request.path, exc.message)
        resp = error_response(exc)
        resp.force_close()  # aiohttp drains what is left for lingering_time, then closes
        return resp
    except HubError as exc:
        return error_response(exc)
    except web.RequestPayloadError as exc:
        # The rest of such a body cannot be read either: end it here, so that aiohttp
        # does not read it again after the answer (and log that as unhandled), and
        # close the connection, whose framing is lost.
        request.content.feed_eof()
        resp = error_response(_payload_error(exc))
        resp.force_close()
        return resp
    except ConnectionResetError:
        # The client went away (an upload dropped half-way): nothing to answer, nothing broken.
        log.info("client %s disconnected during %s %s", request.remote, request.method,
                 request.path)
        return error_response(BadRequestError("the client went away", code="client_disconnected"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        codes = {404: "not_found", 405: "method_not_allowed", 413: "envelope_too_large"}
        err = HubError(exc.reason, code=codes.get(exc.status, f"http_{exc.status}"),
                       http_status=exc.status)
        return error_response(err)
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return error_response(HubError("internal error; see the hub's log", code="internal_error"))


def _payload_error(exc: web.RequestPayloadError) -> HubError:
    """A body aiohttp could not decode: 400 with a stable code, never 500."""
    cause = exc.__cause__
    if isinstance(cause, (ContentEncodingError, DecompressSizeError)):
        return BadRequestError("the body is not in the Content-Encoding it names",
                               code="bad_content_encoding")
    return BadRequestError("the request body is malformed (chunked encoding or length)",
                           code="bad_body")


def hub_of(request: web.Request) -> HubContext:
    return request.app[HUB]


def identity(request: web.Request, *roles: str) -> Identity:
    """The caller, who must hold one of ``roles`` (admin always may)."""
    hub = hub_of(request)
    header = request.headers.get("Authorization")
    by_cert = client_cert_identity(hub, request) if header is None else None
    ident = by_cert or hub.tokens.from_header(header)
    check_identity(request, ident.organ, ident.role)
    if roles:
        ident.require(*roles)
    return ident


def speaks_for(hub: HubContext, ident: Identity, organ: str | None) -> bool:
    """Is ``organ`` one of the caller's own?  An agency's own is itself; a
    relay's, the organisations its route speaks for; staff roles' (operator,
    auditor, admin), every one."""
    if ident.role == "agency":
        return organ == ident.organ
    if ident.role == "relay":
        return organ is not None and ident.route is not None and \
            hub.directory.may_speak_for(ident.route, organ)
    return True


_WRITE_EVERY = 1 << 20


async def read_body(request: web.Request, limit: int,
                    spill: PayloadStore | None = None) -> bytes | SpooledBody:
    """The body, refused (413) before it is read whole when it is too large.

    With ``spill``, a body past ``spool.payloads.LARGE`` bytes is streamed into the
    payload store's ``incoming/`` (hashed, fsynced) and returned as a
    ``SpooledBody``; the caller discards it unless the spool adopted it.

    A body must arrive within ``body_read_timeout`` plus one second per
    ``min_body_rate`` bytes received so far: a client trickling it is answered
    408 and its connection closed, instead of holding it open indefinitely.
    """
    if request.content_length is not None and request.content_length > limit:
        raise TooLargeError(f"body of {request.content_length} bytes exceeds max_envelope_size "
                            f"({limit})", details={"limit": limit})
    settings = hub_of(request).settings
    grace, rate = float(settings.body_read_timeout), max(1, int(settings.min_body_rate))
    loop = asyncio.get_running_loop()
    started = loop.time()
    chunks: list[bytes] = []
    size = pending = 0
    writer: BodyWriter | None = None
    try:
        while True:
            try:
                async with asyncio.timeout_at(started + grace + size / rate):
                    chunk = await request.content.readany()
            except TimeoutError:
                raise RequestTimeoutError(
                    f"request body too slow: {size} bytes in {loop.time() - started:.0f}s "
                    f"(body_read_timeout {grace:g}s, min_body_rate {rate} B/s)") from None
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise TooLargeError(f"body exceeds max_envelope_size ({limit})",
                                    details={"limit": limit})
            chunks.append(chunk)
            pending += len(chunk)
            if spill is not None and size > LARGE and pending >= _WRITE_EVERY:
                if writer is None:
                    writer = await asyncio.to_thread(BodyWriter, spill)
                await asyncio.to_thread(writer.write, b"".join(chunks))
                chunks, pending = [], 0
        if writer is None:
            return b"".join(chunks)
        if chunks:
            await asyncio.to_thread(writer.write, b"".join(chunks))
        return await asyncio.to_thread(writer.finish)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


def iso(ts: float | None) -> str | None:
    """Epoch seconds → ISO 8601 UTC with milliseconds (``None`` stays ``None``)."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def int_param(request: web.Request, name: str, default: int, lo: int = 0, hi: int = 1 << 62) -> int:
    """A bounded integer query parameter, or a clear 422."""
    try:
        return min(max(int(request.query.get(name, default)), lo), hi)
    except ValueError:
        raise ValidationError(f"{name} must be a number", code="bad_parameter",
                              details={"parameter": name}) from None


def parse_time(name: str, raw: str) -> float:
    """A time query parameter: ISO 8601 (naive = UTC) or epoch seconds; a clear 422 otherwise."""
    value = raw.strip()
    try:
        epoch = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(epoch):
            raise ValidationError(f"{name} must be a finite time, not {raw!r}",
                                  code="bad_parameter", details={"parameter": name})
        return epoch
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValidationError(f"{name} must be ISO 8601 or epoch seconds, not {raw!r}",
                              code="bad_parameter", details={"parameter": name}) from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


async def resolve_document(hub: HubContext, text: str, *, parameter: str = "id") -> str:
    """The message id a caller means: a message id as it is, or the DocumentId
    of a document ("OrganId,date,number/notation") the hub carried.

    A DocumentId two senders used is ambiguous (409, listing the message ids);
    one the hub never carried is 404, naming what was tried."""
    text = text.strip()
    if await hub.spool.envelope(text) is not None:
        return text
    found = await hub.spool.find_by_document_id(text)
    if len(found) == 1:
        return found[0]["id"]
    if found:
        raise ConflictError(f"DocumentId {text!r} names {len(found)} documents: give one of "
                            f"their message ids", code="ambiguous_document",
                            details={parameter: text, "ids": [e["id"] for e in found]})
    raise NotFoundError(f"no message id or DocumentId {text!r} in the spool",
                        details={parameter: text})
