"""The audit log: the spool's hash-chained events, signed checkpoints, verification.

Where it sits: beside the pipeline, reading it.  Every stage already appends
its event to the spool's ``events`` table in the transaction of the change it
records (``Spool.record_event`` and the backend's own writes): ``accepted``, ``refused`` (code,
message, origin), ``state``, ``status_received``, ``operator`` (who, what,
why), ``retention``.  This module adds the rest of the audit trail:

* key and directory changes: at start the hub compares its certificate's
  SHA-256 fingerprint and the directory's digest with those recorded in
  ``meta`` and appends ``keys_changed``/``directory_changed`` (old and new
  values, the organisations added, removed or changed).  A fresh spool only
  records the baseline (its log starts with the first document); a log with
  no baseline yet (an older spool) gets ``keys_loaded``/``directory_loaded``;
* signed checkpoints of the chain head, every ``checkpoint_interval`` and at
  shutdown (after the queue manager has handed back its leases), only when
  the log has grown since the last one;
* verification of the whole log against the checkpoints (``verify``).

Its HTTP views (``GET /v1/audit``, ``/v1/audit/verify``,
``/v1/audit/checkpoints``) are in ``hub.api.audit``.

The chain: entry ids are dense from 1; ``hash`` = ``event_hash(prev_hash, id,
at, kind, message_id, delivery_id, organ, state, detail_json)``; the first
``prev_hash`` is ``GENESIS_HASH``.

Checkpoint (namespace ``urn:lienthong-hub:checkpoint:1``), signed by the hub
like a receipt (enveloped ds:Signature, URI="", exclusive c14n, SHA-256)::

    <Checkpoint version="1"><HubId/><Sequence/><EventId/><HeadHash
      algorithm="sha256"/><Count/><Time/><ds:Signature/></Checkpoint>

Verification (``verify_chain``) recomputes every hash from genesis and names
the FIRST bad entry: a hash that does not match the content (edited); an id
gap (removed); an id out of order or twice, or a ``prev_hash`` that does not
link (removed, inserted or reordered — swaps and insertions are told apart by
looking one entry ahead and two behind); an entry whose hash differs from a
trusted checkpoint's (the chain was rewritten consistently up to there); a
checkpoint beyond the last entry (the tail was cut).  Checkpoints signed by a
key the verifier does not trust (an earlier hub key) are counted as skipped:
a later checkpoint still commits to the whole history before it.

Limits: entries after the newest checkpoint are protected by the chain
only; deleting the newest entries together with every checkpoint covering
them cannot be seen from the database alone — auditors keep exports.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
from typing import Any, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from hub.audit.chain import (CNS, ChainVerifier, Checkpoint, VerifyReport, build_checkpoint,
                             read_checkpoint, verify_chain)
from hub.crypto.keys import HubKeys, fingerprint
from spool.base import CheckpointRow, Spool

__all__ = ["CNS", "PAGE", "Auditor", "ChainVerifier", "Checkpoint", "VerifyReport",
           "build_checkpoint", "read_checkpoint", "verify_chain", "verify_spool"]

log = logging.getLogger("hub.audit.auditor")
_META_CERT, _META_DIR, _META_ROWS = "audit.hub_cert_sha256", "audit.directory_sha256", "audit.directory"
#: Entries read from the database per verification step.
PAGE = 5000


# -- the running hub: key/directory events, checkpoints ------------------------------

def directory_digest(rows: list[dict[str, Any]]) -> str:
    text = json.dumps(rows, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


async def _record_identity(spool: Spool, hub_id: str, keys: HubKeys,
                           rows: list[dict[str, Any]]) -> None:
    meta = await spool.get_meta("audit.")
    # A fresh spool records its baseline silently: the log starts with the first
    # document (the event stream's contract), and every checkpoint carries the
    # signing certificate.  A spool that has a log but no baseline gets *_loaded.
    fresh = not await spool.has_events()
    cert_fp, digest = fingerprint(keys.cert), directory_digest(rows)
    key_detail = {"subject": keys.cert.subject.rfc4514_string(),
                  "not_after": keys.cert.not_valid_after_utc.isoformat()}
    events: list[tuple[str, str | None, dict[str, Any]]] = []
    if _META_CERT not in meta and not fresh:
        events.append(("keys_loaded", hub_id, {"fingerprint": cert_fp, **key_detail}))
    elif _META_CERT in meta and meta[_META_CERT] != cert_fp:
        events.append(("keys_changed", hub_id, {"old": meta[_META_CERT], "new": cert_fp,
                                                **key_detail}))
    if _META_DIR not in meta and not fresh:
        events.append(("directory_loaded", hub_id, {"digest": digest, "organs": len(rows)}))
    elif _META_DIR in meta and meta[_META_DIR] != digest:
        old = {r["id"]: r for r in json.loads(meta.get(_META_ROWS, "[]"))}
        new = {r["id"]: r for r in rows}
        events.append(("directory_changed", hub_id, {
            "old": meta[_META_DIR], "new": digest, "organs": len(rows),
            "added": sorted(new.keys() - old.keys())[:200],
            "removed": sorted(old.keys() - new.keys())[:200],
            "changed": sorted(k for k in new.keys() & old.keys() if new[k] != old[k])[:200]}))
    await spool.update_meta({_META_CERT: cert_fp, _META_DIR: digest,
                             _META_ROWS: json.dumps(rows, ensure_ascii=False)}, events)


async def verify_spool(spool: Spool, certs: list[Any]) -> VerifyReport:
    """Verify the whole log as the database holds it now, against ``certs``."""
    checkpoints = [dict(c) for c in await spool.checkpoints()]
    verifier = await asyncio.to_thread(ChainVerifier, checkpoints, certs)
    # Up to the database's own last row, not the writer's idea of it: rows
    # appended behind the hub's back are part of what is checked.
    top = await spool.event_head()
    head, after = (top[0] if top else 0), 0
    while after < head and not verifier.done:
        rows = await spool.chain_entries(after, head, PAGE)
        if not rows:
            break
        await asyncio.to_thread(verifier.feed, rows)
        after = rows[-1]["id"]
    return verifier.finish()


class Auditor:
    """The audit side of one running hub: start-up records, checkpoints, verify."""

    def __init__(self, spool: Spool, keys: HubKeys, hub_id: str, *,
                 clock: Callable[[], float], interval: float) -> None:
        self.spool = spool
        self.keys = keys
        self.hub_id = hub_id
        self.clock = clock
        self.interval = interval
        self.scheduler: AsyncIOScheduler | None = None
        self._lock = asyncio.Lock()

    async def start(self, directory_rows: list[dict[str, Any]], *, schedule: bool = True) -> None:
        """Record key/directory changes, then schedule checkpoints."""
        await _record_identity(self.spool, self.hub_id, self.keys, directory_rows)
        if schedule:
            self.scheduler = AsyncIOScheduler(timezone=dt.UTC)
            self.scheduler.add_job(self.checkpoint, "interval", id="checkpoint", coalesce=True,
                                   seconds=self.interval, max_instances=1)
            self.scheduler.start()

    async def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None

    async def checkpoint(self) -> CheckpointRow | None:
        """Sign the chain head if the log grew since the last checkpoint; the row or None."""
        async with self._lock:
            head = await self.spool.checkpoint_head()
            if head is None or head[0] <= head[3]:
                return None
            event_id, head_hash, last_seq, _ = head
            now = self.clock()
            cp = Checkpoint(self.hub_id, last_seq + 1, event_id, head_hash, event_id,
                            dt.datetime.fromtimestamp(now, dt.UTC))
            xml = await asyncio.to_thread(build_checkpoint, cp, self.keys)
            row = CheckpointRow(id=cp.sequence, at=now, event_id=event_id, head_hash=head_hash,
                                xml=xml)
            await self.spool.add_checkpoint(row)
            log.info("checkpoint #%d signed: entry #%d %s", cp.sequence, event_id, head_hash)
            return row

    async def verify(self) -> VerifyReport:
        """Verify the whole log as the database holds it now, against the hub's certificate."""
        return await verify_spool(self.spool, [self.keys.cert])
