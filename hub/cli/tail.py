"""``lienthong tail``: the operator's live view of a running hub's spool.

Where it sits: a client of ``GET /v1/events`` (``hub.events``), like
``tail -f`` on Postfix's maillog but built on the spool's own event log.
Without ``-f`` it prints what the log holds (``?once=1``) and exits; with
``-f`` it follows, and when the connection drops (the hub restarts, the
network blinks) it reconnects with ``Last-Event-ID`` set to the last event it
printed, backing off from 1 to 10 seconds: no gap, no repeat.

Output: one readable line per event on a terminal (coloured by kind and
state unless ``NO_COLOR`` is set), JSON lines when piped or with ``--json``.
Notices about the connection go to stderr, so stdout stays parseable.

The token is ``--token``, or one minted with the hub's secret (``--data``
must then be the hub's data directory) for the hub's own OrganId as
operator.  The SSE parser is written here, after the WHATWG
"event stream interpretation" rules.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

import aiohttp

from hub.cli.client import HubClient, Reply, why
from hub.cli.main import URL_HELP, authority, command, directory_of
from hub.config import Settings
from hub.errors import HubError
from spool.states import State
from hub.textsafe import escape, safe_json

#: Seconds between reconnection attempts: the first, and the most.
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 10.0
#: The hub sends a keepalive every 15 s; three missed ones mean the link is dead.
READ_TIMEOUT = 45.0
#: Minted tokens are short-lived: a new one is minted for every connection.
TOKEN_LIFETIME = 3600.0

_EOL = re.compile(rb"\r\n|\r|\n")


# -- server-sent events ---------------------------------------------------------------

@dataclasses.dataclass(slots=True)
class SSEMessage:
    event: str
    data: str
    id: str | None


class SSEParser:
    """Bytes in, dispatched messages out; comments and unknown fields are skipped."""

    def __init__(self) -> None:
        self._buf = b""
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self._id_buffer: str | None = None
        self.last_id: str | None = None
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        self._buf += chunk
        if not self._started and len(self._buf) >= 3:
            self._started = True
            self._buf = self._buf.removeprefix(b"\xef\xbb\xbf")
        out = []
        while (line := self._next_line()) is not None:
            msg = self._line(line.decode("utf-8", errors="replace"))
            if msg is not None:
                out.append(msg)
        return out

    def _next_line(self) -> bytes | None:
        m = _EOL.search(self._buf)
        # A CR at the very end may be the first half of CRLF: wait for more.
        if m is None or (m.group() == b"\r" and m.end() == len(self._buf)):
            return None
        line, self._buf = self._buf[:m.start()], self._buf[m.end():]
        return line

    def _line(self, line: str) -> SSEMessage | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the hub's keepalive
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id_buffer = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SSEMessage | None:
        self.last_id = self._id_buffer
        data, event = self._data, self._event or "message"
        self._data, self._event = [], ""
        if not data:
            return None
        return SSEMessage(event, "\n".join(data), self.last_id)


# -- printing ---------------------------------------------------------------------------

_RESET = "\033[0m"
_KIND_COLOURS = {"accepted": "36", "refused": "31", "status_received": "35",
                 "operator": "33", "corrupt": "1;31"}
_STATE_COLOURS = {"queued": "36", "active": "34", "delivered": "32", "deferred": "33",
                  "failed": "31", "hold": "35", "corrupt": "1;31"}
#: Detail keys shown first, and the short names they go by on a line.
_DETAIL_ORDER = ("route", "reason", "code", "message", "action", "by", "kind_of", "document_id",
                 "recipients", "status_code", "size", "signature", "origin")
_DETAIL_NAMES = {"kind_of": "kind", "document_id": "doc", "recipients": "to"}
_DETAIL_HIDDEN = {"sha256"}  # in the JSON; too long for a line
_BARE = re.compile(r"[^\s\"=]+\Z")


def _shown(value: Any) -> str:
    if isinstance(value, list):
        value = ",".join(v["organ"] if isinstance(v, dict) and "organ" in v else str(v) for v in value)
    elif isinstance(value, dict):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    text = str(value)
    return escape(text) if _BARE.match(text) else safe_json(json.dumps(text, ensure_ascii=False))


def event_line(ev: dict[str, Any], colour: bool = False) -> str:
    """``2026-11-26 06:01:02 #123 state delivered 01J… 000.31.48.H63 route=mailbox …``"""
    when = datetime.fromtimestamp(float(ev.get("at") or 0)).strftime("%Y-%m-%d %H:%M:%S")
    kind, state = escape(ev.get("kind", "?")), escape(ev.get("state") or "-")
    detail = ev.get("detail") or {}
    keys = [k for k in _DETAIL_ORDER if k in detail]
    keys += sorted(k for k in detail if k not in keys and k not in _DETAIL_HIDDEN)
    pairs = " ".join(f"{_DETAIL_NAMES.get(k, k)}={_shown(detail[k])}" for k in keys
                     if detail[k] is not None)
    head = f"{when} #{escape(ev.get('id'))}"
    what = f"{kind} {state}"
    if colour:
        code = _STATE_COLOURS.get(state, "0") if kind == "state" else _KIND_COLOURS.get(kind, "0")
        head, what = f"\033[2m{head}{_RESET}", f"\033[{code}m{what}{_RESET}"
    return " ".join(p for p in (head, what, escape(ev.get("message_id") or "-"),
                                escape(ev.get("organ") or "-"), pairs) if p)


class Printer:
    def __init__(self, out: TextIO, as_json: bool, colour: bool) -> None:
        self.out = out
        self.as_json = as_json
        self.colour = colour

    def event(self, ev: dict[str, Any]) -> None:
        if self.as_json:
            self.out.write(safe_json(json.dumps(ev, ensure_ascii=False, separators=(",", ":"))) + "\n")
        else:
            self.out.write(event_line(ev, self.colour) + "\n")

    def flush(self) -> None:
        self.out.flush()


def make_printer(args: argparse.Namespace, out: TextIO = sys.stdout) -> Printer:
    tty = out.isatty()
    as_json = args.json or (not args.text and not tty)
    colour = (not as_json and tty and not os.environ.get("NO_COLOR")
              and os.environ.get("TERM") != "dumb")
    return Printer(out, as_json, colour)


# -- following ---------------------------------------------------------------------------

class Refused(HubError):
    """Raised when the hub answers the stream with an error that retrying cannot fix."""

    code = "tail_refused"


class Trouble(Exception):
    """Raised when the hub is there but not serving (5xx): worth another try."""


def note(message: str) -> None:
    print(f"lienthong tail: {escape(message)}", file=sys.stderr, flush=True)


class Tail:
    """One ``lienthong tail``: the hub, the stream's filters, and the last id printed."""

    def __init__(self, hub: HubClient, params: dict[str, str], printer: Printer,
                 after: int | None) -> None:
        self.hub = hub
        self.params = params
        self.printer = printer
        self.last_id = after
        self.resuming = False

    async def run(self, follow: bool) -> int:
        delay = BACKOFF_FIRST
        while True:
            try:
                await self.stream(follow)
                if not follow:
                    return 0
                delay = BACKOFF_FIRST
                note(f"the hub closed the stream after #{self.last_id or 0}; reconnecting")
            except BrokenPipeError:
                raise  # our reader left, not the hub
            except (TimeoutError, aiohttp.ClientError, OSError, Trouble) as exc:
                if not follow:
                    raise self.hub.unreachable(f"cannot read events: {_why(exc)}") from None
                note(f"{_why(exc)}; reconnecting in {delay:.0f}s after #{self.last_id or 0}")
            self.resuming = True
            await asyncio.sleep(delay)
            delay = min(BACKOFF_MAX, delay * 2)

    async def stream(self, follow: bool) -> None:
        headers = {**self.hub.headers(), "Accept": "text/event-stream"}
        if self.last_id is not None:
            headers["Last-Event-ID"] = str(self.last_id)
        params = dict(self.params) if follow else {**self.params, "once": "1"}
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=READ_TIMEOUT)
        async with self.hub.session().get(self.hub.url + "/v1/events", params=params,
                                          headers=headers, timeout=timeout) as resp:
            if resp.status != 200:
                reply = Reply(resp.status, await resp.read(), resp.content_type)
                if resp.status >= 500:
                    raise Trouble(f"the hub answered {resp.status} ({': '.join(reply.error())})")
                refused = self.hub.refused(reply, "tail")
                raise Refused(f"the hub refused the stream: {refused.message}", code=refused.code,
                              http_status=resp.status)
            if self.resuming:
                note(f"reconnected; resuming after #{self.last_id or 0}")
                self.resuming = False
            parser = SSEParser()
            async for chunk in resp.content.iter_any():
                for msg in parser.feed(chunk):
                    self.show(msg)
                self.printer.flush()

    def show(self, msg: SSEMessage) -> None:
        try:
            ev = json.loads(msg.data)
            ev_id = int(ev["id"])
        except (ValueError, KeyError, TypeError):
            note(f"skipped a malformed event: {msg.data[:200]!r}")
            return
        # The hub never repeats an event after Last-Event-ID; this guards a stray proxy.
        if self.last_id is not None and ev_id <= self.last_id:
            return
        self.printer.event(ev)
        self.last_id = ev_id


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not isinstance(exc, aiohttp.ConnectionTimeoutError):
        return f"no data for {READ_TIMEOUT:.0f}s"
    return why(exc)


# -- the command ------------------------------------------------------------------------

def stream_params(args: argparse.Namespace) -> dict[str, str]:
    given = {"organ": args.organ, "state": args.state, "kind": args.kind,
             "message_id": args.message}
    return {k: v for k, v in given.items() if v}


def token_source(args: argparse.Namespace, settings: Settings) -> Callable[[], str]:
    if args.token:
        return lambda: str(args.token)
    mint, hub_id = authority(settings), directory_of(settings).hub.id
    return lambda: mint.issue(hub_id, "operator", TOKEN_LIFETIME)


@command("tail")
def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    hub = HubClient(args, settings, token_source(args, settings), minted=not args.token)
    tail = Tail(hub, stream_params(args), make_printer(args), args.after)
    try:
        return hub.run(tail.run(args.follow))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (head, less) has gone: stop quietly, and keep Python from
        # complaining when it flushes stdout on the way out.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        hub.close()


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("tail", help="print the spool's events; -f follows them live (operators)")
    common(p)
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep following; reconnect without gaps when the hub restarts")
    p.add_argument("--organ", help="only events about this OrganId")
    states = [s.value for s in State]
    p.add_argument("--state", choices=states, metavar="STATE",
                   help=f"only events with this state: {', '.join(states)}")
    p.add_argument("--kind", help="only these kinds, comma separated (accepted,refused,state,…)")
    p.add_argument("--message", metavar="ID", help="only events of this message id")
    p.add_argument("--after", type=int, metavar="EVENT_ID", help="start after this event id")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON lines (the default when piped)")
    out.add_argument("--text", action="store_true", help="readable lines even when piped")
    p.add_argument("--url", help=URL_HELP)
    p.add_argument("--token", help="bearer token (default: an operator token minted with the "
                                   "hub's secret under --data)")
