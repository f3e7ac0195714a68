"""``lienthong receipts``: query, fetch and verify the hub's signed receipts.

``query`` and ``get`` talk to the running hub's HTTP API with an auditor
token minted from the local token secret (read-only, sees every receipt).
``verify`` is offline: it needs nothing but the receipt file and the hub's
certificate (``--cert``; default ``DATA/keys/hub.pem`` or the configured
``hub_cert_file``), which is what an auditor outside the hub has.

Exit status: 0 success (``verify``: the receipt is valid), 1 the hub refused
or the receipt is not valid, 2 usage errors (no certificate, unreachable hub).
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import urllib.parse
from pathlib import Path
from typing import Any, Callable

from cryptography import x509

from hub.cli.client import HubClient
from hub.cli.main import URL_HELP, client, command
from hub.config import Settings
from hub.errors import ValidationError
from hub.receipts.format import EVENTS, RNS, verify_receipt
from hub.receipts.issuer import RECORDED
from spool.states import State
from hub.textsafe import escape, say, say_json

_FILTERS = ("document", "organ", "event", "state", "since", "until")


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("receipts", help="query, fetch and verify signed receipts (auditors)")
    common(p)
    rsub = p.add_subparsers(dest="action", required=True)
    qp = rsub.add_parser("query", help="receipts matching filters, as a table, JSON or CSV")
    common(qp)
    qp.add_argument("--document", help="message id of the document")
    qp.add_argument("--organ", help="sender or recipient OrganId")
    qp.add_argument("--event", choices=EVENTS, metavar="EVENT",
                    help=f"only receipts of this event: {', '.join(EVENTS)}")
    states = [s.value for s in State] + [RECORDED]
    qp.add_argument("--state", choices=states, metavar="STATE",
                    help=f"delivery state stated by the receipt: {', '.join(states)}")
    qp.add_argument("--since", help="from this time (ISO 8601 or epoch seconds)")
    qp.add_argument("--until", help="before this time (ISO 8601 or epoch seconds)")
    qp.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    qp.add_argument("--after", type=int, default=0, help="resume after this seq")
    out = qp.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON output (a list of receipts)")
    out.add_argument("--csv", action="store_true", help="CSV output with a header row")
    gp = rsub.add_parser("get", help="download one signed receipt (XML)")
    common(gp)
    gp.add_argument("id", help="receipt id")
    gp.add_argument("-o", "--output", type=Path, help="write to FILE (default: stdout)")
    for parser in (qp, gp):
        parser.add_argument("--url", help=URL_HELP)
    vp = rsub.add_parser("verify", help="verify a receipt offline with the hub's certificate")
    common(vp)
    vp.add_argument("file", type=Path, help="receipt XML file")
    vp.add_argument("--cert", type=Path, help="the hub's certificate, PEM (default: DATA/keys/hub.pem)")


@command("receipts")
def cmd_receipts(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "verify":
        return _verify(args, settings)
    with client(args, settings, "auditor") as hub:
        if args.action == "query":
            return _query(hub, args)
        reply = hub.request("GET", f"/v1/receipts/{urllib.parse.quote(args.id, safe='')}")
    if reply.status != 200:
        raise hub.refused(reply, "receipts get")
    if args.output:
        args.output.write_bytes(reply.body)
        say(f"{args.output}: receipt {args.id} ({len(reply.body)} bytes)", file=sys.stderr)
    else:
        sys.stdout.buffer.write(reply.body)
        sys.stdout.flush()
    return 0


def _query(hub: HubClient, args: argparse.Namespace) -> int:
    wanted = max(1, args.limit)
    query: dict[str, str] = {k: str(getattr(args, k)) for k in _FILTERS if getattr(args, k)}
    if args.csv:
        query["format"] = "csv"
    after = args.after
    items: list[dict[str, Any]] = []
    csv_parts: list[str] = []
    while wanted > 0:  # pages of at most 1000 until --limit is reached
        page = min(wanted, 1000)
        reply = hub.request("GET", "/v1/receipts?" + urllib.parse.urlencode(
            {**query, "limit": str(page), "after": str(after)}))
        if reply.status != 200:
            raise hub.refused(reply, "receipts query")
        if args.csv:
            lines = reply.body.decode("utf-8").splitlines(keepends=True)
            rows = lines[1:]
            csv_parts.extend(lines if not csv_parts else rows)
            got = len(rows)
            if got:
                after = int(rows[-1].split(",", 1)[0])
        else:
            got_items = reply.json()["items"]
            items.extend(got_items)
            got = len(got_items)
            if got:
                after = got_items[-1]["seq"]
        wanted -= got
        if got < page:
            break
    if args.csv:
        sys.stdout.write("".join(escape(line.rstrip("\r\n")) + "\n" for line in csv_parts))
    elif args.json:
        say_json(items)
    else:
        _print_table(items)
    return 0


def _print_table(items: list[dict[str, Any]]) -> None:
    say(f"{'SEQ':>6} {'TIME':<24} {'EVENT':<9} {'STATE':<9} {'BS':<2} {'SIG':<8} "
          f"{'MESSAGE':<26} {'SENDER':<14} -> RECIPIENT")
    for r in items:
        say(f"{r['seq']:>6} {r['time']:<24} {r['event']:<9} {r['state'] or '':<9} "
              f"{r['business_status'] or '':<2} {r['sender_signature'] or '':<8} "
              f"{r['message_id']:<26} {r['sender']:<14} -> {r['recipient'] or ''}")
    say(f"-- {len(items)} receipts" + (f" (next: --after {items[-1]['seq']})" if items else ""))


# -- offline ----------------------------------------------------------------------------

def _hub_cert_file(args: argparse.Namespace, settings: Settings) -> Path | None:
    if args.cert:
        return args.cert
    for candidate in (settings.data_path / "keys" / "hub.pem",
                      Path(settings.hub_cert_file) if settings.hub_cert_file else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _claimed_time(xml: bytes) -> dt.datetime | None:
    """The receipt's own Time, read without trust: only to pick the moment at
    which the hub's certificate must have been valid (the signature covers it)."""
    from hub.crypto.signing import parse_xml
    try:
        text = parse_xml(xml).findtext(f"{{{RNS}}}Time")
        return dt.datetime.fromisoformat(text) if text else None
    except (ValidationError, ValueError):
        return None


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    cert_file = _hub_cert_file(args, settings)
    if cert_file is None:
        say(f"lienthong receipts verify: no hub certificate at "
              f"{settings.data_path / 'keys' / 'hub.pem'}: give --cert HUB_CERT", file=sys.stderr)
        return 2
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        xml = args.file.read_bytes()
    except (OSError, ValueError) as exc:
        say(f"lienthong receipts verify: {exc}", file=sys.stderr)
        return 2
    try:
        f = verify_receipt(xml, cert, at=_claimed_time(xml))
    except ValidationError as exc:
        say(f"{args.file}: invalid: {exc.message}", file=sys.stderr)
        return 1
    for label, value in (("receipt", f.receipt_id), ("message", f.message_id),
                         ("document", f.document_id), ("sha256", f.document_sha256),
                         ("sender", f.sender), ("recipient", f.recipient),
                         ("event", f.event), ("state", f.state),
                         ("business status", f.business_status),
                         ("time", f.time.isoformat()), ("sender signature", f.sender_signature),
                         ("hub", f.hub_id)):
        if value is not None:
            say(f"{label:<17} {value}")
    say(f"valid (signed by {cert.subject.rfc4514_string()})")
    return 0
