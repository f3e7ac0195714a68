"""The audit chain itself: signed checkpoints and verification, no server.

Where it sits: ``hub.audit`` (the running hub's side: events for key and
directory changes, scheduled checkpoints, the HTTP routes) and
``lienthong audit verify`` (offline, on an export or a copy of the
database) both use this module; it needs neither aiohttp nor a spool.
The formats and the verification rules are described in ``hub.audit``.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

from cryptography import x509
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier

from hub.errors import ValidationError
from hub.crypto.keys import HubKeys, fingerprint
from hub.receipts.format import format_time
from hub.crypto.dsig import DS, DS_SIGNATURE, sign_enveloped
from hub.crypto.signing import parse_xml
from spool.records import Event
from spool.chain import GENESIS_HASH, event_hash

CNS = "urn:lienthong-hub:checkpoint:1"
_VERIFY_CONFIG = SignatureConfiguration(location="./", expect_references=1)
_X509 = f"{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate"


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
        result = XMLVerifier().verify(root, x509_cert=cert, expect_config=config)
        # One signature expected (expect_references=1): signxml gives one result, not a list.
        signed = result.signed_xml if not isinstance(result, list) else None
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
