"""The one interface every adapter implements, both ways.

Egress, like Postfix's delivery agents: ``deliver(req)`` answers with one of
two outcomes, *final* (``delivered``, or ``refused`` for good) or *defer*
(try later, with a reason).  Temporary trouble may also be raised as
``TemporaryDeliveryError``; a permanent refusal as ``PermanentDeliveryError``.
Anything else an adapter raises counts as temporary.

Ingest: an adapter that receives or polls (a platform poller, a queue
consumer, a watched folder) sets ``ingests = True`` and implements
``ingest(port)``.  It gets a narrow port (``IngestPort``), not the hub: accept
raw bytes with the identity it vouches for (its own route, as a relay),
read and write its own cursor, the clock.  It confirms to its source only
after ``port.accept`` has returned, i.e. after the durable commit.  The hub
runs ``ingest`` supervised: restarted with a growing delay when it raises,
cancelled cleanly at shutdown.

Options are typed per class: ``Options`` is a frozen dataclass whose fields
are the keys of ``[adapters.<name>]`` (besides ``class``); ``parse_options``
checks them at start (an unknown key, a wrong type, a duration without a
unit: refused with a message that names the key), and ``lienthong conf``
shows them with their defaults.

Adapters are registered by entry point (group ``lienthong.adapters``) and run
as named instances; the instance name is the route name in the directory.
Hooks on the base class do nothing by default; a failing hook is logged and
never stops a delivery.
"""
from __future__ import annotations

import dataclasses
import enum
import typing
from pathlib import Path
from typing import Any, ClassVar, NewType, Protocol

from cryptography import x509

from hub.config import parse_duration
from hub.errors import ConfigError

#: An option holding a duration: written with a unit (``"5s"``, ``"2m"``), seconds in Python.
Duration = NewType("Duration", float)
#: An option holding a secret: never shown by ``lienthong conf``.
Secret = NewType("Secret", str)


class Verdict(str, enum.Enum):
    #: The destination has the document.
    DELIVERED = "delivered"
    #: The destination refused it for good; do not try again.
    REFUSED = "refused"
    #: Temporary trouble; try again after a backoff.
    DEFER = "defer"


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    verdict: Verdict
    reason: str = ""

    @classmethod
    def delivered(cls, reason: str = "") -> "Outcome":
        return cls(Verdict.DELIVERED, reason)

    @classmethod
    def refused(cls, reason: str) -> "Outcome":
        return cls(Verdict.REFUSED, reason)

    @classmethod
    def defer(cls, reason: str) -> "Outcome":
        return cls(Verdict.DEFER, reason)


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveryRequest:
    """One delivery: the document's original bytes and where they go."""

    message_id: str
    delivery_id: int
    sender: str
    recipient: str
    route: str
    kind: str
    #: The original bytes; above ``spool.payloads.LARGE`` the ``Path`` of the
    #: spool's payload file instead (read it, never change it).
    raw: bytes | Path
    attempt: int
    #: The sender's DocumentId (edoc), or the DocumentId a status answers.
    document_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Accepted:
    """What ``IngestPort.accept`` answers: the hub has the document, durably."""

    id: str
    #: False when the same document was already in the spool (taken as the same message).
    created: bool
    kind: str
    document_id: str | None


class EgressPort(Protocol):
    """What a delivering adapter may use of the hub."""

    def clock(self) -> float: ...

    async def wire_form(self, raw: bytes | Path) -> bytes | Path:
        """The original with the hub's TraceHeader and hop signature appended; for
        a payload file, a new file the caller sends and removes."""


class IngestPort(Protocol):
    """What an ingesting adapter may use of the hub: nothing more."""

    #: The route the adapter's documents arrive by (its instance name).
    route: str

    def clock(self) -> float: ...

    async def accept(self, raw: bytes | Path, *, origin: str = "") -> Accepted:
        """Take one envelope in as the route's relay identity; returns after the
        durable commit.  Refusals raise ``hub.errors.HubError`` (with ``code``)."""

    async def get_cursor(self, key: str) -> str | None: ...

    async def set_cursor(self, key: str, value: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class NoOptions:
    """An adapter that takes no options."""


class Adapter:
    """Base class: subclasses set ``pull``, implement ``deliver``, or ingest."""

    #: Pull-mode routes (the mailbox) are not dispatched: recipients fetch.
    pull: ClassVar[bool] = False
    #: Adapters that take documents in set this and implement ``ingest``.
    ingests: ClassVar[bool] = False
    #: Adapters that deliver (most): False for an ingest-only adapter.
    delivers: ClassVar[bool] = True
    #: The typed options of this class.
    Options: ClassVar[type] = NoOptions
    #: When set, documents arriving by this adapter's route (a relay bound to
    #: it) must carry a hop signature by this certificate (a peer hub's).
    hop_certificate: "x509.Certificate | None" = None
    #: The route leads to another interchange point (a peer hub, the provincial
    #: platform) that delivers to its own recipients.  What arrives *from* such
    #: a route is delivered here only to the recipients this hub serves: the
    #: others were sent their copy by the interchange that sent ours, and
    #: passing it on again would loop or deliver twice (split horizon).
    forwards: ClassVar[bool] = False

    def __init__(self, name: str, options: Any = None) -> None:
        self.name = name
        #: An instance of ``type(self).Options`` (typed per class, checked at start).
        self.options: Any = (options if dataclasses.is_dataclass(options)
                             else parse_options(type(self), name, dict(options or {})))
        self.port: EgressPort | None = None

    def bind(self, port: EgressPort) -> None:
        """Called by the hub before ``start``."""
        self.port = port

    async def start(self) -> None:
        """Open connections; called once when the hub starts."""

    async def stop(self) -> None:
        """Close connections; called once when the hub stops."""

    async def deliver(self, req: DeliveryRequest) -> Outcome:
        raise NotImplementedError

    async def ingest(self, port: IngestPort) -> None:
        """Receive or poll until cancelled; raising makes the hub restart it later."""
        raise NotImplementedError

    def health(self) -> dict[str, Any]:
        """Extra facts for ``GET /v1/adapters`` (last poll, platform errors, ...)."""
        return {}

    # hooks: do nothing unless overridden
    async def before_delivery(self, req: DeliveryRequest) -> None:
        """Called before each attempt."""

    async def after_delivery(self, req: DeliveryRequest, outcome: Outcome) -> None:
        """Called after each attempt with its outcome."""


# -- typed options --------------------------------------------------------------------

def _convert(name: str, key: str, kind: Any, value: Any) -> Any:
    where = f"[adapters.{name}] {key}"
    if kind is Duration:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: a duration needs a unit, e.g. \"{value}s\" (ms, s, m, h, d, w)",
                              details={"key": key})
        try:
            return parse_duration(value)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}", details={"key": key}) from None
    origin = typing.get_origin(kind)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None:
            return None
        return _convert(name, key, args[0], value)
    if origin in (list, tuple):
        (inner, *_) = typing.get_args(kind) or (str,)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: must be a list, not {value!r}", details={"key": key})
        return tuple(_convert(name, key, inner, v) for v in value) if origin is tuple else \
            [_convert(name, key, inner, v) for v in value]
    base = {Secret: str, Path: str}.get(kind, kind)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, base) or (base is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: must be {getattr(base, '__name__', base)}, not {value!r}",
                          details={"key": key})
    return Path(value) if kind is Path else value


def parse_options(cls: type[Adapter], name: str, raw: dict[str, Any]) -> Any:
    """``cls.Options`` from the keys of ``[adapters.<name>]``, checked."""
    opts = cls.Options
    hints = typing.get_type_hints(opts)
    fields = {f.name: f for f in dataclasses.fields(opts)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"[adapters.{name}] unknown key(s) {', '.join(unknown)} for class "
                          f"{cls.__name__} (known: {', '.join(sorted(fields)) or 'none'})",
                          details={"keys": unknown})
    values = {}
    for key, f in fields.items():
        if key in raw:
            values[key] = _convert(name, key, hints[key], raw[key])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"[adapters.{name}] needs {key}", details={"key": key})
    try:
        return opts(**values)
    except (TypeError, ValueError, ConfigError) as exc:
        raise ConfigError(f"[adapters.{name}]: {exc}") from None


def describe_options(cls: type[Adapter]) -> list[tuple[str, str, Any]]:
    """(key, type name, default) of each option of ``cls``, for ``lienthong conf``."""
    hints = typing.get_type_hints(cls.Options)
    out = []
    for f in dataclasses.fields(cls.Options):
        default = (f.default if f.default is not dataclasses.MISSING
                   else f.default_factory() if f.default_factory is not dataclasses.MISSING
                   else None)
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if args and len(args) == 1:  # Optional[X] shows as X
            kind = args[0]
        out.append((f.name, getattr(kind, "__name__", str(kind)), default))
    return out
