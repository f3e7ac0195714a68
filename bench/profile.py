"""Profile the hub under one benchmark load with py-spy (not part of ``make bench``).

    .venv/bin/pip install py-spy        # a tool, not a dependency of the project
    .venv/bin/python -m bench.profile --size 10000 --concurrency 64 --seconds 8

Starts a hub like ``bench.run`` does, attaches ``py-spy record`` to it
(``--format raw``: collapsed stacks, all threads, idle frames dropped), runs
the load generator, then prints the top frames by own time and by
inclusive time.  ``--e2e`` profiles the end-to-end flow (push to a fake peer
that answers with statuses) instead of accept alone.  ``--server-tree DIR``
runs a patched copy of the hub.
"""
from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import presign
from bench.common import (PEER_ORGAN, PEER_ROUTE, PYTHON, Child, Hub, free_port,
                          http_get, make_identity, note)


def top(collapsed: Path, n: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    out = [f"samples: {total}", "", "own time:"]
    out += [f"  {c / total:6.1%}  {f}" for f, c in own.most_common(n)]
    out += ["", "inclusive time:"]
    out += [f"  {c / total:6.1%}  {f}" for f, c in incl.most_common(n)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--count", type=int, default=6000)
    p.add_argument("--e2e", action="store_true")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--server-tree")
    p.add_argument("--gil", action="store_true",
                   help="only samples holding the GIL (what bounds the hub's one process)")
    p.add_argument("--data", help="an existing data directory (e.g. a pre-filled spool, "
                   "bench.fill) instead of a fresh one")
    p.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "lienthong-bench-cache"))
    p.add_argument("--out", default="", help="keep the collapsed stacks here")
    args = p.parse_args(argv)
    cache = Path(args.cache)
    ident = make_identity(cache)
    work = Path(tempfile.mkdtemp(prefix="lienthong-profile-"))
    recipients = [PEER_ORGAN] if args.e2e else None
    pool = presign.pool(cache, ident, "prof-e2e" if args.e2e else "prof", args.count, args.size,
                        recipients)
    port = free_port()
    config = (f'[adapters."{PEER_ROUTE}"]\nclass = "edxml_http"\n'
              f'url = "http://127.0.0.1:{port}/edxml"\n') if args.e2e else ""
    kw: dict[str, Any] = {"cwd": Path(args.server_tree)} if args.server_tree else {}
    if args.data:
        kw["data"] = Path(args.data)
    hub = Hub(work, "hub", ident, config=config, **kw)
    children: list[object] = [hub]
    try:
        hub.start()
        if args.e2e:
            peer = Child([PYTHON, "-m", "bench.peer", "--port", str(port), "--status-back",
                          "--hub", hub.base, "--ident", str(ident)], work / "peer.log")
            children.append(peer)
            while True:
                try:
                    if http_get(f"http://127.0.0.1:{port}/stats")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.05)
        raw = Path(args.out or work / "stacks.txt")
        spy = subprocess.Popen([str(Path(PYTHON).parent / "py-spy"), "record", "-p", str(hub.pid), "-o", str(raw),
                                "--format", "raw", "--threads", "-r", "200",
                                "-d", str(int(args.seconds + 2))] + (["--gil"] if args.gil else []),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        cmd = [PYTHON, "-m", "bench.load", "--url", hub.base, "--ident", str(ident),
               "--pool", str(pool), "--count", str(args.count), "--max-seconds", str(args.seconds)]
        cmd += ["--rate", str(args.rate)] if args.rate else ["--concurrency", str(args.concurrency)]
        load = Child(cmd, work / "load.log")
        children.append(load)
        res = load.result(args.seconds + 120)
        note(f"load: {res['throughput']:.1f} docs/s, p50 {res['p50_ms']:.1f} ms, "
             f"p99 {res['p99_ms']:.1f} ms, codes {res['codes']}")
        spy.wait(args.seconds + 30)
        print(top(raw, args.top))
    finally:
        for c in reversed(children):
            c.kill()  # type: ignore[attr-defined]
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
