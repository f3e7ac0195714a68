"""The fake VXP platform's state and routing, without HTTP.

Used by ``hub.sim.vxp_platform``, which authenticates a request and then
calls one method here per operation.  Refusals are ``PlatformRefusal`` with
the ``ErrorCode`` the platform answers.

State: registered systems (id, secret, the OrganIds each speaks for);
documents by DocId (uuid4), holding the bytes as sent; and one delivery per
document and recipient system, whose status moves ``initial`` ->
``processing`` -> ``done`` | ``fail``.  A system's mailbox is its deliveries
not yet ``done`` or ``fail``, by message type, oldest first.

Routing (sendEdoc): the edXML is parsed without DTD, entities or network;
its ``MessageHeader/From/OrganId`` must be one of the sender's OrganIds (when
it has any), and equal the signed ``from`` when given.  Recipients are the
signed ``to`` list when given, else ``MessageHeader/To/OrganId``, else (status
messages carry none) ``ResponseFor/OrganId``.  Every recipient must belong to
a registered system, or nothing is delivered.  All recipients on one system
share one delivery: the system fetches the document once.

Codes: ``bad_request``, ``invalid_edxml``, ``from_not_allowed``,
``from_mismatch``, ``no_recipient``, ``unknown_recipient``, ``not_found``.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime

from lxml import etree

from hub.vxp.protocol import VN_TZ

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
_HEADER = f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLHeader/{{{NS}}}MessageHeader"
STATUS_DESC = {"initial": "Moi", "processing": "Dang xu ly", "done": "Da nhan", "fail": "Loi"}
MESSAGE_TYPES = ("edoc", "status")


class PlatformRefusal(Exception):
    """Raised when the platform refuses an operation; answered as FAIL with ``code``."""

    def __init__(self, code: str, desc: str) -> None:
        super().__init__(desc)
        self.code = code
        self.desc = desc


@dataclasses.dataclass(frozen=True, slots=True)
class System:
    system_id: str
    secret: str
    organs: frozenset[str] = frozenset()


@dataclasses.dataclass(slots=True)
class Document:
    doc_id: str
    sender: str              # system id
    messagetype: str
    data: bytes
    from_organ: str
    created: float
    document_id: str | None = None   # the edXML DocumentId, when it has one
    title: str = ""
    notation: str = ""


@dataclasses.dataclass(slots=True)
class Delivery:
    doc_id: str
    system_id: str
    organs: tuple[str, ...]
    created: float
    updated: float
    status: str = "initial"


@dataclasses.dataclass(slots=True)
class Counters:
    """What tests assert on; ``to_json`` is what ``GET /_control`` shows."""

    calls: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    auth_failures: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter)
    mac_failures: int = 0
    #: Mailbox insertions per DocId (one per recipient system).
    deliveries: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    #: Accepted sendEdoc calls per edXML DocumentId (or sha256 when it has none).
    sends: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    #: getEdoc/downloadEdoc answers per "system docId".
    fetches: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    status_updates: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter)
    faults_applied: collections.Counter[str] = dataclasses.field(
        default_factory=collections.Counter)
    tokens_issued: int = 0
    token_refusals: int = 0

    def to_json(self) -> dict[str, object]:
        return {f.name: (dict(v) if isinstance(v := getattr(self, f.name), collections.Counter)
                         else v) for f in dataclasses.fields(self)}


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                           huge_tree=False)


def _text(node: etree._Element | None) -> str:
    return (node.text or "").strip() if node is not None else ""


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, VN_TZ).isoformat(timespec="milliseconds")


@dataclasses.dataclass(frozen=True, slots=True)
class _Parsed:
    from_organ: str
    to_organs: tuple[str, ...]
    document_id: str | None
    title: str
    notation: str


def read_edxml(data: bytes) -> _Parsed:
    """The routing fields of an edXML document or status (PlatformRefusal if unreadable)."""
    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise PlatformRefusal("invalid_edxml", f"not well-formed XML: {exc}") from None
    header = root.find(_HEADER) if root.tag == f"{{{NS}}}edXML" else None
    if header is None:
        raise PlatformRefusal("invalid_edxml", "no edXML/edXMLEnvelope/edXMLHeader/MessageHeader")
    from_organ = _text(header.find(f"{{{NS}}}From/{{{NS}}}OrganId"))
    if not from_organ:
        raise PlatformRefusal("invalid_edxml", "no From/OrganId")
    to = [_text(n) for n in header.findall(f"{{{NS}}}To/{{{NS}}}OrganId")]
    if not to:
        to = [_text(n) for n in header.findall(f"{{{NS}}}ResponseFor/{{{NS}}}OrganId")]
    code = header.find(f"{{{NS}}}Code")
    notation = "/".join(t for t in (_text(code.find(f"{{{NS}}}CodeNumber")),
                                    _text(code.find(f"{{{NS}}}CodeNotation"))) if t) \
        if code is not None else ""
    return _Parsed(from_organ, tuple(t for t in to if t),
                   _text(header.find(f"{{{NS}}}DocumentId")) or None,
                   _text(header.find(f"{{{NS}}}Subject")), notation)


class PlatformState:
    """Everything the platform knows; one instance per fake platform."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.systems: dict[str, System] = {}
        self.agency_names: dict[str, str] = {}
        self.documents: dict[str, Document] = {}
        self.deliveries: dict[tuple[str, str], Delivery] = {}
        self.counters = Counters()

    # ---------------------------------------------------------------- systems

    def add_system(self, system_id: str, secret: str, organs: Iterable[str] = ()) -> System:
        system = System(system_id, secret, frozenset(organs))
        self.systems[system_id] = system
        return system

    def secret_for(self, system_id: str) -> str | None:
        system = self.systems.get(system_id)
        return system.secret if system is not None else None

    def system_of(self, organ: str) -> System | None:
        return next((s for s in self.systems.values() if organ in s.organs), None)

    # ---------------------------------------------------------------- documents

    def send(self, sender: str, messagetype: str, data: bytes, *, from_: str | None = None,
             to: list[str] | None = None) -> Document:
        """Store and route one document (see the module docstring); the stored Document."""
        if messagetype not in MESSAGE_TYPES:
            raise PlatformRefusal("bad_request", f"messagetype must be one of {MESSAGE_TYPES}")
        parsed = read_edxml(data)
        system = self.systems[sender]
        if system.organs and parsed.from_organ not in system.organs:
            raise PlatformRefusal("from_not_allowed",
                                  f"{sender} does not speak for {parsed.from_organ}")
        if from_ is not None and from_ != parsed.from_organ:
            raise PlatformRefusal("from_mismatch", "signed from differs from From/OrganId")
        recipients = list(dict.fromkeys(to if to is not None else parsed.to_organs))
        if not recipients:
            raise PlatformRefusal("no_recipient", "no To (or ResponseFor) OrganId")
        by_system: dict[str, list[str]] = {}
        for organ in recipients:
            target = self.system_of(organ)
            if target is None:
                raise PlatformRefusal("unknown_recipient", f"no system receives for {organ}")
            by_system.setdefault(target.system_id, []).append(organ)
        now = self.clock()
        doc = Document(str(uuid.uuid4()), sender, messagetype, data, parsed.from_organ, now,
                       parsed.document_id, parsed.title, parsed.notation)
        self.documents[doc.doc_id] = doc
        for system_id, organs in by_system.items():
            self.deliveries[(doc.doc_id, system_id)] = Delivery(doc.doc_id, system_id,
                                                                tuple(organs), now, now)
            self.counters.deliveries[doc.doc_id] += 1
        self.counters.sends[parsed.document_id or hashlib.sha256(data).hexdigest()] += 1
        return doc

    def inject(self, data: bytes, messagetype: str = "edoc", sender: str | None = None) -> str:
        """Route ``data`` as if a department had sent it: the sender is the system of its From."""
        if sender is None:
            from_system = self.system_of(read_edxml(data).from_organ)
            if from_system is None:
                # An outside department: a system of its own, unknown to everyone.
                sender = "_injected"
                self.systems.setdefault(sender, System(sender, uuid.uuid4().hex))
            else:
                sender = from_system.system_id
        return self.send(sender, messagetype, data).doc_id

    def mailbox(self, system_id: str, messagetype: str) -> list[Delivery]:
        return sorted((d for d in self.deliveries.values()
                       if d.system_id == system_id and d.status not in ("done", "fail")
                       and self.documents[d.doc_id].messagetype == messagetype),
                      key=lambda d: d.created)

    def fetch(self, system_id: str, doc_id: str) -> Document:
        """A document its recipient (or sender) may read; not_found otherwise."""
        doc = self.documents.get(doc_id)
        if doc is None or (doc.sender != system_id and (doc_id, system_id) not in self.deliveries):
            raise PlatformRefusal("not_found", "no such document for this system")
        self.counters.fetches[f"{system_id} {doc_id}"] += 1
        return doc

    def set_status(self, system_id: str, doc_id: str, status: str) -> None:
        if status not in ("done", "fail", "processing"):
            raise PlatformRefusal("bad_request", "status must be done, fail or processing")
        delivery = self.deliveries.get((doc_id, system_id))
        if delivery is None:
            raise PlatformRefusal("not_found", "no such document in this mailbox")
        delivery.status = status
        delivery.updated = self.clock()
        self.counters.status_updates[f"{system_id} {doc_id} {status}"] += 1

    # ---------------------------------------------------------------- answers' data

    def received_item(self, delivery: Delivery) -> dict[str, object]:
        doc = self.documents[delivery.doc_id]
        return {"docId": doc.doc_id, "serviceType": "eDoc", "messageType": doc.messagetype,
                "created_time": _stamp(delivery.created), "updated_time": _stamp(delivery.updated),
                "from": doc.from_organ, "to": ",".join(delivery.organs), "status": delivery.status,
                "status_desc": STATUS_DESC[delivery.status]}

    def sent_items(self, system_id: str, messagetype: str,
                   doc_id: str | None) -> list[dict[str, object]]:
        out: list[dict[str, object]] = []
        for d in self.deliveries.values():
            doc = self.documents[d.doc_id]
            if doc.sender != system_id or doc.messagetype != messagetype:
                continue
            if doc_id is not None and doc.doc_id != doc_id:
                continue
            for organ in d.organs:
                out.append({
                    "serviceType": "eDoc", "messageType": doc.messagetype,
                    "senderDocId": doc.doc_id, "receiverDocId": doc.doc_id,
                    "fromCode": doc.from_organ, "toCode": organ, "title": doc.title,
                    "notation": doc.notation, "sentTime": _stamp(doc.created),
                    "receivedTime": _stamp(d.updated), "sendStatus": "done",
                    "sendStatusDesc": "Da gui", "receiveStatus": d.status,
                    "receiveStatusDesc": STATUS_DESC[d.status]})
        return out

    def agencies(self) -> list[dict[str, object]]:
        organs = sorted({o for s in self.systems.values() for o in s.organs})
        return [{"id": str(i), "pid": "0", "code": o, "name": self.agency_names.get(o, o),
                 "mail": "", "oldCode": o.rsplit(".", 1)[-1], "code102": o}
                for i, o in enumerate(organs, 1)]

    def units(self) -> list[dict[str, object]]:
        now = _stamp(self.clock())
        return [{"id": a["id"], "pid": a["pid"], "code": a["code"], "name": a["name"],
                 "mail": a["mail"], "version": 1,
                 "centerCode": next(s.system_id for s in self.systems.values()
                                    if a["code"] in s.organs),
                 "deleted": False, "modifyDate": now, "isAgency": True}
                for a in self.agencies()]
