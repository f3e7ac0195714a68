"""Pools of envelopes signed by their senders, made before any timing.

Each document is what an agency system sends: ``hub.samples.edoc`` of the
wanted size with its own DocumentId, signed with ``hub.signing.sign_envelope``
and the sender's development key.  Signing runs on both cores (it is done
before the hub starts, so it competes with nothing) and pools are cached
under the run's cache directory, keyed by their specification.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
from pathlib import Path
from typing import Any

from bench.common import COMMUNES, OFFICES, note, read_pool, sender_key, write_pool

_keys: dict[str, Any] = {}
_ident: Path | None = None


def _init(ident: str, huge: bool) -> None:
    global _ident
    _ident = Path(ident)
    if huge:
        # The sender's own tooling: the hub's sign_envelope parses with
        # huge_tree=False, which refuses a text node over 10,000,000
        # characters (an attachment over ~7 MB).  A sender signing a 100 MB
        # envelope needs a parser that allows it; so does the hub (RESULTS.md).
        # signxml's signer re-parses with its own default parser, which has
        # the same limit: give it one without (the sender's side only).
        from lxml import etree
        from signxml.processor import XMLProcessor

        import hub.crypto.signing as signing
        huge_parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                                      huge_tree=True)
        signing._local.parser = huge_parser
        XMLProcessor._default_parser = huge_parser


def _sign(job: tuple[str, int, int, str, list[str], list[str]]) -> list[tuple[str, bytes]]:
    from hub.edxml import samples
    from hub.crypto.signing import sign_envelope
    tag, start, stop, size_s, recipients, senders = job
    size = int(size_s)
    out = []
    for n in range(start, stop):
        sender = (senders or COMMUNES)[n % len(senders or COMMUNES)]
        if sender not in _keys:
            assert _ident is not None
            _keys[sender] = sender_key(_ident, sender)
        to = recipients or [OFFICES[n % len(OFFICES)]]
        raw = samples.edoc(sender, to, f"{tag}{n}", size=size)
        out.append((sender, sign_envelope(raw, *_keys[sender])))
    return out


def pool(cache: Path, ident: Path, tag: str, count: int, size: int,
         recipients: list[str] | None = None, workers: int = 2,
         senders: list[str] | None = None) -> Path:
    """The pool file for this spec, signing what is not cached yet.  Senders: the
    district's communes in turn, or ``senders`` (whose keys the run's identity holds)."""
    spec: dict[str, Any] = {"tag": tag, "count": count, "size": size,
                            "recipients": recipients or [], "ident": str(ident), "v": 2}
    if senders:
        spec["senders"] = senders
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    path = cache / f"pool-{tag}-{size}-{count}-{digest}.bin"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    note(f"signing {count} envelopes of {size} bytes ({tag}) on {workers} processes")
    step = max(1, min(500, count // (workers * 4) or 1))
    jobs = [(tag, i, min(count, i + step), str(size), recipients or [], senders or [])
            for i in range(0, count, step)]
    tmp = path.with_suffix(".tmp")
    huge = size > 5_000_000
    with cf.ProcessPoolExecutor(workers if not huge else 1, initializer=_init,
                                initargs=(str(ident), huge)) as ex:
        def docs():  # type: ignore[no-untyped-def]
            for chunk in ex.map(_sign, jobs):
                yield from chunk
        write_pool(tmp, docs())
    tmp.rename(path)
    return path


def first(path: Path) -> tuple[str, bytes]:
    return read_pool(path, 1)[0]
