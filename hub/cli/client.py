"""One HTTP client for the whole command line: where the hub is, tokens, errors.

Where it sits: between the commands (``hub/cli/*``) and a running hub's HTTP
API.  Every command that talks to a hub (submit, queue, tail, receipts, audit)
goes through ``HubClient``; aiohttp is the one HTTP library underneath.

Finding the hub: ``lienthong serve`` records where it listens in
``DATA/run/serve.json`` (address, URL, pid; written atomically once its
socket is bound, removed at a clean stop).  A client finds the hub of a data
directory (``--data``, or ``data_dir`` of ``-c FILE``) from that file; a file
whose pid is no longer alive is stale and ignored.  Without a live file the
configured ``listen`` is tried.  ``--url`` overrides both.

Diagnostics: when nothing answers, the message says which data directory has
no hub and which address was tried; a 401 for a token minted from the local
secret says the hub found there is not that data directory's hub.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import aiohttp

from hub.config import Settings
from hub.errors import HubError

T = TypeVar("T")

#: Where ``lienthong serve`` records its address, relative to the data directory.
SERVE_FILE = Path("run") / "serve.json"


# -- the record of a serving hub -------------------------------------------------------

@dataclasses.dataclass(frozen=True, slots=True)
class Serving:
    """What ``DATA/run/serve.json`` says, and whether its process still runs."""

    address: str
    url: str
    pid: int
    alive: bool


def local_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a hub bound to ``host:port``."""
    host = host.strip("[]")
    # A hub bound to every address is reached on loopback from its own machine.
    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def record_serving(data: Path, host: str, port: int) -> Path:
    """Write ``DATA/run/serve.json`` for this process, atomically (rename)."""
    path = data / SERVE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"address": f"{host}:{port}", "url": local_url(host, port), "pid": os.getpid(),
              "started_at": datetime.now(UTC).isoformat(timespec="seconds")}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def forget_serving(data: Path) -> None:
    """Remove ``DATA/run/serve.json`` if this process wrote it."""
    path = data / SERVE_FILE
    found = read_serving(data)
    if found is not None and found.pid == os.getpid():
        path.unlink(missing_ok=True)


def read_serving(data: Path) -> Serving | None:
    try:
        record = json.loads((data / SERVE_FILE).read_text(encoding="utf-8"))
        pid = int(record["pid"])
        return Serving(str(record["address"]), str(record["url"]), pid, _alive(pid))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class Refused(HubError):
    """Raised when the hub answered a command with an error (exit status 1)."""

    code = "refused"
    exit_status = 1

    def __init__(self, what: str, code: str, message: str, http_status: int) -> None:
        super().__init__(message, code=code, http_status=http_status)
        self.what = what


# -- replies ----------------------------------------------------------------------------

@dataclasses.dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def error(self) -> tuple[str, str]:
        """The hub's ``(code, message)`` for an error reply."""
        try:
            err = json.loads(self.body)["error"]
            return str(err["code"]), str(err["message"])
        except (ValueError, KeyError, TypeError):
            return f"http_{self.status}", self.body.decode("utf-8", "replace")[:300] or "(no body)"


# -- the client -------------------------------------------------------------------------

class HubClient:
    """The running hub of one data directory (or ``--url``), as one caller.

    ``token`` is called for each request (minted tokens stay fresh);
    ``minted`` says it came from the local secret, which shapes the 401 hint.
    """

    def __init__(self, args: Any, settings: Settings, token: Callable[[], str], *,
                 minted: bool = True) -> None:
        self.data = settings.data_path
        self.token = token
        self.minted = minted
        self.stale: Serving | None = None
        given = getattr(args, "url", None)
        if given:
            self.url, self.found_by = str(given).rstrip("/"), "--url"
            return
        found = read_serving(self.data)
        if found is not None and found.alive:
            self.url, self.found_by = found.url.rstrip("/"), str(self.data / SERVE_FILE)
            return
        self.stale = found
        self.url = local_url(settings.listen_host, settings.listen_port)
        self.found_by = "listen"

    _loop: asyncio.AbstractEventLoop | None = None
    _session: aiohttp.ClientSession | None = None

    # -- running ------------------------------------------------------------------------

    def run(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` on the client's own event loop (where its session lives)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(coro)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120, connect=10))
        return self._session

    def close(self) -> None:
        if self._loop is None:
            return
        # A command stopped half-way (Ctrl-C) leaves its task pending: end it first.
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        if pending:
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        if self._session is not None:
            self._loop.run_until_complete(self._session.close())
            self._session = None
        self._loop.close()
        self._loop = None

    def __enter__(self) -> "HubClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- requests -----------------------------------------------------------------------

    def request(self, method: str, path: str, *, data: bytes | None = None,
                json_body: Any = None, content_type: str | None = None) -> Reply:
        """One request; raises ``HubError`` (``hub_unreachable``) when nothing answers."""
        return self.run(self.arequest(method, path, data=data, json_body=json_body,
                                      content_type=content_type))

    async def arequest(self, method: str, path: str, *, data: bytes | None = None,
                       json_body: Any = None, content_type: str | None = None) -> Reply:
        headers = self.headers()
        if json_body is not None:
            data, content_type = json.dumps(json_body).encode(), "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        try:
            async with self.session().request(method, self.url + path, data=data,
                                              headers=headers) as resp:
                return Reply(resp.status, await resp.read(), resp.content_type)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self.unreachable(why(exc)) from None

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def get_json(self, path: str, what: str) -> Any:
        """GET ``path`` and its JSON; any answer but 200 raises ``refused``."""
        reply = self.request("GET", path)
        if reply.status != 200:
            raise self.refused(reply, what)
        return reply.json()

    # -- what went wrong ------------------------------------------------------------------

    def unreachable(self, reason: str) -> HubError:
        if self.found_by == "--url":
            return HubError(f"cannot reach the hub at {self.url} (--url): {reason}",
                            code="hub_unreachable")
        stale = ""
        if self.stale is not None:
            stale = (f"; {self.data / SERVE_FILE} names pid {self.stale.pid} on "
                     f"{self.stale.address}, which is no longer running")
        how = ("as recorded in " + self.found_by) if self.found_by != "listen" else "the configured listen"
        return HubError(f"no hub is running for data directory {self.data}: tried {self.url} "
                        f"({how}): {reason}{stale}. Start it with `lienthong serve --data "
                        f"{self.data}`, or give --url", code="hub_unreachable")

    def refused(self, reply: Reply, what: str) -> Refused:
        """The hub's error answer as a ``HubError``, with a hint where one helps."""
        code, message = reply.error()
        hint = ""
        if reply.status == 401 and self.minted and code == "bad_token":
            hint = (f" (the hub at {self.url} does not take tokens minted with the secret of "
                    f"{self.data}: is it that data directory's hub? Give the hub's --data or -c, "
                    f"or --url)")
        elif reply.status == 401 and not self.minted:
            hint = " (is --data the hub's data directory? or give another --token)"
        return Refused(what, code, message + hint, reply.status)


def why(exc: BaseException) -> str:
    """A short reason for a failed connection or read."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc.os_error})"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "timed out connecting"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
