"""The compute floor: what one accept costs in CPU alone, in-process, on one core.

For the same signed envelopes the HTTP phase sends, the calls cleanup makes
on the bytes: hardened parse and XSD validation (``hub.xmlsafe``), field
extraction (``hub.edxml``), sender check, sender signature verification
(``hub.signing.verify_sender``), SHA-256, and the signed acceptance receipt
(``hub.receipts_xml.build_receipt``), timed per stage and in total.  No HTTP,
no event loop, no database: the number an accept over HTTP is compared to.
Pinned to one CPU (``sched_setaffinity``); prints one JSON object.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import read_pool


def measure(pool_path: Path, count: int, seconds: float, reps: int) -> dict[str, Any]:
    from hub.edxml import envelope as edxml
    from hub.edxml import xmlsafe
    from hub.config import build_settings
    from hub.crypto.setup import load_crypto
    from hub.directory import load_directory
    from hub.receipts.format import ReceiptFields, build_receipt
    from hub.crypto.signing import verify_sender

    docs = read_pool(pool_path, count)
    tmp = Path(tempfile.mkdtemp(prefix="lienthong-floor-"))
    try:
        shutil.copytree(Path(os.environ["BENCH_IDENT"]) / "keys", tmp / "keys")
        s = build_settings({"data_dir": str(tmp)})
        directory = load_directory(s)
        keys, trust = load_crypto(s, directory)
        policy = lambda organ: s.default_signature_policy  # noqa: E731

        def receipt(env: edxml.Envelope, sha: str, result: str) -> bytes:
            return build_receipt(ReceiptFields(
                receipt_id="01BENCH.accepted", message_id="01BENCH", document_sha256=sha,
                document_id=env.document_id or "", sender=env.sender, event="accepted",
                state="queued", time=dt.datetime.now(dt.timezone.utc), sender_signature=result,
                hub_id=directory.hub.id), keys)

        def whole(raw: bytes, sender: str) -> None:
            # What cleanup does on the bytes (the same calls, without the spool).
            tree = xmlsafe.parse(raw, max_size=s.max_envelope_size, max_depth=s.max_xml_depth)
            xmlsafe.validate(tree)
            env = edxml.extract(tree, strict=False)
            assert env.sender == sender and directory.get(sender) is not None
            check = verify_sender(tree.getroot(), env.sender, trust, policy(env.sender))
            assert check.result == "valid", check
            receipt(env, hashlib.sha256(raw).hexdigest(), check.result)

        for sender, raw in docs[:min(len(docs), 10)]:  # warm: per-thread parsers, schema
            whole(raw, sender)
        rates = []
        for _ in range(reps):
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds or n == 0:
                sender, raw = docs[n % len(docs)]
                whole(raw, sender)
                n += 1
            rates.append(n / (time.perf_counter() - t0))
        # Per stage, once over the pool (same work, split).
        stages = dict.fromkeys(("parse", "validate", "extract", "verify", "sha256", "receipt"), 0.0)
        m = 0
        t_end = time.perf_counter() + seconds
        for sender, raw in docs:
            t = [time.perf_counter()]
            tree = xmlsafe.parse(raw, max_size=s.max_envelope_size, max_depth=s.max_xml_depth)
            t.append(time.perf_counter())
            xmlsafe.validate(tree)
            t.append(time.perf_counter())
            env = edxml.extract(tree, strict=False)
            t.append(time.perf_counter())
            check = verify_sender(tree.getroot(), env.sender, trust, policy(env.sender))
            t.append(time.perf_counter())
            sha = hashlib.sha256(raw).hexdigest()
            t.append(time.perf_counter())
            receipt(env, sha, check.result)
            t.append(time.perf_counter())
            for name, a, b in zip(stages, t, t[1:]):
                stages[name] += b - a
            m += 1
            if time.perf_counter() > t_end:
                break
        return {"docs_per_s": statistics.median(rates), "reps": rates,
                "ms_per_doc": 1e3 / statistics.median(rates),
                "stages_ms": {k: round(v / m * 1e3, 4) for k, v in stages.items()},
                "size": len(docs[0][1]), "cpu": sorted(os.sched_getaffinity(0))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pool", required=True)
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--seconds", type=float, default=2.0, help="per repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--cpu", type=int, default=0, help="the one CPU to run on")
    args = p.parse_args(argv)
    os.sched_setaffinity(0, {args.cpu})
    print(json.dumps(measure(Path(args.pool), args.count, args.seconds, args.reps)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
