"""The connection guard: timeouts and a cap on connections, below aiohttp's HTTP.

Where it sits: between the listening socket and aiohttp's request handler.
``lienthong serve`` runs the app on a ``GuardedRunner``, whose protocol
factory wraps each connection's ``RequestHandler`` in a ``_Guarded``
protocol that passes every byte through and adds what aiohttp does not do:

- ``max_connections``: a connection over the cap is answered ``503
  too_many_connections`` at once and closed, before any of its bytes is read;
- ``header_read_timeout``: a connection must deliver a whole request head
  within this long after it opens, or after the first byte of its next
  request (slow-loris: headers trickled a byte at a time);
- ``idle_timeout``: aiohttp's keep-alive timeout, from the end of one
  response until the first byte of the next request.

The body has its own rule (``body_read_timeout`` and ``min_body_rate``),
applied where a body is read (``hub.api.base.read_body``).

A request "starts" when its head is parsed and the app's middleware sees
it (``guard_middleware``, the outermost); the guard finds a request's
connection by its transport.  Tests that run the app on aiohttp's test
server have no guard: the middleware then does nothing.
"""
from __future__ import annotations

import asyncio
import socket
import json
import logging
import time
from typing import Any, Callable

from aiohttp import web

from hub.config import Settings

log = logging.getLogger("hub.api.guard")

Handler = Callable[[web.Request], Any]

_BUSY = json.dumps({"error": {"code": "too_many_connections",
                              "message": "the hub has as many connections open as it serves; "
                                         "try again shortly"}}).encode()
_BUSY_ANSWER = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                % (len(_BUSY), _BUSY))
#: Seconds between two log lines about refused connections (a flood is one line a while).
_REFUSAL_NOTE_EVERY = 10.0


class ConnectionGuard:
    """The open connections, and the limits they live under."""

    def __init__(self, settings: Settings) -> None:
        self.max_connections = int(settings.max_connections)
        self.header_timeout = float(settings.header_read_timeout)
        self.live: dict[Any, _Guarded] = {}  # transport -> its connection
        self.refused = 0
        self._refused_noted = 0
        self._noted_at = 0.0

    def wrap(self, make_handler: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Guarded(self, make_handler)

    def over_cap(self) -> None:
        self.refused += 1
        now = time.monotonic()
        if now - self._noted_at >= _REFUSAL_NOTE_EVERY:
            log.warning("connection cap reached (max_connections %d): refused %d connection(s)",
                        self.max_connections, self.refused - self._refused_noted)
            self._noted_at, self._refused_noted = now, self.refused

    def request_started(self, request: web.Request) -> "_Guarded | None":
        conn = self.live.get(request.transport)
        if conn is not None:
            conn.busy += 1
            conn.disarm()
        return conn


class _Guarded(asyncio.Protocol):
    """One client connection: aiohttp's handler inside, the guard's timer around it."""

    def __init__(self, guard: ConnectionGuard, make_handler: Callable[[], asyncio.Protocol]) -> None:
        self.guard = guard
        self._make_handler = make_handler
        self.inner: asyncio.Protocol | None = None
        self.transport: asyncio.Transport | None = None
        self.busy = 0  # requests of this connection in the app's hands
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if len(self.guard.live) >= self.guard.max_connections:
            self.guard.over_cap()
            transport.write(_BUSY_ANSWER)
            transport.close()
            return
        self.transport = transport
        self.guard.live[transport] = self
        self.inner = self._make_handler()
        self.inner.connection_made(transport)
        self.arm()

    def data_received(self, data: bytes) -> None:
        if self.inner is None:
            return
        if not self.busy and self._timer is None:
            self.arm()  # the first byte of the next request: its head has header_timeout
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if self.transport is not None:
            self.guard.live.pop(self.transport, None)
        if self.inner is not None:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    # -- the header timer ------------------------------------------------------------------

    def arm(self) -> None:
        self.disarm()
        if self.guard.header_timeout > 0:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.guard.header_timeout, self._expired)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def request_finished(self) -> None:
        self.busy -= 1

    def _expired(self) -> None:
        self._timer = None
        transport = self.transport
        if self.busy or transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size():  # still sending the last answer
            self.arm()
            return
        peer = transport.get_extra_info("peername")
        log.info("closing the connection of %s: no complete request head within %gs",
                 peer[0] if peer else "?", self.guard.header_timeout)
        transport.close()


GUARD = web.AppKey("guard", ConnectionGuard)


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app.get(GUARD)
    conn = guard.request_started(request) if guard is not None else None
    try:
        return await handler(request)
    finally:
        if conn is not None:
            conn.request_finished()


class GuardedRunner(web.AppRunner):
    """``web.AppRunner`` whose sites accept connections through the app's guard."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guarded: Callable[[], asyncio.Protocol] | None = None

    @property
    def server(self):  # type: ignore[no-untyped-def, override]
        inner = super().server
        if inner is None:
            return None
        if self._guarded is None:
            self._guarded = self.app[GUARD].wrap(inner)
        return self._guarded


async def serve(app: web.Application, settings: Settings,
                sock: socket.socket | None = None) -> GuardedRunner:
    """Start ``app`` behind the guard, on ``sock`` (already bound and listening)
    or else on ``settings.listen``; the caller cleans it up."""
    runner = GuardedRunner(app, access_log=None, handle_signals=False,
                           keepalive_timeout=float(settings.idle_timeout))
    await runner.setup()
    from hub.api.base import HUB
    from hub.api.tls import server_context
    tls = server_context(settings, app.get(HUB))
    site: web.BaseSite = (web.SockSite(runner, sock, ssl_context=tls) if sock is not None
                          else web.TCPSite(runner, settings.listen_host, settings.listen_port,
                                           ssl_context=tls))
    await site.start()
    return runner
