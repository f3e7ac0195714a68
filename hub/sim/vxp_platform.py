"""A fake provincial/national VXP platform: a real aiohttp server of the SDKVXP protocol.

Sits outside the hub, as the system the hub's VXP client talks to: tests
start it on 127.0.0.1 port 0, the README walkthrough runs it as a process::

    python -m hub.sim.vxp_platform --listen 127.0.0.1:9100 \\
        --system sys.a:SECRET-A:000.00.00.G22 --system sys.b:SECRET-B:000.00.00.H41

Each operation of spec section 1 is served at ``{prefix}/{operation}``.  A
request is verified with ``hub.vxp.protocol.verify_request`` (MAC over the
received sign-header, signed members against the headers, systemid picks
the secret, timestamp age, sendEdoc's hash-file); a refusal answers HTTP 403
with ``status: FAIL`` and the verification code as ``ErrorCode``.  Answers
have the section 4 shapes; the sendEdoc answer is ASCII.  ``Expect:
100-continue`` is answered by aiohttp before the handler reads the body.
Answers: ``hub.sim.vxp_answers``; state and routing: ``hub.sim.vxp_state``.

Optional OAuth2 gateway (``oauth_clients``): ``POST /token`` issues
client-credentials tokens (HTTP basic or form credentials); every operation
then needs ``Authorization: Bearer`` with a live token, else HTTP 401.

Control (loopback peers only): ``POST /_control`` with JSON ``{"action":
...}``: ``fault`` (fields of ``vxp_faults.Fault``), ``clear_faults``,
``expire_tokens``, ``inject`` (``data_base64``, ``messagetype``, optional
``sender``), ``add_system`` (``system_id``, ``secret``, ``organs``),
``reset_counters``.  ``GET /_control`` shows counters, faults and systems.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import dataclasses
import logging
import signal
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self

from aiohttp import hdrs, web

from hub.clock import Clock
from hub.sim.vxp_answers import HANDLERS
from hub.sim.vxp_faults import Fault, Faults, TokenStore
from hub.sim.vxp_state import Counters, PlatformRefusal, PlatformState
from hub.vxp.protocol import (
    OPERATIONS,
    VxpAuthError,
    answer,
    verify_request,
)

log = logging.getLogger("hub.sim.vxp_platform")
_JSON = "application/json"
_LOOPBACK = ("127.", "::1", "::ffff:127.")


@dataclasses.dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as received, for tests of what a client puts on the wire."""

    operation: str
    method: str
    headers: Mapping[str, str]
    body: bytes


def _json_answer(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type=_JSON)


def _fail(code: str, desc: str, status: int = 200, *, ascii_only: bool = False) -> web.Response:
    return _json_answer(answer("FAIL", code, desc, ascii_only=ascii_only), status)


class FakePlatform:
    """The platform: state, faults, tokens and the aiohttp app serving them."""

    def __init__(self, *, clock: Callable[[], float] | None = None, prefix: str = "",
                 max_age: float = 24 * 3600.0, max_future: float = 300.0,
                 oauth_clients: Mapping[str, str] | None = None,
                 token_lifetime: float = 3600.0, record: int = 200) -> None:
        self.clock: Callable[[], float] = clock if clock is not None else Clock()
        self.state = PlatformState(self.clock)
        self.faults = Faults()
        self.tokens = (TokenStore(oauth_clients, token_lifetime, self.clock)
                       if oauth_clients is not None else None)
        self.prefix = prefix.rstrip("/")
        self.max_age = max_age
        self.max_future = max_future
        self.requests: collections.deque[RecordedRequest] = collections.deque(maxlen=record)
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.host = ""
        self.port = 0
        self.app = web.Application()
        self.app.router.add_post("/token", self._token)
        self.app.router.add_route("*", "/_control", self._control)
        self.app.router.add_route("*", self.prefix + "/{op}", self._operation)

    # ---------------------------------------------------------------- for tests

    @property
    def counters(self) -> Counters:
        return self.state.counters

    @property
    def url(self) -> str:
        """The endpoint a client is configured with (operations are appended to it)."""
        return f"http://{self.host}:{self.port}{self.prefix}"

    @property
    def token_url(self) -> str:
        return f"http://{self.host}:{self.port}/token"

    def add_system(self, system_id: str, secret: str, organs: Iterable[str] = ()) -> None:
        self.state.add_system(system_id, secret, organs)

    def inject(self, data: bytes, messagetype: str = "edoc", sender: str | None = None) -> str:
        """Put a document in its recipients' mailboxes as if a department sent it; its DocId."""
        return self.state.inject(data, messagetype, sender)

    def fail(self, kind: str, operation: str | None = None, **kw: Any) -> Fault:
        """Arm a fault (see ``hub.sim.vxp_faults``) for the next calls."""
        return self.faults.add(Fault(kind, operation, **kw))

    def expire_tokens(self) -> None:
        if self.tokens is not None:
            self.tokens.expire_all()

    # ---------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FakePlatform:
        # Our own socket, so that port 0 tells us which port it got.
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.host, self.port = host, sock.getsockname()[1]
        self._runner = web.AppRunner(self.app, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        log.info("fake VXP platform on %s", self.url)
        return self

    async def close(self) -> None:
        self._closing.set()   # wakes handlers hanging in a timeout fault
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._closing.wait(), seconds)
        except TimeoutError:
            pass

    # ---------------------------------------------------------------- OAuth2

    async def _token(self, request: web.Request) -> web.Response:
        if self.tokens is None:
            raise web.HTTPNotFound()
        form = await request.post()
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        client_id, client_secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        scheme, _, encoded = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, client_secret = base64.b64decode(encoded, validate=True) \
                    .decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return web.json_response({"error": "invalid_request"}, status=400)
        token = self.tokens.issue(client_id, client_secret)
        if token is None:
            self.counters.token_refusals += 1
            return web.json_response({"error": "invalid_client"}, status=401)
        self.counters.tokens_issued += 1
        return web.json_response({"access_token": token, "token_type": "Bearer",
                                  "expires_in": int(self.tokens.lifetime), "scope": "default"})

    def _bearer_ok(self, request: web.Request) -> bool:
        if self.tokens is None:
            return True
        scheme, _, token = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        return scheme.lower() == "bearer" and self.tokens.valid(token.strip())

    # ---------------------------------------------------------------- operations

    async def _operation(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["op"]
        self.counters.calls[name] += 1
        op = OPERATIONS.get(name)
        if op is None:
            return _fail("unknown_operation", f"no operation {name}", 404)
        if request.method != op.method:
            return _fail("bad_request", f"{name} is {op.method}", 405)
        if not self._bearer_ok(request):
            return web.json_response({"error": "invalid_token"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        fault = self.faults.take(name)
        if fault is not None:
            self.counters.faults_applied[fault.kind] += 1
        if fault is not None and fault.kind == "slow":
            await self._sleep(fault.delay)
        if fault is not None and not fault.after:
            spoiled = await self._spoiled(fault)
            if spoiled is not None:
                return spoiled
        body = await request.read()
        self.requests.append(RecordedRequest(name, request.method, dict(request.headers), body))
        try:
            verified = verify_request(request.headers, self.state.secret_for, now=self.clock(),
                                      max_age=self.max_age, max_future=self.max_future,
                                      body=body if op.body == "file" else None)
        except VxpAuthError as exc:
            self.counters.auth_failures[exc.code] += 1
            if exc.code == "bad_mac":
                self.counters.mac_failures += 1
            log.info("%s refused: %s", name, exc.code)
            return _fail(exc.code, exc.message, 403)
        doubled = fault is not None and fault.kind == "duplicate_list"
        try:
            body, content_type = HANDLERS[name](self.state, verified, doubled)
        except PlatformRefusal as exc:
            return _fail(exc.code, exc.desc, 200, ascii_only=name == "sendEdoc")
        response = web.Response(body=body, content_type=content_type)
        if fault is not None and fault.after:
            return await self._spoiled(fault) or response
        return response

    async def _spoiled(self, fault: Fault) -> web.Response | None:
        """The answer a fault puts in place of the real one (None: the real one stands)."""
        if fault.kind == "timeout":
            await self._sleep(fault.delay)
            return web.Response(status=504, text="gateway timeout")
        if fault.kind == "http_error":
            return web.Response(status=fault.status, text="<html>injected error</html>",
                                content_type="text/html")
        if fault.kind == "fail":
            return _fail(fault.error_code, "injected failure")
        if fault.kind == "not_json":
            return web.Response(text="<html>Service Unavailable</html>", content_type="text/html")
        return None

    # ---------------------------------------------------------------- control

    async def _control(self, request: web.Request) -> web.Response:
        if not (request.remote or "").startswith(_LOOPBACK):
            raise web.HTTPForbidden(text="control is for loopback peers only")
        if request.method == "GET":
            return web.json_response(self.snapshot())
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])
        try:
            cmd = await request.json()
            if not isinstance(cmd, dict):
                raise TypeError("expected a JSON object")
            return web.json_response(self._command(cmd))
        except (ValueError, KeyError, TypeError, binascii.Error, PlatformRefusal) as exc:
            return web.json_response({"error": str(exc)}, status=400)

    def _command(self, cmd: dict[str, Any]) -> dict[str, object]:
        action = cmd.get("action")
        if action == "fault":
            return {"fault": self.faults.add(Fault.from_json(cmd)).to_json()}
        if action == "clear_faults":
            self.faults.clear()
        elif action == "expire_tokens":
            self.expire_tokens()
        elif action == "inject":
            data = base64.b64decode(cmd["data_base64"], validate=True)
            return {"DocId": self.inject(data, cmd.get("messagetype", "edoc"), cmd.get("sender"))}
        elif action == "add_system":
            self.add_system(cmd["system_id"], cmd["secret"], cmd.get("organs", ()))
        elif action == "reset_counters":
            self.state.counters = Counters()
        else:
            raise ValueError(f"unknown action {action!r}")
        return {"ok": True}

    def snapshot(self) -> dict[str, object]:
        return {"counters": self.counters.to_json(), "faults": self.faults.to_json(),
                "systems": {s.system_id: sorted(s.organs) for s in self.state.systems.values()},
                "documents": len(self.state.documents)}




async def start_platform(host: str = "127.0.0.1", port: int = 0, *,
                         systems: Iterable[tuple[str, str, Iterable[str]]] = (),
                         **options: Any) -> FakePlatform:
    """Start a fake platform listening on ``host:port`` (0: any free port); ``close()`` it.

    ``systems`` are ``(system_id, secret, organs)``; ``options`` go to ``FakePlatform``.
    """
    platform = FakePlatform(**options)
    for system_id, secret, organs in systems:
        platform.add_system(system_id, secret, organs)
    return await platform.start(host, port)


# ---------------------------------------------------------------- command line

def _seconds(text: str) -> float:
    """A duration with an optional unit: 90, 90s, 15m, 2h."""
    scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], None)
    return float(text[:-1]) * scale if scale else float(text)


def _system(text: str) -> tuple[str, str, list[str]]:
    system_id, sep, rest = text.partition(":")
    secret, _, organs = rest.partition(":")
    if not sep or not system_id or not secret:
        raise argparse.ArgumentTypeError("expected SYSID:SECRET[:ORGANID,ORGANID...]")
    return system_id, secret, [o for o in organs.split(",") if o]


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The fake platform's options, for ``lienthong fake-platform`` or this module's main."""
    # dest is not "listen": `lienthong` reads args.listen as the hub's own listen.
    parser.add_argument("--listen", dest="platform_listen", type=_listen,
                        default=("127.0.0.1", 9100), metavar="HOST:PORT",
                        help="where to listen (default 127.0.0.1:9100; port 0: any free port)")
    parser.add_argument("--system", type=_system, action="append", default=[],
                        metavar="SYSID:SECRET[:ORGANS]",
                        help="a registered system and the comma-separated OrganIds it "
                             "speaks for (repeatable)")
    parser.add_argument("--prefix", default="", help="path the operations sit under, e.g. /vxp/1.0")
    parser.add_argument("--max-age", type=_seconds, default=24 * 3600.0, metavar="DURATION",
                        help="oldest request timestamp accepted (default 24h)")
    parser.add_argument("--oauth-client", action="append", default=[], metavar="ID:SECRET",
                        help="put an OAuth2 client-credentials gateway in front (repeatable)")
    parser.add_argument("--token-lifetime", type=_seconds, default=3600.0, metavar="DURATION",
                        help="lifetime of gateway tokens (default 3600s)")


async def _serve(args: argparse.Namespace) -> None:
    oauth = dict(c.split(":", 1) for c in args.oauth_client) if args.oauth_client else None
    host, port = args.platform_listen
    platform = await start_platform(host, port, systems=args.system, prefix=args.prefix,
                                    max_age=args.max_age, oauth_clients=oauth,
                                    token_lifetime=args.token_lifetime)
    print(f"fake VXP platform: endpoint {platform.url}"
          + (f", token {platform.token_url}" if oauth else ""), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await platform.close()


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; the exit status."""
    if any(":" not in c for c in args.oauth_client):
        print("--oauth-client must be ID:SECRET")
        return 2
    asyncio.run(_serve(args))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub.sim.vxp_platform",
                                     description="A fake VXP platform (SDKVXP protocol).")
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
