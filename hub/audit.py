"""The audit log: the spool's hash-chained events, signed checkpoints, verification.

Where it sits: beside the pipeline, reading it.  Every stage already appends
its event to the spool's ``events`` table in the transaction of the change it
records (``spool.sqlite_tx.Tx.event``): ``accepted``, ``refused`` (code,
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
* ``GET /v1/audit`` (filters; ``format=jsonl`` is the export format: one
  event per line, every column, ``detail`` as an object), ``GET
  /v1/audit/verify`` and ``GET /v1/audit/checkpoints``, for auditors and admins.

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
import base64
import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from cryptography import x509
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier

from hub.errors import ValidationError
from hub.events import event_data, filters
from hub.keys import HubKeys, fingerprint
from hub.receipts_xml import format_time
from hub.signing import DS, DS_SIGNATURE, parse_xml, sign_enveloped
from hub.web import HUB, hub_of, identity, int_param, iso, json_response
from spool.records import Event
from spool.sqlite_tx import _EVENT_COLUMNS, GENESIS_HASH, Tx, event_hash, row_to_event

log = logging.getLogger("hub.audit")

CNS = "urn:lienthong-hub:checkpoint:1"
_VERIFY_CONFIG = SignatureConfiguration(location="./", expect_references=1)
_X509 = f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate"
_META_CERT, _META_DIR, _META_ROWS = "audit.hub_cert_sha256", "audit.directory_sha256", "audit.directory"
#: Entries read from the database per verification step.
PAGE = 5000


# -- checkpoints ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint attests: entry ``event_id`` has hash ``head_hash``."""

    hub_id: str
    sequence: int
    event_id: int
    head_hash: str
    count: int
    time: dt.datetime


_LAYOUT = (("hub_id", "HubId"), ("sequence", "Sequence"), ("event_id", "EventId"),
           ("head_hash", "HeadHash"), ("count", "Count"), ("time", "Time"))


def _c(tag: str) -> str:
    return f"{{{CNS}}}{tag}"


def build_checkpoint(cp: Checkpoint, keys: HubKeys) -> bytes:
    """The signed checkpoint XML (CPU-bound: call it off the event loop)."""
    root = etree.Element(_c("Checkpoint"), nsmap={None: CNS}, version="1")
    for name, tag in _LAYOUT:
        value = getattr(cp, name)
        el = etree.SubElement(root, _c(tag))
        el.text = format_time(value) if name == "time" else str(value)
        if name == "head_hash":
            el.set("algorithm", "sha256")
    placeholder = etree.SubElement(root, DS_SIGNATURE, nsmap={"ds": DS})
    signed, _ = sign_enveloped(root, placeholder, keys.key, keys.cert)
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


class Tampered(Exception):
    """Raised inside verification: the first bad position and why."""

    def __init__(self, position: int | None, reason: str) -> None:
        super().__init__(reason)
        self.position, self.reason = position, reason


def read_checkpoint(xml: bytes | str, trusted: dict[str, x509.Certificate]) -> Checkpoint | None:
    """Verify a checkpoint with the trusted certificate it names; None when it
    names another key (skipped).  Raises ``Tampered`` when it does not verify.
    Fields are read back from what the signature covers, never from the input."""
    try:
        root = parse_xml(xml.encode() if isinstance(xml, str) else bytes(xml))
        der = base64.b64decode(root.findtext(f"{DS_SIGNATURE}/{_X509}") or "")
        signer = fingerprint(x509.load_der_x509_certificate(der))
    except (ValidationError, ValueError) as exc:
        raise Tampered(None, f"unreadable checkpoint: {exc}") from None
    cert = trusted.get(signer)
    if cert is None:
        return None
    try:
        at = dt.datetime.fromisoformat(root.findtext(_c("Time")) or "")
        config = dataclasses.replace(_VERIFY_CONFIG, verification_time=at)
        signed = XMLVerifier().verify(root, x509_cert=cert, expect_config=config).signed_xml
        if signed is None or signed.tag != _c("Checkpoint"):
            raise ValueError("the signed data is not a checkpoint")
        values: dict[str, Any] = {name: signed.findtext(_c(tag)) for name, tag in _LAYOUT}
        for name in ("sequence", "event_id", "count"):
            values[name] = int(values[name])
        values["time"] = dt.datetime.fromisoformat(values["time"])
        return Checkpoint(**values)
    except Exception as exc:  # noqa: BLE001 - signxml raises more than SignXMLException
        raise Tampered(None, f"bad signature: {type(exc).__name__}: {exc}") from None


# -- verification -----------------------------------------------------------------

@dataclasses.dataclass
class VerifyReport:
    """The answer of a verification; ``first_bad_id`` names the first bad entry."""

    ok: bool
    checked: int
    first_bad_id: int | None
    reason: str | None
    head_id: int
    head_hash: str
    checkpoints_ok: int
    checkpoints_skipped: int = 0
    first_id: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        if not self.ok:
            where = f"entry #{self.first_bad_id}" if self.first_bad_id is not None else "checkpoint"
            return f"BROKEN at {where}: {self.reason}"
        text = (f"ok: {self.checked} entries, head #{self.head_id} {self.head_hash}, "
                f"{self.checkpoints_ok} checkpoints verified")
        if self.checkpoints_skipped:
            text += f", {self.checkpoints_skipped} signed by other keys not checked"
        if self.first_id != 1:
            text += f" (from #{self.first_id}: not anchored at genesis)"
        return text


_ENTRY_KEYS = ("id", "at", "kind", "message_id", "delivery_id", "organ", "state", "detail",
               "prev_hash", "hash")


def _fields(e: dict[str, Any] | Event) -> dict[str, Any]:
    d = e.to_dict() if isinstance(e, Event) else e
    if not (isinstance(d, dict) and all(k in d for k in _ENTRY_KEYS) and type(d["id"]) is int
            and isinstance(d["at"], (int, float)) and isinstance(d["kind"], str)
            and isinstance(d["prev_hash"], str) and isinstance(d["hash"], str)
            and isinstance(d["detail"], (str, dict))):
        position = d.get("id") if isinstance(d, dict) and type(d.get("id")) is int else None
        raise Tampered(position, f"malformed entry: {json.dumps(d, default=str)[:200]}")
    return d


def content_hash(d: dict[str, Any]) -> str:
    """The hash an entry should carry.  ``detail`` as stored (text) is hashed
    byte for byte; as an object (exports) it is serialised as the spool does."""
    detail = d["detail"]
    if not isinstance(detail, str):
        detail = json.dumps(detail, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return event_hash(d["prev_hash"], d["id"], float(d["at"]), d["kind"], d["message_id"],
                      d["delivery_id"], d["organ"], d["state"], detail)


class ChainVerifier:
    """Feed entries in stored order (``feed``), then ``finish()`` for the report.

    ``anchored=False`` verifies a partial export: the first entry's id and
    ``prev_hash`` are taken as given."""

    def __init__(self, checkpoints: Iterable[dict[str, Any]] = (),
                 hub_certs: Sequence[x509.Certificate] = (), *, anchored: bool = True) -> None:
        self.anchored = anchored
        self.expect, self.prev, self.prev2 = 1, GENESIS_HASH, ""
        self.checked, self.first_id = 0, 1
        self.problem: Tampered | None = None
        self._suspect: tuple[dict[str, Any], int, str] | None = None  # (entry, position, reason)
        self.cp_ok = self.cp_skipped = 0
        self._by_event: dict[int, list[Checkpoint]] = {}
        self._cp_problems: list[Tampered] = []
        trusted = {fingerprint(c): c for c in hub_certs}
        for row in checkpoints:
            try:
                cp = read_checkpoint(row["xml"], trusted)
                if cp is None:
                    self.cp_skipped += 1
                elif (cp.event_id, cp.head_hash) != (row.get("event_id", cp.event_id),
                                                     row.get("head_hash", cp.head_hash)):
                    raise Tampered(None, "its row disagrees with its signed XML")
                else:
                    self._by_event.setdefault(cp.event_id, []).append(cp)
            except Tampered as exc:
                pos = row.get("event_id") if type(row.get("event_id")) is int else None
                self._cp_problems.append(Tampered(pos, f"checkpoint #{row.get('id')}: {exc.reason}"))

    @property
    def done(self) -> bool:
        return self.problem is not None

    def feed(self, entries: Iterable[dict[str, Any] | Event]) -> bool:
        """Check entries in order; False once the first problem is known."""
        for e in entries:
            if self.problem is not None:
                return False
            try:
                self._one(_fields(e))
            except Tampered as exc:
                self.problem = exc
        return self.problem is None

    def _one(self, d: dict[str, Any]) -> None:
        if self._suspect is not None:
            self._diagnose(d)
        eid = d["id"]
        if self.checked == 0 and not self.anchored:
            self.expect, self.prev, self.first_id = eid, d["prev_hash"], eid
        if eid != self.expect:
            if eid > self.expect:
                gone = f"#{self.expect}" + (f"..#{eid - 1}" if eid > self.expect + 1 else "")
                reason = f"entry {gone} is missing (removed): #{eid} follows #{self.expect - 1}"
            else:
                reason = (f"entry #{eid} is out of order or duplicated: "
                          f"#{self.expect} should follow #{self.expect - 1}")
            return self._suspicious(d, eid, reason)
        if d["prev_hash"] != self.prev:
            if self.prev2 and d["prev_hash"] == self.prev2:
                # the entry before linked well but is the intruder: the chain holds up to #eid-2
                self.expect, self.prev, self.checked = eid - 1, self.prev2, self.checked - 1
                raise Tampered(eid - 1, f"entry #{eid - 1} was inserted: #{eid} links to #{eid - 2}")
            return self._suspicious(d, eid, f"entry #{eid} does not link to #{eid - 1} (its prev_hash "
                                            f"differs): an entry was removed, inserted or reordered")
        if content_hash(d) != d["hash"]:
            raise Tampered(eid, f"entry #{eid} was edited: its content does not match its hash")
        for cp in self._by_event.get(eid, ()):
            if cp.head_hash != d["hash"]:
                last = max((k for k in self._by_event if k < eid), default=0)
                raise Tampered(eid, f"entry #{eid} differs from checkpoint #{cp.sequence} signed "
                                    f"{format_time(cp.time)}: the log was rewritten somewhere in "
                                    f"#{last + 1}..#{eid}")
            self.cp_ok += 1
        self.expect, self.prev2, self.prev = eid + 1, self.prev, d["hash"]
        self.checked += 1

    def _suspicious(self, d: dict[str, Any], position: int, reason: str) -> None:
        # Look one entry ahead before naming the cause: a swap explains itself there.
        self._suspect = (d, position, reason)

    def _diagnose(self, d: dict[str, Any]) -> None:
        s, position, reason = self._suspect  # type: ignore[misc]
        self._suspect = None
        if d["prev_hash"] == self.prev and d["hash"] == s["prev_hash"]:
            reason = (f"entries #{s['id']} and #{d['id']} are swapped (reordered): "
                      f"#{d['id']}'s content stands where #{s['id']}'s should")
        raise Tampered(position, reason)

    def finish(self) -> VerifyReport:
        if self.problem is None and self._suspect is not None:
            self.problem = Tampered(*self._suspect[1:])
        problems = list(self._cp_problems)
        last = self.expect - 1
        if self.problem is not None:
            problems.append(self.problem)
        elif self.checked or self.anchored:
            beyond = sorted(k for k in self._by_event if k > last)
            if beyond:
                cp = self._by_event[beyond[0]][0]
                problems.append(Tampered(last + 1, f"the log ends at #{last} but checkpoint "
                                         f"#{cp.sequence} covers #{cp.event_id}: entries "
                                         f"#{last + 1}..#{cp.event_id} were removed"))
        if not self.anchored:  # checkpoints before a partial export cannot be checked
            self.cp_skipped += sum(len(v) for k, v in self._by_event.items() if k < self.first_id)
        first = min(problems, key=lambda p: p.position if p.position is not None else 1 << 62,
                    default=None)
        return VerifyReport(first is None, self.checked, first.position if first else None,
                            first.reason if first else None, last, self.prev,
                            self.cp_ok, self.cp_skipped, self.first_id)


def verify_chain(entries: Iterable[dict[str, Any] | Event], checkpoints: Iterable[dict[str, Any]] = (),
                 hub_cert: x509.Certificate | Sequence[x509.Certificate] = (), *,
                 anchored: bool = True) -> VerifyReport:
    """Verify a whole chain and its checkpoints (see the module docstring)."""
    certs = [hub_cert] if isinstance(hub_cert, x509.Certificate) else list(hub_cert)
    verifier = ChainVerifier(checkpoints, certs, anchored=anchored)
    verifier.feed(entries)
    return verifier.finish()


# -- the running hub: key/directory events, checkpoints ------------------------------

def directory_digest(rows: list[dict[str, Any]]) -> str:
    text = json.dumps(rows, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _record_identity(tx: Tx, hub_id: str, keys: HubKeys, rows: list[dict[str, Any]]) -> None:
    meta = dict(tx.conn.execute("SELECT key, value FROM meta WHERE key LIKE 'audit.%'").fetchall())
    # A fresh spool records its baseline silently: the log starts with the first
    # document (the event stream's contract), and every checkpoint carries the
    # signing certificate.  A spool that has a log but no baseline gets *_loaded.
    fresh = tx.conn.execute("SELECT 1 FROM events LIMIT 1").fetchone() is None
    cert_fp, digest = fingerprint(keys.cert), directory_digest(rows)
    key_detail = {"subject": keys.cert.subject.rfc4514_string(),
                  "not_after": keys.cert.not_valid_after_utc.isoformat()}
    if _META_CERT not in meta and not fresh:
        tx.event("keys_loaded", organ=hub_id, fingerprint=cert_fp, **key_detail)
    elif _META_CERT in meta and meta[_META_CERT] != cert_fp:
        tx.event("keys_changed", organ=hub_id, old=meta[_META_CERT], new=cert_fp, **key_detail)
    if _META_DIR not in meta and not fresh:
        tx.event("directory_loaded", organ=hub_id, digest=digest, organs=len(rows))
    elif _META_DIR in meta and meta[_META_DIR] != digest:
        old = {r["id"]: r for r in json.loads(meta.get(_META_ROWS, "[]"))}
        new = {r["id"]: r for r in rows}
        tx.event("directory_changed", organ=hub_id, old=meta[_META_DIR], new=digest, organs=len(rows),
                 added=sorted(new.keys() - old.keys())[:200],
                 removed=sorted(old.keys() - new.keys())[:200],
                 changed=sorted(k for k in new.keys() & old.keys() if new[k] != old[k])[:200])
    tx.conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
                        "DO UPDATE SET value = excluded.value",
                        [(_META_CERT, cert_fp), (_META_DIR, digest),
                         (_META_ROWS, json.dumps(rows, ensure_ascii=False))])


def _head(tx: Tx) -> tuple[int, str, int, int] | None:
    # Read inside the writer's transaction: the head is exactly what is committed with it.
    head = tx.conn.execute("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
    last = tx.conn.execute("SELECT COALESCE(MAX(id), 0), COALESCE(MAX(event_id), 0) "
                           "FROM checkpoints").fetchone()
    return None if head is None else (head[0], head[1], last[0], last[1])


def _insert_checkpoint(tx: Tx, row: dict[str, Any]) -> None:
    tx.conn.execute("INSERT INTO checkpoints (id, at, event_id, head_hash, xml) VALUES (?,?,?,?,?)",
                    (row["id"], row["at"], row["event_id"], row["head_hash"], row["xml"]))


class Auditor:
    """The audit side of one running hub: start-up records, checkpoints, verify."""

    def __init__(self) -> None:
        self.hub: Any = None  # hub.context.HubContext, from start()
        self.scheduler: AsyncIOScheduler | None = None
        self._lock = asyncio.Lock()

    async def start(self, hub: Any, *, schedule: bool = True) -> None:
        """Record key/directory changes, then schedule checkpoints (and one at close)."""
        self.hub = hub
        hub.on_close.append(self.checkpoint)
        await hub.spool.write(lambda tx: _record_identity(tx, hub.hub_id, hub.keys,
                                                          hub.directory.to_rows()))
        if schedule:
            self.scheduler = AsyncIOScheduler(timezone=dt.UTC)
            self.scheduler.add_job(self.checkpoint, "interval", id="checkpoint", coalesce=True,
                                   seconds=hub.settings.checkpoint_interval, max_instances=1)
            self.scheduler.start()

    async def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None

    async def checkpoint(self) -> dict[str, Any] | None:
        """Sign the chain head if the log grew since the last checkpoint; the row or None."""
        async with self._lock:
            head = await self.hub.spool.write(_head)
            if head is None or head[0] <= head[3]:
                return None
            event_id, head_hash, last_seq, _ = head
            now = self.hub.clock()
            cp = Checkpoint(self.hub.hub_id, last_seq + 1, event_id, head_hash, event_id,
                            dt.datetime.fromtimestamp(now, dt.UTC))
            xml = await asyncio.to_thread(build_checkpoint, cp, self.hub.keys)
            row = {"id": cp.sequence, "at": now, "event_id": event_id, "head_hash": head_hash,
                   "xml": xml}
            await self.hub.spool.write(lambda tx: _insert_checkpoint(tx, row))
            log.info("checkpoint #%d signed: entry #%d %s", cp.sequence, event_id, head_hash)
            return row

    async def verify(self) -> VerifyReport:
        """Verify the whole log as the database holds it now, against the hub's certificate."""
        spool = self.hub.spool
        cps = [dict(r) for r in await spool._all("SELECT * FROM checkpoints ORDER BY id")]
        verifier = await asyncio.to_thread(ChainVerifier, cps, [self.hub.keys.cert])
        # Up to the database's own last row, not the writer's idea of it: rows
        # appended behind the hub's back are part of what is checked.
        head, after = (await spool._one("SELECT COALESCE(MAX(id), 0) AS n FROM events"))["n"], 0
        while after < head and not verifier.done:
            rows = [dict(r) for r in await spool._all(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                (after, head, PAGE))]
            if not rows:
                break
            await asyncio.to_thread(verifier.feed, rows)
            after = rows[-1]["id"]
        return verifier.finish()


# -- HTTP ---------------------------------------------------------------------------

AUDIT = web.AppKey("audit", Auditor)


def parse_time(name: str, raw: str) -> float:
    """ISO 8601 (naive = UTC) or epoch seconds; a clear 422 otherwise."""
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ValidationError(f"{name} must be ISO 8601 or epoch seconds, not {raw!r}",
                              code="bad_parameter", details={"parameter": name}) from None
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp()


async def get_audit(request: web.Request) -> web.Response:
    hub = hub_of(request)
    identity(request, "auditor")
    q = request.query
    where, params = ["id > ?"], [int_param(request, "after", 0)]
    for name, op in (("since", ">="), ("until", "<")):
        if q.get(name):
            where.append(f"at {op} ?")
            params.append(parse_time(name, q[name]))
    for key, value in filters(request).items():
        if key == "kinds":
            where.append(f"kind IN ({','.join('?' * len(value))})")
            params.extend(value)
        else:
            where.append(f"{key} = ?")
            params.append(value)
    fmt = q.get("format", "json")
    if fmt not in ("json", "jsonl"):
        raise ValidationError(f"format must be json or jsonl, not {fmt!r}", code="bad_parameter",
                              details={"parameter": "format"})
    limit = int_param(request, "limit", 100, 1, 1000)
    rows = await hub.spool._all(f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)} "
                                f"ORDER BY id LIMIT ?", (*params, limit))
    events = [row_to_event(r) for r in rows]
    nxt = str(request.rel_url.update_query({"after": events[-1].id})) if len(events) == limit else None
    if fmt == "jsonl":
        text = "".join(json.dumps(e.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"
                       for e in events)
        return web.Response(text=text, content_type="application/x-ndjson",
                            headers={"Link": f'<{nxt}>; rel="next"'} if nxt else None)
    body: dict[str, Any] = {"items": [event_data(e) for e in events]}
    if nxt:
        body["next"] = nxt
    return json_response(body)


async def get_verify(request: web.Request) -> web.Response:
    identity(request, "auditor")
    report = await request.app[AUDIT].verify()
    if not report.ok:
        log.error("audit log verification failed: %s", report.summary())
    return json_response(report.to_dict())  # a broken chain is an answer, not an error


async def get_checkpoints(request: web.Request) -> web.Response:
    hub = hub_of(request)
    identity(request, "auditor")
    limit = int_param(request, "limit", 100, 1, 1000)
    rows = await hub.spool._all("SELECT id, at, event_id, head_hash, xml FROM checkpoints "
                                "WHERE id > ? ORDER BY id LIMIT ?",
                                (int_param(request, "after", 0), limit))
    items = [{"id": r["id"], "at": r["at"], "at_iso": iso(r["at"]), "event_id": r["event_id"],
              "head_hash": r["head_hash"], "xml": bytes(r["xml"]).decode("utf-8")} for r in rows]
    body: dict[str, Any] = {"items": items}
    if len(items) == limit:
        body["next"] = str(request.rel_url.update_query({"after": items[-1]["id"]}))
    return json_response(body)


def setup_routes(app: web.Application) -> None:
    auditor = app[AUDIT] = Auditor()

    async def audit_ctx(app: web.Application) -> AsyncIterator[None]:
        # Appended after create_app's own context: the hub is open here.  The
        # shutdown checkpoint runs in the hub's close hooks, after the queue
        # manager's last events and before the spool closes.
        await auditor.start(app[HUB])
        yield
        await auditor.stop()

    app.cleanup_ctx.append(audit_ctx)
    app.router.add_get("/v1/audit", get_audit)
    app.router.add_get("/v1/audit/verify", get_verify)
    app.router.add_get("/v1/audit/checkpoints", get_checkpoints)
