"""``lienthong audit``: export the hash-chained audit log and verify it, online or offline.

``audit export [-o FILE] [--since T] [--url URL]`` reads the running hub's
API with an auditor token minted from the local token secret and writes JSON
lines (format ``lienthong-audit/1``):

* line 1, the header: ``{"export": {"format": "lienthong-audit/1", "hub":
  HUB_ID, "url": URL, "exported_at": ISO, "since": T or null, "complete":
  BOOL}}`` (``complete`` is false when ``--since`` cut the head of the log);
* one event per line, exactly as ``GET /v1/audit?format=jsonl`` gives them:
  ``{"id", "at", "kind", "message_id", "delivery_id", "organ", "state",
  "detail": {...}, "prev_hash", "hash"}``;
* one line per signed checkpoint: ``{"checkpoint": {"id", "at", "event_id",
  "head_hash", "xml"}}``.  They are fetched before the events, so every
  checkpoint in the file covers an exported entry.

``audit verify [FILE] [--cert PEM ...] [--db]`` checks the chain from genesis
and every checkpoint signed by a trusted certificate (``--cert``, repeatable;
default the configured ``hub_cert_file`` or ``DATA/keys/hub.pem``):

* with FILE: an export, offline (a partial export is checked from its first
  entry and says so);
* with ``--db``: ``DATA/spool.db`` opened read-only, so an auditor can check a
  copy of the database with no hub running;
* otherwise: the running hub answers ``GET /v1/audit/verify`` itself.

It prints ``ok: N entries, head #ID HASH, K checkpoints verified`` (exit 0)
or ``BROKEN at entry #ID: reason`` (exit 1); 2 when it could not check.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from hub.audit.auditor import ChainVerifier, VerifyReport, verify_spool
from hub.cli.client import HubClient
from hub.cli.main import URL_HELP, client, command, directory_of
from hub.config import Settings
from hub.errors import HubError
from hub.textsafe import safe_json, say
from spool import open_spool

FORMAT = "lienthong-audit/1"


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    p = sub.add_parser("audit", help="export and verify the hash-chained audit log (auditors)")
    common(p)
    asub = p.add_subparsers(dest="action", required=True)
    ep = asub.add_parser("export", help="the audit log and its signed checkpoints as JSON lines")
    common(ep)
    ep.add_argument("-o", "--output", type=Path, help="file to write (default: standard output)")
    ep.add_argument("--since", help="only entries from this time (ISO 8601 or epoch): a partial export")
    ep.add_argument("--url", help=URL_HELP)
    vp = asub.add_parser("verify", help="check the chain and the checkpoints; name the first bad entry")
    common(vp)
    vp.add_argument("file", nargs="?", type=Path, help="an export to check offline")
    vp.add_argument("--cert", action="append", type=Path,
                    help="trusted hub certificate (PEM; repeat for earlier hub keys)")
    vp.add_argument("--db", action="store_true", help="read DATA/spool.db directly, read-only")
    vp.add_argument("--url", help=URL_HELP)


@command("audit")
def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "export":
        return _export(args, settings)
    if args.file is not None and args.db:
        say("lienthong audit verify: give FILE or --db, not both", file=sys.stderr)
        return 2
    if args.file is None and not args.db:
        with client(args, settings, "auditor", 3600) as hub:
            report = VerifyReport(**hub.get_json("/v1/audit/verify", "audit verify"))
    else:
        if args.file is not None and not args.file.is_file():
            print(f"lienthong audit verify: no export at {args.file} (make one with "
                  f"`lienthong audit export -o FILE`)", file=sys.stderr)
            return 2
        certs = _certs(args, settings)
        found = _verify_file(args.file, certs) if args.file else _verify_db(settings, certs)
        if isinstance(found, str):
            say(found)
            return 1
        report = found
    say(report.summary())
    return 0 if report.ok else 1


# -- export ---------------------------------------------------------------------------

def _export(args: argparse.Namespace, settings: Settings) -> int:
    with client(args, settings, "auditor", 3600) as hub:
        return _export_from(hub, args, settings)


def _export_from(hub: HubClient, args: argparse.Namespace, settings: Settings) -> int:
    base = hub.url
    checkpoints: list[dict[str, Any]] = []
    after = 0
    while True:  # checkpoints first: each then covers an entry the export holds
        body = hub.get_json(f"/v1/audit/checkpoints?after={after}&limit=1000", "audit export")
        checkpoints.extend({k: c[k] for k in ("id", "at", "event_id", "head_hash", "xml")}
                           for c in body["items"])
        if "next" not in body:
            break
        after = checkpoints[-1]["id"]
    header = {"format": FORMAT, "hub": directory_of(settings).hub.id, "url": base,
              "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
              "since": args.since, "complete": not args.since}
    # Into FILE.part, renamed when whole: a failed export never looks like a short log.
    part = args.output.with_name(args.output.name + ".part") if args.output else None
    count, after = 0, 0
    with open(part, "w", encoding="utf-8") if part else contextlib.nullcontext(sys.stdout) as out:
        out.write(safe_json(json.dumps({"export": header}, ensure_ascii=False)) + "\n")
        while True:
            query = {"format": "jsonl", "limit": "1000", "after": str(after)}
            if args.since:
                query["since"] = args.since
            reply = hub.request("GET", f"/v1/audit?{urllib.parse.urlencode(query)}")
            if reply.status != 200:
                raise hub.refused(reply, "audit export")
            lines = reply.body.decode("utf-8").splitlines()
            out.writelines(safe_json(line) + "\n" for line in lines)
            count += len(lines)
            if len(lines) < 1000:
                break
            after = json.loads(lines[-1])["id"]
        out.writelines(safe_json(json.dumps({"checkpoint": cp}, ensure_ascii=False)) + "\n"
                       for cp in checkpoints)
    if part:
        os.replace(part, args.output)
    say(f"exported {count} entries and {len(checkpoints)} checkpoints"
          + (f" to {args.output}" if args.output else ""), file=sys.stderr)
    return 0


# -- verify -----------------------------------------------------------------------------

def _certs(args: argparse.Namespace, settings: Settings) -> list[x509.Certificate]:
    paths = args.cert or [Path(settings.hub_cert_file) if settings.hub_cert_file
                          else settings.data_path / "keys" / "hub.pem"]
    certs = []
    for path in paths:
        try:
            certs.append(x509.load_pem_x509_certificates(Path(path).read_bytes())[0])
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else exc
            raise HubError(f"cannot read the hub certificate {path}: {why}; give it with --cert",
                           code="bad_certificate") from None
    return certs


def _verify_file(path: Path, certs: list[x509.Certificate]) -> VerifyReport | str:
    header: dict[str, Any] = {}
    checkpoints: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:  # first pass: header, checkpoints, well-formedness
        for number, line in enumerate(fh, 1):
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if not isinstance(obj, dict):
                return f"BROKEN at line {number}: not a JSON object"
            if "export" in obj:
                header = obj["export"]
            elif "checkpoint" in obj:
                checkpoints.append(obj["checkpoint"])
    verifier = ChainVerifier(checkpoints, certs, anchored=header.get("complete", True) is not False)
    verifier.feed(_file_events(path))
    return verifier.finish()


def _file_events(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            obj = json.loads(line)
            if "export" not in obj and "checkpoint" not in obj:
                yield obj


def _verify_db(settings: Settings, certs: list[x509.Certificate]) -> VerifyReport:
    """Verify the spool's log offline, through the backend, opened read-only."""
    async def run() -> VerifyReport:
        spool = open_spool(settings, time.time)
        try:
            await spool.open(read_only=True)
        except HubError as exc:
            raise HubError(exc.message, code="no_database") from None
        try:
            return await verify_spool(spool, certs)
        finally:
            await spool.close()
    try:
        return asyncio.run(run())
    except OSError as exc:
        raise HubError(f"cannot read the spool under {settings.data_path}: {exc}",
                       code="no_database") from None
