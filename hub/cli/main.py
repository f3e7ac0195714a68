"""The ``lienthong`` command line.

Every command takes ``-c/--config FILE`` and ``--data DIR`` so that several
hubs can run side by side on one machine.  Commands that talk to a running
hub use its HTTP API through ``hub.cli.client`` (the hub serving ``--data``,
found from ``DATA/run/serve.json``; ``--url`` overrides);
commands that only read configuration or the directory work offline.
"""
from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import importlib
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from adapters.base import describe_options
from adapters.registry import adapter_classes
from hub.auth import ROLES, TokenAuthority, load_secret
from hub.config import PARAMS, Settings, load_settings, toml_key, toml_value
from hub.directory import KINDS
from hub.errors import HubError
from hub.textsafe import say, say_json

if TYPE_CHECKING:
    from hub.cli.client import HubClient

Command = Callable[[argparse.Namespace, Settings], int]
COMMANDS: dict[str, Command] = {}

#: Feature modules that add commands: each has ``add_parsers(sub, common)`` and
#: registers its handlers with ``@command(name)``.
CLI_MODULES: tuple[str, ...] = ("hub.cli.queue", "hub.cli.tail", "hub.cli.keys", "hub.cli.receipts",
                                "hub.cli.audit", "hub.cli.door", "hub.cli.adapters", "hub.cli.sim")

#: The help of every --url option.
URL_HELP = ("hub base URL (default: the hub serving --data, as recorded in DATA/run/serve.json; "
            "else http://<listen>)")

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
    p.add_argument("--url", help=URL_HELP)

    p = sub.add_parser("directory", help="the directory of organisations")
    common(p)
    dsub = p.add_subparsers(dest="action", required=True)
    lp = dsub.add_parser("list", help="list organisations")
    common(lp)
    lp.add_argument("--json", action="store_true", help="JSON output")
    lp.add_argument("--kind", choices=sorted(KINDS), metavar="KIND",
                    help=f"only this kind: {', '.join(sorted(KINDS))}")
    rp = dsub.add_parser("resolve", help="the route a document for ORGANID takes, and which "
                         "entry or rule chose it")
    common(rp)
    rp.add_argument("organ_id", metavar="ORGANID")
    rp.add_argument("--json", action="store_true", help="JSON output")

    p = sub.add_parser("token", help="issue a bearer token for the local hub")
    common(p)
    p.add_argument("organ", nargs="?", help="OrganId the token speaks for")
    p.add_argument("--role", choices=ROLES, default="agency",
                   help=f"one of {', '.join(ROLES)} (default agency)")
    p.add_argument("--route", help="for --role relay: the route the peer hub or platform "
                   "arrives by (its token may speak for that route's organisations)")
    p.add_argument("--examples", action="store_true", help="print a few ready-made tokens")

    p = sub.add_parser("conf", help="print the effective configuration (TOML, with each "
                       "adapter's options and their defaults)")
    common(p)
    p.add_argument("--show-secrets", action="store_true",
                   help="print adapters' secrets as set (hidden by default)")

    p = sub.add_parser("backup", help="a consistent copy of the data directory, while the hub runs")
    common(p)
    p.add_argument("dest", type=Path, help="new (or empty) directory for the copy")
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
        where = getattr(exc, "what", None) or args.command
        say(f"lienthong {where}: {exc.code}: {exc.message}", file=sys.stderr)
        return int(getattr(exc, "exit_status", 2))
    except OSError as exc:
        if exc.filename is None:  # not a file the user named: a real fault, keep its traceback
            raise
        say(f"lienthong {args.command}: {exc.filename}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


# -- commands -------------------------------------------------------------------

@command("serve")
def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from aiohttp import web
    from aiohttp.web_runner import GracefulExit

    from hub.api.app import create_app
    from hub.cli.client import forget_serving, read_serving, record_serving
    running = read_serving(settings.data_path)
    if running is not None and running.alive and running.pid != os.getpid():
        print(f"lienthong serve: a hub (pid {running.pid}) already serves {settings.data_path} "
              f"on {running.address}; stop it first, or give another --data", file=sys.stderr)
        return 1
    # The address first, before anything is created: a port in use is one
    # line and exit 1, not a traceback after the data directory and its keys.
    try:
        sock = bind_listen(settings.listen_host, settings.listen_port)
    except OSError as exc:
        hint = (" (another hub or program holds it: give another --listen HOST:PORT)"
                if exc.errno == errno.EADDRINUSE else "")
        print(f"lienthong serve: cannot listen on {settings.listen}: {exc.strerror or exc}{hint}",
              file=sys.stderr)
        return 1
    host, port = sock.getsockname()[:2]
    from hub.api.guard import serve
    from hub.textsafe import install_log
    # Everything the hub creates under its data directory is its user's alone.
    os.umask(0o077)
    install_log(settings.log_level)
    # APScheduler narrates every timer run at INFO; the hub logs what matters.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))
    app = create_app(settings)
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(f"lienthong-hub listening on http://{shown} (data: {settings.data_path})", flush=True)
    _return_big_buffers()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    _stop_on_signals(loop)

    async def settle_garbage(app: web.Application) -> None:
        # What start-up built (modules, directory, keys, schemas) lives as long
        # as the hub: out of the collector's sight, every full collection
        # under load no longer walks it.
        gc.collect()
        gc.freeze()
        # Open and listening from here on: clients of this data directory find us.
        record_serving(settings.data_path, host, port)
    app.on_startup.append(settle_garbage)
    runner = None
    try:
        runner = loop.run_until_complete(serve(app, settings, sock))
        loop.run_forever()
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if runner is not None:
            loop.run_until_complete(runner.cleanup())
        leftovers = asyncio.all_tasks(loop)
        for task in leftovers:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        forget_serving(settings.data_path)
    # Stopped: the interpreter's exit would put back the default (death) for
    # any signal still to come; it has nothing left to interrupt.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    return 0


def bind_listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``[::1]`` and ``::`` for IPv6)."""
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Not SO_REUSEPORT: a second hub on the same port must fail, not share it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


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
        say(f"lienthong token: {args.organ} is not in the directory", file=sys.stderr)
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


def client(args: argparse.Namespace, settings: Settings, role: str,
           lifetime: float = 600) -> "HubClient":
    """The running hub as the hub's own staff ``role`` (operator, auditor)."""
    from hub.cli.client import HubClient
    return HubClient(args, settings, lambda: staff_token(settings, role, lifetime))


@command("submit")
def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from hub.cli.client import HubClient
    try:
        raw = args.file.read_bytes()
    except OSError as exc:
        print(f"lienthong submit: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    minter = authority(settings)
    if args.organ not in directory_of(settings):
        print(f"lienthong submit: {args.organ} is not in the directory (see `lienthong directory "
              f"list`)", file=sys.stderr)
        return 2
    with HubClient(args, settings, lambda: minter.issue(args.organ, "agency", 3600)) as hub:
        reply = hub.request("POST", "/v1/envelopes", data=raw, content_type="application/xml")
    try:
        body = reply.json()
    except ValueError:
        raise hub.refused(reply, "submit") from None
    say_json(body)
    return 0 if reply.status in (200, 202) else 1


@command("directory")
def cmd_directory(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "resolve":
        return _resolve(args, settings)
    rows = directory_of(settings).to_rows()
    if args.kind:
        rows = [r for r in rows if r["kind"] == args.kind]
    if args.json:
        say_json(rows)
        return 0
    say(f"{'ORGANID':<15} {'KIND':<20} {'ROUTE':<16} NAME")
    for r in rows:
        say(f"{r['id']:<15} {r['kind']:<20} {r['route']:<16} {r['name']}")
    say(f"-- {len(rows)} organisations")
    return 0


def _resolve(args: argparse.Namespace, settings: Settings) -> int:
    directory = directory_of(settings)
    route = directory.resolve(args.organ_id, strict=settings.organ_id_policy == "strict")
    if args.json:
        print(json.dumps({"organ_id": args.organ_id, "route": route.name, "known": route.known,
                          "entry": route.organ.id if route.organ else None,
                          "rule": route.rule.pattern if route.rule else None,
                          "speaks_for": directory.may_speak_for(route.name, args.organ_id)},
                         ensure_ascii=False))
    else:
        print(route.explain(args.organ_id))
    return 0


@command("conf")
def cmd_conf(args: argparse.Namespace, settings: Settings) -> int:
    """The effective configuration as TOML: it can be pasted into hub.toml."""
    raw = settings.raw()
    say(f"# effective configuration (file: {settings.source or 'none, built-in defaults'})")
    for p in PARAMS:
        value = raw[p.name]
        marker = "" if value == p.default else "   # changed"
        print(f"{p.name} = {toml_value(value)}{marker}")
    classes = adapter_classes()
    for name, table in sorted(settings.adapters.items()):
        print(f"\n[adapters.{toml_key(name)}]")
        print(f"class = {toml_value(table['class'])}")
        cls = classes.get(table["class"])
        if cls is None:
            print(f"# unknown class: known are {', '.join(sorted(classes))}")
            for key, value in table.items():
                if key != "class":
                    print(f"{toml_key(key)} = {toml_value(value)}")
            continue
        # Each option of the class: set ones with their value, the others
        # commented out with their default, so the output pastes back as is.
        for key, kind, default in describe_options(cls):
            if key in table:
                secret = kind == "Secret" and not args.show_secrets
                value = toml_value("(hidden: --show-secrets)") if secret else toml_value(table[key])
                print(f"{toml_key(key)} = {value}   # {kind}")
            elif default is None:
                print(f"# {toml_key(key)} =   ({kind}, optional)")
            else:
                shown = f"{default:g}s" if kind == "Duration" else default
                print(f"# {toml_key(key)} = {toml_value(shown)}   ({kind}, default)")
        known = {key for key, _kind, _default in describe_options(cls)} | {"class"}
        for key, value in table.items():
            if key not in known:
                print(f"{toml_key(key)} = {toml_value(value)}   # not an option of "
                      f"{table['class']}: refused at start")
    return 0


@command("backup")
def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from spool import open_spool
    if not (settings.data_path / "spool.db").is_file():  # before the spool touches anything
        print(f"lienthong backup: no spool database at {settings.data_path / 'spool.db'}: is "
              f"--data (or -c) the hub's data directory?", file=sys.stderr)
        return 2

    async def run() -> dict[str, int]:
        spool = open_spool(settings, time.time)
        await spool.open(read_only=True)
        try:
            return await spool.backup(args.dest)
        finally:
            await spool.close()
    copied = asyncio.run(run())
    print(f"{args.dest}: spool.db, {copied['payloads']} payload files, {copied['files']} key and "
          f"secret files (check it: `lienthong audit verify --db --data {args.dest}`)")
    return 0



if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: feature modules
    # register their commands on ``hub.cli``.
    from hub.cli.main import main as _main
    sys.exit(_main())
