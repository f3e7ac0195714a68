"""Pre-fill a spool with a backlog of queued deliveries, through the SQLite backend's bulk loader.

The database is first opened and closed by the hub's own spool code
(``SqliteSpool.open``: pragmas and migrations), so the schema is exactly the
hub's; then rows are bulk-inserted with ``executemany`` in one transaction
(``synchronous=OFF`` for the fill only: it is setup, not measured).

What a backlog row is: one envelope, one delivery in ``queued``, and the
``accepted`` event the hub would have written (the hash chain is kept
valid, so the hub continues it).  Deliveries alternate between the mailbox
(recipients that never poll) and the ``provincial`` route, which the bench
configures no adapter for, so neither is ever dispatched: they stay queued
for the whole measurement.  All backlog envelopes share one payload row (a
real signed envelope); each backlog envelope has a payload row of its own
(so counting payload bytes costs what it would), holding a 64-byte stand-in
instead of the 10 KB document: ~1 KB per document on disk instead of 10 GB.
No queue path reads the bytes of a delivery it does not dispatch.
Acceptance receipts are not written for the backlog (no queue path reads
them); the receipt issuer's cursor is moved past the backlog's events, as a
running hub's issuer would have (an ``accepted`` event earns no receipt from
it), so the hub does not re-read a million events when it starts.

``--dispatch K`` adds K deliveries to ``peer.lucyen`` (real payloads, due
now), which the hub dispatches as soon as it starts: the dispatch phase.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Iterator

from bench.common import COMMUNES, OFFICES, PEER_ORGAN, PEER_ROUTE, read_pool

PROVINCIAL_ORGAN = "000.00.02.H63"  # a provincial department: route "provincial"
LIFETIME = 5 * 86400.0


def create_schema(data: Path) -> None:
    from spool.sqlite.backend import SqliteSpool

    async def go() -> None:
        spool = SqliteSpool(data)
        await spool.open()
        await spool.close()
    asyncio.run(go())


def _rows(start: int, count: int, now: float, sha: str, size: int, route_of: Any,
          prefix: str) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...], dict[str, Any]]]:
    signature = json.dumps({"result": "valid", "detail": "bench backlog", "signer": None})
    for n in range(start, start + count):
        sender = COMMUNES[n % len(COMMUNES)]
        recipient, route = route_of(n)
        mid = f"{prefix}{n:0{26 - len(prefix)}d}"
        doc_id = f"{sender},2026/01/01,{prefix}{n}/UBND"
        at = now - (start + count - n) * 0.001
        env = (mid, "edoc", sender, doc_id, doc_id, sha, size, "backlog", f"{n}/UBND", None, None,
               signature, "http", at)
        dlv = (mid, recipient, route, "queued", at, at + LIFETIME, at, at)
        detail = {"kind_of": "edoc", "document_id": doc_id, "sha256": sha, "size": size,
                  "recipients": [{"organ": recipient, "route": route}], "signature": "valid",
                  "origin": "http"}
        yield env, dlv, {"message_id": mid, "organ": sender, "at": at, "detail": detail}


_STAND_IN = b"bench backlog payload stand-in " * 2 + b"..!!"


def insert(db: Path, count: int, raw: bytes, *, route_of: Any, prefix: str,
           own_payloads: bool = False, batch: int = 50_000) -> float:
    """Bulk-load the backlog through the SQLite backend's loader (the SQL is there)."""
    from hub.receipts.issuer import CURSOR_KEY
    from spool.sqlite.bulk import load_backlog
    now = time.time()
    return load_backlog(db, _rows(0, count, now, hashlib.sha256(raw).hexdigest(), len(raw),
                                  route_of, prefix),
                        raw, now=now, cursor_key=CURSOR_KEY,
                        stand_in=_STAND_IN if own_payloads else None, batch=batch)


def backlog_route(n: int) -> tuple[str, str]:
    if n % 2:
        return PROVINCIAL_ORGAN, "provincial"
    return OFFICES[n % len(OFFICES)], "mailbox"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--pool", required=True, help="a pool file; its first document is the payload")
    p.add_argument("--backlog", type=int, default=0)
    p.add_argument("--dispatch", type=int, default=0)
    args = p.parse_args(argv)
    data = Path(args.data)
    out: dict[str, Any] = {}
    if not (data / "spool.db").exists():
        create_schema(data)
    raw = read_pool(Path(args.pool), 1)[0][1]
    if args.backlog:
        out["backlog_seconds"] = insert(data / "spool.db", args.backlog, raw,
                                        route_of=backlog_route, prefix="00B", own_payloads=True)
    if args.dispatch:
        out["dispatch_seconds"] = insert(data / "spool.db", args.dispatch, raw,
                                         route_of=lambda n: (PEER_ORGAN, PEER_ROUTE),
                                         prefix=f"00D{int(time.time())}")
    out["db_bytes"] = (data / "spool.db").stat().st_size
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
