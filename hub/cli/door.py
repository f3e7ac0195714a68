"""``lienthong door credentials``: the national-SDK door's credentials of one organisation.

Offline: it writes ``DATA/secrets/door.json`` (``hub.door.credentials``); a
running hub picks a new or rotated secret up by itself, without a restart.
Prints what the agency's SDK configuration needs: the endpoint, the system
id and the secret (``--json``: exactly one JSON object of those three).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable

from hub.cli.client import local_url, read_serving
from hub.cli.main import command, directory_of
from hub.config import Settings
from hub.door.credentials import credentials_path, issue


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("door", help="the national-SDK door (/vxp) for agency software")
    common(p)
    dsub = p.add_subparsers(dest="action", required=True)
    cp = dsub.add_parser("credentials", help="endpoint, system id and secret of an organisation "
                         "(created on first use)")
    common(cp)
    cp.add_argument("organ", metavar="ORGANID", help="a local unit of the directory")
    cp.add_argument("--json", action="store_true",
                    help='print one JSON object {"endpoint", "system_id", "secret"}')
    cp.add_argument("--rotate", action="store_true",
                    help="replace the secret (the old one stops working within a second)")
    cp.add_argument("--url", help="the hub's base URL as agencies reach it (default: "
                    "door_endpoint, else where the hub of --data listens)")


def endpoint(args: argparse.Namespace, settings: Settings) -> str:
    """``--url``, else ``door_endpoint``, else the hub of this data directory
    (where it records it listens, else ``listen``), with ``/vxp``."""
    if getattr(args, "url", None):
        return str(args.url).rstrip("/") + "/vxp"
    if settings.door_endpoint:
        return str(settings.door_endpoint)
    found = read_serving(settings.data_path)
    base = found.url if found is not None and found.alive else \
        local_url(settings.listen_host, settings.listen_port)
    return base.rstrip("/") + "/vxp"


@command("door")
def cmd_door(args: argparse.Namespace, settings: Settings) -> int:
    directory = directory_of(settings)
    entry = directory.get(args.organ)
    if entry is None:
        print(f"lienthong door: {args.organ} is not in the directory", file=sys.stderr)
        return 2
    if not entry.is_local:
        print(f"lienthong door: {args.organ} is a {entry.kind} on route {entry.route!r}; the door "
              f"serves the district's own units (their mailboxes are the hub's)", file=sys.stderr)
        return 2
    cred, what = issue(settings.data_path, args.organ, rotate=args.rotate)
    url = endpoint(args, settings)
    if args.json:
        print(json.dumps({"endpoint": url, "system_id": cred.system_id, "secret": cred.secret}))
        return 0
    print(f"# {entry.name} ({entry.id}): {what}; kept in {credentials_path(settings.data_path)}")
    print(f"endpoint   {url}")
    print(f"system_id  {cred.system_id}")
    print(f"secret     {cred.secret}")
    return 0
