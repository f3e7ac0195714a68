"""The ``lienthong`` command line.

Every command takes ``-c/--config FILE`` and ``--data DIR`` so that several
hubs can run side by side on one machine.  Commands that talk to a running
hub use its HTTP API (``--url``, default: the configured ``listen``);
commands that only read configuration or the directory work offline.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import logging
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Sequence

from adapters.base import describe_options
from adapters.registry import adapter_classes
from hub.auth import ROLES, TokenAuthority, load_secret
from hub.config import PARAMS, Settings, load_settings
from hub.errors import HubError

Command = Callable[[argparse.Namespace, Settings], int]
COMMANDS: dict[str, Command] = {}

#: Feature modules that add commands: each has ``add_parsers(sub, common)`` and
#: registers its handlers with ``@command(name)``.
CLI_MODULES: tuple[str, ...] = ("hub.cli.queue", "hub.cli.tail", "hub.cli.keys", "hub.cli.receipts",
                                "hub.cli.audit", "hub.cli.sim")

#: Organisations whose tokens `make run` prints, for the README walkthrough.
EXAMPLE_TOKENS = (("000.01.48.H63", "agency", "UBND thị trấn Mậu A (commune)"),
                  ("000.31.48.H63", "agency", "Văn phòng HĐND và UBND huyện (office)"),
                  ("000.99.48.H63", "operator", "hub operator"),
                  ("000.99.48.H63", "auditor", "auditor"))


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn
    return register


def common(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    # Subcommands repeat the options with SUPPRESS defaults, so that
    # `lienthong -c F conf` and `lienthong conf -c F` both work.
    default = None if top else argparse.SUPPRESS
    parser.add_argument("-c", "--config", type=Path, default=default,
                        help="hub.toml to read (default: built-in defaults)")
    parser.add_argument("--data", default=default, help="data directory (overrides data_dir)")


def build_parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="lienthong", description="lienthong-hub: document interchange hub "
                                  "for edXML (QCVN 102:2016)")
    common(top, top=True)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", help="run the hub (HTTP API, queue manager)")
    common(p)
    p.add_argument("--listen", help="HOST:PORT (default from listen)")

    p = sub.add_parser("submit", help="submit an edXML file to a running hub")
    common(p)
    p.add_argument("file", type=Path)
    p.add_argument("--as", dest="organ", required=True, help="OrganId of the sending organisation")
    p.add_argument("--url", help="hub base URL (default: http://<listen>)")

    p = sub.add_parser("directory", help="the directory of organisations")
    common(p)
    dsub = p.add_subparsers(dest="action", required=True)
    lp = dsub.add_parser("list", help="list organisations")
    common(lp)
    lp.add_argument("--json", action="store_true", help="JSON output")
    lp.add_argument("--kind", help="only this kind")

    p = sub.add_parser("token", help="issue a bearer token for the local hub")
    common(p)
    p.add_argument("organ", nargs="?", help="OrganId the token speaks for")
    p.add_argument("--role", choices=ROLES, default="agency",
                   help=f"one of {', '.join(ROLES)} (default agency)")
    p.add_argument("--route", help="for --role relay: the route the peer hub or platform "
                   "arrives by (its token may speak for that route's organisations)")
    p.add_argument("--examples", action="store_true", help="print a few ready-made tokens")

    p = sub.add_parser("conf", help="print the effective configuration")
    common(p)
    for name in CLI_MODULES:
        importlib.import_module(name).add_parsers(sub, common)
    return top


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None), data_dir=getattr(args, "data", None),
                         listen=getattr(args, "listen", None))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
        return COMMANDS[args.command](args, settings)
    except HubError as exc:
        print(f"lienthong: {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# -- commands -------------------------------------------------------------------

@command("serve")
def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web

    from hub.api.app import create_app
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # APScheduler narrates every timer run at INFO; the hub logs what matters.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))
    app = create_app(settings)
    print(f"lienthong-hub listening on http://{settings.listen} (data: {settings.data_path})",
          flush=True)
    _return_big_buffers()
    loop = asyncio.new_event_loop()
    _stop_on_signals(loop)

    async def settle_garbage(app: web.Application) -> None:
        # What start-up built (modules, directory, keys, schemas) lives as long
        # as the hub: out of the collector's sight, every full collection
        # under load no longer walks it.
        gc.collect()
        gc.freeze()
    app.on_startup.append(settle_garbage)
    web.run_app(app, host=settings.listen_host, port=settings.listen_port, print=None,
                access_log=None, handle_signals=False, loop=loop)
    # Stopped: the interpreter's exit would put back the default (death) for
    # any signal still to come; it has nothing left to interrupt.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    return 0


def _return_big_buffers() -> None:
    """Buffers of 4 MiB and more (envelopes, parsed attachments) go back to
    the system when freed.  glibc raises its mmap threshold after each such
    free, up to 32 MiB, so a 10 MB document's copies would otherwise stay in
    the heap and the hub's footprint would ratchet up with every one."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc: its own policy applies
        pass


def _stop_on_signals(loop: asyncio.AbstractEventLoop) -> None:
    """SIGTERM or SIGINT starts one orderly shutdown; later ones are only logged.

    aiohttp's own handlers raise again on every signal, and a second one
    (``timeout`` signals the process and then its group; an impatient
    Ctrl-C) would cancel the shutdown half-way, leaving the spool's threads
    running and the process hanging.  Anything in flight is safe either way:
    the spool recovers on the next start."""
    from aiohttp.web_runner import GracefulExit

    def again(signum: int, frame: Any) -> None:
        logging.getLogger("hub").warning("already stopping: finishing the attempts in flight")

    def stop() -> None:
        # Plain handlers from here to the process's exit: the loop's would be
        # reset to the default (death) when it closes, before the exit is done.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            signal.signal(sig, again)
        logging.getLogger("hub").info("stopping")
        raise GracefulExit()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)


def authority(settings: Settings, *, create: bool = False) -> TokenAuthority:
    """Mints tokens with the hub's secret; only ``lienthong token`` may create it."""
    return TokenAuthority(load_secret(settings.data_path, create=create))


def hub_url(args: argparse.Namespace, settings: Settings) -> str:
    """The running hub's base URL: ``--url``, else ``http://<listen>``."""
    if getattr(args, "url", None):
        return str(args.url).rstrip("/")
    host, port = settings.listen_host, settings.listen_port
    # A hub bound to every address is reached on loopback from its own machine.
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "::": "[::1]"}.get(host, host)
    return f"http://{host}:{port}"


def staff_token(settings: Settings, role: str, lifetime: float = 600) -> str:
    """A short-lived token for the hub's own staff role (operator, auditor)."""
    return authority(settings).issue(directory_of(settings).hub.id, role, lifetime)


def directory_of(settings: Settings):  # type: ignore[no-untyped-def]
    from hub.directory import load_directory
    return load_directory(settings)


@command("token")
def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    directory = directory_of(settings)
    mint = authority(settings, create=True)
    if args.examples:
        for organ, role, label in EXAMPLE_TOKENS:
            token = mint.issue(organ, role, settings.token_lifetime)
            print(f"# {label}: {organ} ({role})\n{token}")
        return 0
    if not args.organ:
        print("lienthong token: give an OrganId (or --examples)", file=sys.stderr)
        return 2
    if args.organ not in directory:
        print(f"lienthong token: {args.organ} is not in the directory", file=sys.stderr)
        return 2
    if (args.role == "relay") != bool(args.route):
        print("lienthong token: a relay token needs --route ROUTE (the route the peer hub or "
              "platform arrives by), and only a relay token takes one", file=sys.stderr)
        return 2
    if args.route and args.route not in directory.routes():
        print(f"lienthong token: route {args.route!r} is not a route of the directory (known: "
              f"{', '.join(sorted(directory.routes() - {'mailbox'}))})", file=sys.stderr)
        return 2
    print(mint.issue(args.organ, args.role, settings.token_lifetime, route=args.route or None))
    return 0


@command("submit")
def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    raw = args.file.read_bytes()
    token = authority(settings).issue(args.organ, "agency", 3600)
    status, body = http_call("POST", f"{hub_url(args, settings)}/v1/envelopes", token, raw,
                             "application/xml")
    print(json.dumps(body, ensure_ascii=False, indent=2))
    return 0 if status in (200, 202) else 1


def http_call(method: str, url: str, token: str, data: bytes | None = None,
              content_type: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}"})
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        payload = exc.read()
        try:
            return exc.code, json.loads(payload)
        except ValueError:
            return exc.code, {"error": {"code": f"http_{exc.code}", "message": payload.decode(errors="replace")}}
    except urllib.error.URLError as exc:
        raise HubError(f"cannot reach the hub at {url}: {exc.reason}", code="hub_unreachable") from None


@command("directory")
def cmd_directory(args: argparse.Namespace, settings: Settings) -> int:
    rows = directory_of(settings).to_rows()
    if args.kind:
        rows = [r for r in rows if r["kind"] == args.kind]
    if args.json:
        print(json.dumps(rows, ensure_ascii=False, indent=2))
        return 0
    print(f"{'ORGANID':<15} {'KIND':<20} {'ROUTE':<16} NAME")
    for r in rows:
        print(f"{r['id']:<15} {r['kind']:<20} {r['route']:<16} {r['name']}")
    print(f"-- {len(rows)} organisations")
    return 0


@command("conf")
def cmd_conf(args: argparse.Namespace, settings: Settings) -> int:
    raw = settings.raw()
    print(f"# effective configuration (file: {settings.source or 'none, built-in defaults'})")
    for p in PARAMS:
        value = raw[p.name]
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, str) else value
        marker = "" if value == p.default else "   # changed"
        print(f"{p.name} = {shown}{marker}")
    classes = adapter_classes()
    for name, table in sorted(settings.adapters.items()):
        print(f"\n[adapters.{json.dumps(name) if '.' in name else name}]")
        print(f"class = {json.dumps(table['class'])}")
        cls = classes.get(table["class"])
        if cls is None:
            print(f"# unknown class: known are {', '.join(sorted(classes))}")
            continue
        for key, kind, default in describe_options(cls):
            if key in table:
                value = "\"(hidden)\"" if kind == "Secret" else _toml(table[key])
                print(f"{key} = {value}   # changed ({kind})")
            else:
                shown = _toml(f"{default:g}s" if kind == "Duration" and default is not None else default)
                print(f"# {key} = {shown}   ({kind}, default)" if default is not None
                      else f"# {key}   ({kind}, optional)")
    return 0


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return '""'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: feature modules
    # register their commands on ``hub.cli``.
    from hub.cli.main import main as _main
    sys.exit(_main())
