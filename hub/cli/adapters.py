"""``lienthong adapters list``: the adapter instances of the running hub and their health."""
from __future__ import annotations

import argparse
from typing import Any, Callable

from hub.cli.main import URL_HELP, client, command
from hub.config import Settings
from hub.textsafe import say, say_json


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("adapters", help="the adapter instances and their health (operators)")
    common(p)
    asub = p.add_subparsers(dest="action", required=True)
    lp = asub.add_parser("list", help="each instance: class, routes, health, last error, queued")
    common(lp)
    lp.add_argument("--json", action="store_true", help="JSON output")
    lp.add_argument("--url", help=URL_HELP)


@command("adapters")
def cmd_adapters(args: argparse.Namespace, settings: Settings) -> int:
    with client(args, settings, "operator") as hub:
        items = hub.get_json("/v1/adapters", "adapters list")["items"]
    if args.json:
        say_json(items)
        return 0
    say(f"{'NAME':<18} {'CLASS':<18} {'MODE':<14} {'HEALTH':<9} {'QUEUED':>6}  LAST ERROR")
    for a in items:
        error = f"{a['last_error_at']} {a['last_error']}" if a["last_error_at"] else \
            (a["last_error"] or "")
        say(f"{a['name']:<18} {a['class'] or '-':<18} {a['mode'] or '-':<14} {a['health']:<9} "
            f"{a['queued']:>6}  {error[:100]}")
        if a.get("last_poll_at") or a.get("taken_in") is not None:
            say(f"{'':<18} last poll {a.get('last_poll_at') or 'never'}, "
                f"{a.get('taken_in') or 0} documents taken in")
    return 0
