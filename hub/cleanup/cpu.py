"""The CPU-bound half of cleanup, runnable inline or in worker processes.

Parsing, XSD validation, field extraction, the sender-signature check and
signing the acceptance receipt depend only on the bytes and on read-only
state (directory, trust store, hub key).  ``Cleaner.inspect`` does all of it
and returns a picklable ``Inspected``; cleanup then does the parts that need
the spool (routes, status correlation, the commit).

With ``cpu_workers = N > 0`` envelopes up to ``POOL_MAX`` are inspected in
a pool of N processes, each of which loads the directory and keys once at
start (never per message): the event loop's process is bound to one core by
the GIL, and this is how the hub uses a second one.  Larger envelopes, and
all of them with 0 workers, are inspected in-process (inline, or in a thread
above ``BIG`` so the event loop stays live).
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from hub.edxml import envelope as edxml

from hub.edxml import xmlsafe
from hub.auth import Identity
from hub.directory import Directory
from hub.errors import ForbiddenError, ValidationError
from hub.crypto.keys import HubKeys, TrustStore
from hub.receipts.format import ReceiptFields, build_receipt, build_receipts
from hub.crypto.signing import verify_sender
from hub.cleanup.workers import WorkerPool
from hub.private import private_dir
from spool.payloads import SpooledBody

#: Envelopes above this size are parsed in a worker thread, not on the event loop.
#: Every step is linear in the bytes (hub.edxml.bounds refuses the trees that would
#: not be), so below it the worst an envelope can cost the loop is ~4 ms (16 KiB of
#: empty elements; a usual 10 KB document costs ~0.5 ms, the thread hop ~0.1 ms).
BIG = 16 * 1024
#: Envelopes up to this size go to the worker processes (when there are any):
#: above it, copying the bytes to a worker costs more than the second core saves
#: (measured: 10 KB +10–15 %, 100 KB −25 %, 1 MB −30 % of accept throughput).
POOL_MAX = 64 * 1024
#: Without workers, batches of more receipts than this are signed in a thread.
RECEIPTS_THREAD_AT = 8


@dataclasses.dataclass(slots=True)
class Inspected:
    """What cleanup learnt from the bytes alone, and the receipt it signed."""

    envelope: edxml.Envelope
    sha256: str
    signature: dict[str, Any]
    receipt: tuple[str, float, bytes]
    #: What the receipt states, for a business document's receipt signed again
    #: with its links once cleanup has found them.
    fields: ReceiptFields


@dataclasses.dataclass(frozen=True)
class Cleaner:
    max_size: int
    max_depth: int
    strict: bool
    default_policy: str
    directory: Directory
    trust: TrustStore
    keys: HubKeys
    bounds: xmlsafe.Limits = xmlsafe.Limits()
    fields: edxml.FieldLimits = edxml.FieldLimits()

    @classmethod
    def from_settings(cls, settings: Any, directory: Directory, keys: HubKeys,
                      trust: TrustStore) -> "Cleaner":
        return cls(settings.max_envelope_size, settings.max_xml_depth,
                   settings.organ_id_policy == "strict", settings.default_signature_policy,
                   directory, trust, keys, xmlsafe.Limits.from_settings(settings),
                   edxml.FieldLimits.from_settings(settings))

    def policy_of(self, organ_id: str) -> str:
        organ = self.directory.get(organ_id)
        return organ.signature_policy if organ and organ.signature_policy else self.default_policy

    def inspect(self, raw: bytes | SpooledBody, identity: Identity, message_id: str,
                at: float) -> Inspected:
        """Parse, validate, extract, check the sender and its signature, sign the receipt."""
        if isinstance(raw, SpooledBody):  # a large body, already on disk and hashed
            tree = xmlsafe.parse_file(raw.path, raw.size, max_size=self.max_size,
                                      max_depth=self.max_depth, limits=self.bounds)
        else:
            tree = xmlsafe.parse(raw, max_size=self.max_size, max_depth=self.max_depth,
                                 limits=self.bounds)
        xmlsafe.validate(tree)
        env = edxml.extract(tree, strict=self.strict, limits=self.fields)
        self.check_sender(env, identity)
        check = verify_sender(tree.getroot(), env.sender, self.trust, self.policy_of(env.sender))
        signature = {"result": check.result, "detail": check.detail, "signer": check.signer}
        sha256 = raw.sha256 if isinstance(raw, SpooledBody) else hashlib.sha256(raw).hexdigest()
        receipt_id = f"{message_id}.accepted"
        document_id = env.document_id or (env.response_for[0].document_id if env.response_for else sha256)
        fields = ReceiptFields(
            receipt_id=receipt_id, message_id=message_id, document_sha256=sha256,
            document_id=document_id, sender=env.sender, event="accepted", state="queued",
            time=datetime.fromtimestamp(at, timezone.utc), sender_signature=check.result,
            hub_id=self.directory.hub.id, business_status=env.status_code)
        xml = build_receipt(fields, self.keys)
        return Inspected(env, sha256, signature, (receipt_id, at, xml), fields)

    def check_sender(self, env: edxml.Envelope, identity: Identity) -> None:
        """The sender is the authenticated organisation, or one its route may speak for."""
        path = "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader/From/OrganId"
        if identity.role == "relay":
            assert identity.route is not None
            if not self.directory.may_speak_for(identity.route, env.sender):
                raise ForbiddenError(
                    f"envelope is from {env.sender}, for whom route {identity.route!r} may not "
                    f"speak (a route speaks for the organisations the directory lists on it)",
                    code="route_not_allowed",
                    details={"path": path, "from": env.sender, "route": identity.route})
        elif env.sender != identity.organ:
            raise ForbiddenError(
                f"envelope is from {env.sender} but you are {identity.organ}", code="sender_mismatch",
                details={"path": path, "from": env.sender, "authenticated": identity.organ})
        if not self.directory.knows(env.sender):
            raise ValidationError(f"sender {env.sender} is not in the directory",
                                  code="unknown_sender")


# -- in the worker processes (hub.workers) ------------------------------------------

_worker: Cleaner | None = None


def _init_worker(raw_settings: dict[str, Any], adapters: dict[str, dict[str, Any]]) -> None:
    global _worker
    from hub.config import build_settings
    from hub.crypto.setup import load_crypto
    from hub.directory import load_directory
    settings = build_settings(raw_settings, adapters)
    directory = load_directory(settings)
    keys, trust = load_crypto(settings, directory)
    _worker = Cleaner.from_settings(settings, directory, keys, trust)


def _sign_hop_in_worker(raw: bytes, now: datetime) -> bytes:
    assert _worker is not None, "worker not initialised"
    from hub.crypto.signing import sign_hop
    return sign_hop(raw, hub_id=_worker.directory.hub.id, keys=_worker.keys, now=now)


def _build_receipts_in_worker(fields: Sequence[ReceiptFields]) -> list[bytes]:
    assert _worker is not None, "worker not initialised"
    return build_receipts(fields, _worker.keys)


def _inspect_in_worker(raw: bytes, identity: Identity, message_id: str, at: float) -> Inspected:
    assert _worker is not None, "worker not initialised"
    return _worker.inspect(raw, identity, message_id, at)


class CpuPool:
    """Where ``Cleaner.inspect`` runs: inline, in a thread, or in worker processes."""

    def __init__(self, cleaner: Cleaner, settings: Any) -> None:
        self.cleaner = cleaner
        self.workers = settings.cpu_workers
        self._pool: WorkerPool | None = None
        if self.workers > 0:
            self._pool = WorkerPool(self.workers, _init_worker, (settings.raw(), settings.adapters),
                                    name="cleanup")

    async def start(self) -> None:
        """Spawn the workers now, so the first documents do not wait for one to load keys."""
        if self._pool is not None:
            await self._pool.start()

    async def inspect(self, raw: bytes | SpooledBody, identity: Identity, message_id: str,
                      at: float) -> Inspected:
        if self._pool is not None and len(raw) <= POOL_MAX:
            return await self._pool.call(_inspect_in_worker, raw, identity, message_id, at)
        if len(raw) > BIG:
            return await asyncio.to_thread(self.cleaner.inspect, raw, identity, message_id, at)
        return self.cleaner.inspect(raw, identity, message_id, at)

    async def sign_hop(self, raw: bytes, now: datetime) -> bytes:
        """The relay wire form (``hub.signing.sign_hop``), placed like ``inspect``."""
        from hub.crypto.signing import sign_hop
        c = self.cleaner
        if self._pool is not None and len(raw) <= POOL_MAX:
            return await self._pool.call(_sign_hop_in_worker, raw, now)
        if len(raw) > BIG:
            return await asyncio.to_thread(sign_hop, raw, hub_id=c.directory.hub.id, keys=c.keys,
                                           now=now)
        return sign_hop(raw, hub_id=c.directory.hub.id, keys=c.keys, now=now)

    async def sign_hop_file(self, src: Path, dst: Path, now: datetime) -> None:
        """``hub.signing.sign_hop_file`` for a payload file, in a thread."""
        from hub.crypto.signing import sign_hop_file
        c = self.cleaner
        await asyncio.to_thread(sign_hop_file, src, dst, hub_id=c.directory.hub.id, keys=c.keys,
                                now=now)

    async def wire_form(self, raw: bytes | Path, outgoing: Path, now: datetime) -> bytes | Path:
        """The bytes an adapter sends onwards: the original with the hub's
        TraceHeader and hop signature appended (the spool keeps the original).

        For a payload file (``DeliveryRequest.raw`` a ``Path``), the wire form
        is written to a new file under ``outgoing`` and its path returned: the
        caller sends it and removes it."""
        if not isinstance(raw, Path):
            return await self.sign_hop(raw, now)
        private_dir(outgoing)
        out = outgoing / f"{secrets.token_hex(12)}.part"
        try:
            await self.sign_hop_file(raw, out, now)
        except BaseException:
            out.unlink(missing_ok=True)
            raise
        return out

    async def build_receipts(self, fields: Sequence[ReceiptFields]) -> list[bytes]:
        """Sign a batch of receipts (``hub.receipts_xml.build_receipts``): in a
        worker when there are any (they hold the same key), else in a thread
        for more than ``RECEIPTS_THREAD_AT`` of them, else inline."""
        if self._pool is not None:
            return await self._pool.call(_build_receipts_in_worker, list(fields))
        if len(fields) > RECEIPTS_THREAD_AT:
            return await asyncio.to_thread(build_receipts, fields, self.cleaner.keys)
        return build_receipts(fields, self.cleaner.keys)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
