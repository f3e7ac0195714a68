"""``lienthong queue``: the operator's commands (like mailq, postcat, postsuper).

They talk to the running hub's HTTP API with an operator token minted from
the local token secret, so that every action goes through the hub's single
spool writer and is recorded in its event log.
"""
from __future__ import annotations

import argparse
import urllib.parse
from datetime import datetime
from typing import Any, Callable

from hub.cli.client import HubClient
from hub.cli.main import URL_HELP, client, command
from hub.config import Settings
from hub.textsafe import say, say_json
from spool.states import State

STATES = tuple(s.value for s in State)


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("queue", help="list and act on the queue (operators)")
    common(p)
    qsub = p.add_subparsers(dest="action", required=True)
    lp = qsub.add_parser("list", help="deliveries in the queue, like mailq")
    common(lp)
    lp.add_argument("--state", type=_states, metavar="S[,S…]",
                    help=f"comma-separated states, of {', '.join(STATES)} "
                         f"(default: queued,active,deferred,hold)")
    lp.add_argument("--route")
    lp.add_argument("--organ", help="sender or recipient OrganId")
    lp.add_argument("--older-than", help="only deliveries older than this (e.g. 1h, 2d)")
    lp.add_argument("--limit", type=int, default=100)
    for name, helptext in (("show", "one message or delivery in full, like postcat"),
                           ("hold", "stop deliveries until released"),
                           ("release", "put held deliveries back in the queue"),
                           ("retry", "try deferred deliveries now"),
                           ("drop", "fail deliveries for good (the sender is told)")):
        ap = qsub.add_parser(name, help=helptext)
        common(ap)
        ap.add_argument("id", help="delivery id (number) or message id (all its deliveries)")
        if name != "show":
            ap.add_argument("--reason", required=(name == "drop"), default="")
    for parser in [lp] + [qsub.choices[n] for n in ("show", "hold", "release", "retry", "drop")]:
        parser.add_argument("--json", action="store_true", help="JSON output")
        parser.add_argument("--url", help=URL_HELP)


def _states(text: str) -> str:
    bad = [s for s in text.split(",") if s and s not in STATES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown state(s) {', '.join(bad)}: "
                                         f"choose from {', '.join(STATES)}")
    return text


@command("queue")
def cmd_queue(args: argparse.Namespace, settings: Settings) -> int:
    with client(args, settings, "operator") as hub:
        return _queue(hub, args)


def _queue(hub: HubClient, args: argparse.Namespace) -> int:
    if args.action == "list":
        query = {"limit": str(args.limit),
                 "state": args.state or "queued,active,deferred,hold"}
        for key in ("route", "organ"):
            if getattr(args, key):
                query[key] = getattr(args, key)
        if args.older_than:
            query["older_than"] = args.older_than
        body = hub.get_json("/v1/queue?" + urllib.parse.urlencode(query), "queue list")
        return _print_list(body["items"], args.json)
    target = urllib.parse.quote(args.id, safe="")
    if args.action == "show":
        return _print_show(hub.get_json(f"/v1/queue/{target}", "queue show"), args.json)
    reply = hub.request("POST", f"/v1/queue/{target}/{args.action}", json_body={"reason": args.reason})
    if reply.status != 200:
        raise hub.refused(reply, f"queue {args.action}")
    body = reply.json()
    if args.json:
        say_json(body)
    else:
        for c in body["changed"]:
            say(f"{c['delivery_id']:>8} {c['message_id']} {c['recipient']}: {c['from']} -> {c['state']}")
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _print_list(items: list[dict[str, Any]], as_json: bool) -> int:
    if as_json:
        say_json(items)
        return 0
    say(f"{'DELIVERY':>8} {'MESSAGE':<26} {'STATE':<9} {'AGE':>5} {'TRIES':>5} "
          f"{'ROUTE':<14} {'SENDER':<14} -> RECIPIENT")
    for r in items:
        say(f"{r['delivery_id']:>8} {r['message_id']:<26} {r['state']:<9} "
              f"{_age(r['age_seconds']):>5} {r['attempts']:>5} {r['route']:<14} "
              f"{r['sender']:<14} -> {r['recipient']}")
        if r["last_error"]:
            say(f"{'':>9}({r['last_error'][:110]})")
    say(f"-- {len(items)} deliveries")
    return 0


def _print_show(body: dict[str, Any], as_json: bool) -> int:
    if as_json:
        say_json(body)
        return 0
    p = body["payload"]
    say(f"message     {body['message_id']} ({body['kind']}, origin {body['origin']})")
    say(f"sender      {body['sender']}")
    say(f"document    {body['document_id']}  {body['code'] or ''}")
    say(f"subject     {body['subject'] or ''}")
    say(f"received    {body['received_at']}")
    say(f"payload     {p['size']} bytes, sha256 {p['sha256']}")
    say(f"signature   {p['signature'].get('result')}: {p['signature'].get('detail', '')}")
    say("deliveries")
    for d in body["deliveries"]:
        say(f"  {d['delivery_id']:>6} {d['recipient']:<14} {d['route']:<14} {d['state']:<9} "
              f"attempts={d['attempts']} next={d['next_attempt_at']} expires={d['expires_at']}")
        if d["last_error"]:
            say(f"         last error: {d['last_error']}")
    say("events")
    for e in body["events"]:
        when = datetime.fromisoformat(e["at"].replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
        extra = " ".join(f"{k}={v}" for k, v in e["detail"].items() if k not in ("recipients",))
        say(f"  #{e['id']:<6} {when} {e['kind']:<15} {e['state'] or '':<9} {e['organ'] or ''} {extra}")
    return 0
