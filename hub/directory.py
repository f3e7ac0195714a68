"""The directory of organisations: who the hub knows, and where each one lives.

Where it sits in the pipeline:

- ``hub.cleanup`` asks it whether a sender is known (and which certificate and
  signature policy apply to it), and resolves every recipient of an accepted
  envelope to a :class:`Route` before the delivery rows are written;
- ``hub.qmgr`` and the delivery adapters use the route name stored on each
  delivery row to pick the adapter instance that carries it (``mailbox``,
  ``provincial``, ``peer.<slug>``...);
- ``lienthong directory list`` shows it, through :meth:`Directory.to_rows`.

The directory is read once from ``conf/directory.toml`` (one ``[[organ]]``
table per organisation; the file's header documents the fields) and never
changes while the hub runs.  Every entry is checked at load time, so a typo
stops the hub at start-up with the entry's index and id rather than
misrouting a document later.

Routing rule: a listed organisation goes to its own route; an organisation
that is not listed goes upstream (the provincial platform by default), which
knows the rest of the country.  The hub itself is never a recipient.
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.errors import ConfigError, ValidationError

if TYPE_CHECKING:
    from hub.config import Settings

__all__ = [
    "KINDS",
    "LOCAL_KINDS",
    "SIGNATURE_POLICIES",
    "Directory",
    "Organ",
    "Route",
    "Rule",
    "default_directory_path",
    "load_directory",
    "is_organ_id",
    "check_organ_id",
]

#: Kinds of the district's own units: the hub keeps their mailboxes.
LOCAL_KINDS = frozenset({
    "district_committee",
    "district_council",
    "commune",
    "office",
    "public_service_unit",
    "agency",
})

#: Every kind an entry may have.
KINDS = LOCAL_KINDS | frozenset({
    "hub",            # this hub itself; exactly one entry
    "province",       # UBND / HĐND tỉnh
    "department",     # provincial departments and department-level agencies
    "peer_district",  # another district's hub, reached directly
    "external",       # anything else listed explicitly
})

#: What cleanup does with a sender's XML-DSig signature.
SIGNATURE_POLICIES = frozenset({"required", "verify_if_present", "record_only"})

#: The route every local unit must use: the hub's own inbox.
MAILBOX_ROUTE = "mailbox"
#: The route reserved for the hub's own entry; nothing is delivered on it.
HUB_ROUTE = "hub"

# AAA.BB.CC.DDD: level 4, 3, 2 in digits, then the level-1 code (letter + 2
# digits).  \Z rather than $ so that a trailing newline is not accepted.
_ORGAN_ID = re.compile(r"\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}\Z", re.ASCII)
# Route names are adapter instance names: lower case, dotted (peer.yenbinh).
_ROUTE_NAME = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*\Z", re.ASCII)

_REQUIRED = ("id", "name", "kind", "route")
_OPTIONAL_STR = ("email", "address", "parent", "signature_policy", "cert", "ca")


#: What lenient mode routes: dotted alphanumeric groups (same rule as hub.edxml).
_LENIENT_ORGAN_ID = re.compile(r"^[0-9A-Za-z]+(\.[0-9A-Za-z]+){1,4}$")


def is_organ_id(value: object) -> bool:
    """True when *value* is an OrganId in the strict ``AAA.BB.CC.DDD`` form."""
    return isinstance(value, str) and _ORGAN_ID.match(value) is not None


def check_organ_id(value: object) -> str:
    """Return *value* if it is a well-formed OrganId; raise ValidationError if not."""
    if not is_organ_id(value):
        raise ValidationError(
            f"{value!r} is not an OrganId of the form AAA.BB.CC.DDD "
            "(e.g. 000.00.48.H63)",
            code="invalid_organ_id", details={"organ_id": value})
    return value  # type: ignore[return-value]  # narrowed by is_organ_id


@dataclass(frozen=True, slots=True)
class Organ:
    """One organisation of the directory, as written in ``directory.toml``."""

    id: str
    name: str
    kind: str
    route: str
    illustrative: bool = False
    email: str | None = None
    address: str | None = None
    parent: str | None = None
    signature_policy: str | None = None
    cert: str | None = None
    ca: str | None = None

    @property
    def is_local(self) -> bool:
        """True for the district's own units, whose mailboxes the hub keeps."""
        return self.kind in LOCAL_KINDS


@dataclass(frozen=True, slots=True)
class Rule:
    """A route for a whole code space: ``pattern`` is an OrganId whose groups
    may be ``*`` (``*.*.49.H63``: every unit of district 49 of Yên Bái)."""

    pattern: str
    route: str
    index: int
    #: The CA that issues the signing certificates of this code space's units
    #: (a peer district's, or the government CA): a signed document of a unit
    #: known only by this rule is verified against it.  Without it, against
    #: ``trust_ca_file`` if set; otherwise such a signature cannot be checked.
    ca: str | None = None

    @property
    def specificity(self) -> int:
        """Groups that are not wildcards: the more, the more specific."""
        return sum(1 for g in self.pattern.split(".") if g != "*")

    def matches(self, organ_id: str) -> bool:
        want, got = self.pattern.split("."), organ_id.split(".")
        return len(want) == len(got) and all(w in ("*", g) for w, g in zip(want, got))


_PATTERN = re.compile(r"(\*|\d{3})\.(\*|\d{2})\.(\*|\d{2})\.(\*|[A-Z]\d{2})\Z", re.ASCII)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one recipient goes: the route name and, if listed, its organ.

    ``known`` is False when the recipient is not in the directory and was sent
    upstream on trust; cleanup decides whether to accept that.  ``rule`` is
    the pattern rule that chose the route, when no entry did.
    """

    name: str
    organ: Organ | None
    known: bool
    rule: Rule | None = None

    def explain(self, organ_id: str) -> str:
        """Which rule matched, in words (``lienthong directory resolve``)."""
        if self.organ is not None:
            return f"{organ_id} -> {self.name}: its own entry ({self.organ.name})"
        if self.rule is not None:
            trust = f"; signatures checked against the CA {self.rule.ca}" if self.rule.ca else ""
            return (f"{organ_id} -> {self.name}: rule {self.rule.pattern!r} "
                    f"([[rule]] {self.rule.index}){trust}")
        return f"{organ_id} -> {self.name}: not in the directory, sent upstream"


class Directory:
    """The organisations the hub knows, indexed by OrganId.

    Build it with :meth:`load` (from a TOML file) or :meth:`from_organs`;
    both check every entry and raise :class:`~hub.errors.ConfigError`.
    """

    __slots__ = ("_organs", "_hub", "upstream_route", "rules")

    def __init__(self, organs: dict[str, Organ], hub: Organ,
                 upstream_route: str, rules: list[Rule] | None = None) -> None:
        # Private: use load() or from_organs(), which validate.
        self._organs = organs
        self._hub = hub
        self.upstream_route = upstream_route
        #: Pattern rules, most specific first (file order among equals).
        self.rules = sorted(rules or [], key=lambda r: (-r.specificity, r.index))

    # -- construction -------------------------------------------------------

    @classmethod
    def load(cls, path: Path, *, upstream_route: str = "provincial") -> Directory:
        """Read and check a directory file; relative cert/ca paths are taken
        from the file's folder."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_bytes().decode("utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the directory: {exc.strerror or exc}",
                              details={"path": str(path)}) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})",
                              details={"path": str(path)}) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}",
                              details={"path": str(path)}) from exc

        extra = sorted(set(data) - {"organ", "rule"})
        if extra:
            raise ConfigError(
                f"{path}: unknown top-level key(s) {', '.join(map(repr, extra))}; "
                "entries are [[organ]] and [[rule]] tables", details={"path": str(path)})
        rules = [_rule_from_entry(entry, index, path)
                 for index, entry in enumerate(data.get("rule", []), 1)]
        entries = data.get("organ", [])
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: 'organ' must be an array of tables ([[organ]])",
                              details={"path": str(path)})
        organs = [_organ_from_entry(entry, index, path)
                  for index, entry in enumerate(entries, 1)]
        return cls._build(organs, upstream_route, str(path), rules)

    @classmethod
    def from_organs(cls, organs: Iterable[Organ], *,
                    upstream_route: str = "provincial") -> Directory:
        """Build a directory from Organ objects (tests, tools), checked like a file."""
        organs = list(organs)
        for index, organ in enumerate(organs, 1):
            _check_organ(organ, _where("<organs>", index, organ.id))
        return cls._build(organs, upstream_route, "<organs>")

    @classmethod
    def _build(cls, organs: list[Organ], upstream_route: str,
               source: str, rules: list[Rule] | None = None) -> Directory:
        if not isinstance(upstream_route, str) or not _ROUTE_NAME.match(upstream_route) \
                or upstream_route == HUB_ROUTE:
            raise ConfigError(f"{source}: upstream route {upstream_route!r} is not "
                              "a usable route name")
        by_id: dict[str, Organ] = {}
        first_index: dict[str, int] = {}
        hubs: list[tuple[int, Organ]] = []
        for index, organ in enumerate(organs, 1):
            if organ.id in by_id:
                raise ConfigError(
                    f"{_where(source, index, organ.id)}: duplicate id, "
                    f"already used by entry {first_index[organ.id]} "
                    f"({by_id[organ.id].name!r})",
                    details={"path": source, "index": index, "id": organ.id})
            by_id[organ.id] = organ
            first_index[organ.id] = index
            if organ.kind == "hub":
                hubs.append((index, organ))
        if len(hubs) != 1:
            found = ", ".join(f"entry {i} ({o.id})" for i, o in hubs) or "none"
            raise ConfigError(
                f"{source}: exactly one entry must have kind 'hub', found {found}",
                details={"path": source})
        return cls(by_id, hubs[0][1], upstream_route, rules)

    # -- lookup -------------------------------------------------------------

    @property
    def hub(self) -> Organ:
        """The hub's own entry (its OrganId signs receipts and trace headers)."""
        return self._hub

    def get(self, organ_id: str) -> Organ | None:
        """The organ with this id, or None if it is not listed."""
        return self._organs.get(organ_id)

    def __contains__(self, organ_id: object) -> bool:
        return organ_id in self._organs

    def __iter__(self) -> Iterator[Organ]:
        return iter(self._organs.values())

    def __len__(self) -> int:
        return len(self._organs)

    def __repr__(self) -> str:
        return (f"<Directory {len(self)} organs, hub {self._hub.id}, "
                f"upstream {self.upstream_route!r}>")

    def local_units(self) -> Iterator[Organ]:
        """The district's own units (committee, council, communes, offices...)."""
        return (o for o in self._organs.values() if o.is_local)

    def by_kind(self, kind: str) -> list[Organ]:
        """The organs of one kind, in file order."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {sorted(KINDS)}")
        return [o for o in self._organs.values() if o.kind == kind]

    def resolve(self, organ_id: str, *, strict: bool = True) -> Route:
        """The route a document addressed to *organ_id* takes.

        ``strict=False`` (the hub's lenient ``organ_id_policy``) also routes the
        shorter dotted ids real producers send, such as ``28.22.H17``.
        Raises ValidationError (``invalid_organ_id``) for a malformed id and
        (``unroutable_recipient``) when the recipient is the hub itself: the
        hub relays documents, it is never their destination.
        """
        if strict or not _LENIENT_ORGAN_ID.match(organ_id):
            check_organ_id(organ_id)
        organ = self._organs.get(organ_id)
        if organ is None:
            rule = self.match_rule(organ_id)
            if rule is not None:
                return Route(rule.route, None, True, rule)
            return Route(self.upstream_route, None, False)
        if organ is self._hub:
            raise ValidationError(
                f"{organ_id} is this hub ({organ.name}); it cannot be a recipient",
                code="unroutable_recipient", details={"organ_id": organ_id})
        return Route(organ.route, organ, True)

    def match_rule(self, organ_id: str) -> Rule | None:
        """The most specific pattern rule matching ``organ_id`` (entries aside)."""
        return next((r for r in self.rules if r.matches(organ_id)), None)

    def knows(self, organ_id: str) -> bool:
        """Listed, or inside a code space a rule gives a route."""
        return organ_id in self._organs or self.match_rule(organ_id) is not None

    def may_speak_for(self, route: str, organ_id: str) -> bool:
        """May a relay arriving by ``route`` submit documents whose From is ``organ_id``?

        A route speaks for the organisations the directory routes to it: those
        listed on it (the provincial departments on ``provincial``, a peer
        district's units on its ``peer.<name>``) and, for an organisation not
        listed, the code space of the most specific rule that matches it.  The
        hub's own units and the hub itself never arrive by a relay."""
        if route in (MAILBOX_ROUTE, HUB_ROUTE):
            return False
        organ = self._organs.get(organ_id)
        if organ is not None:
            return organ.route == route
        rule = self.match_rule(organ_id)
        return rule is not None and rule.route == route

    def routes(self) -> set[str]:
        """Every route a delivery may take: one adapter instance is needed per name.

        The hub's own route is left out (nothing is delivered to the hub) and
        the upstream route is always in.
        """
        names = {o.route for o in self._organs.values() if o.kind != "hub"}
        names.update(r.route for r in self.rules)
        names.add(self.upstream_route)
        return names

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per organ, in file order, for ``lienthong directory list --json``."""
        rows = []
        for organ in self._organs.values():
            row = dataclasses.asdict(organ)
            row["local"] = organ.is_local
            rows.append(row)
        return rows


def _rule_from_entry(entry: Any, index: int, path: Path) -> Rule:
    where = f"{path}: [[rule]] {index}"
    if not isinstance(entry, dict) or not {"pattern", "route"} <= set(entry) <= {
            "pattern", "route", "ca"}:
        raise ConfigError(f"{where}: a rule has the keys pattern and route, and may have ca",
                          details={"path": str(path), "index": index})
    ca = entry.get("ca")
    if ca is not None:
        if not isinstance(ca, str) or not ca:
            raise ConfigError(f"{where}: ca must be the path of a PEM certificate",
                              details={"path": str(path), "index": index})
        ca = str(path.parent / ca)  # relative to the directory file, as an entry's
    pattern, route = entry["pattern"], entry["route"]
    if not isinstance(pattern, str) or not _PATTERN.match(pattern):
        raise ConfigError(f"{where}: pattern {pattern!r} must be an OrganId whose groups may be "
                          f"'*', e.g. '*.*.49.H63'", details={"path": str(path), "index": index})
    if not isinstance(route, str) or not _ROUTE_NAME.match(route) or route in (MAILBOX_ROUTE,
                                                                              HUB_ROUTE):
        raise ConfigError(f"{where}: route {route!r} is not a usable route for a rule (the "
                          f"district's own units are listed one by one)",
                          details={"path": str(path), "index": index})
    return Rule(pattern, route, index, ca)


def load_directory(settings: "Settings") -> Directory:
    """The directory the settings name, or the bundled one."""
    path = Path(settings.directory) if settings.directory else Path(str(default_directory_path()))
    return Directory.load(path, upstream_route=settings.upstream_route)


def default_directory_path() -> Path:
    """The directory shipped with the hub: ``conf/directory.toml``."""
    resource = files("conf") / "directory.toml"
    if not isinstance(resource, Path):
        # Installed inside a zip: the file has no path of its own.
        raise ConfigError(f"the bundled directory {resource} is not a file on disk; "
                          "give the directory's path explicitly")
    return resource


# -- checks -------------------------------------------------------------------


def _where(source: str, index: int, organ_id: object) -> str:
    return f"{source}: organ entry {index} (id {organ_id!r})"


def _organ_from_entry(entry: object, index: int, path: Path) -> Organ:
    """Turn one ``[[organ]]`` table into an Organ, or say what is wrong with it."""
    source = str(path)
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: organ entry {index} is not a table",
                          details={"path": source, "index": index})
    where = _where(source, index, entry.get("id"))

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"{where}: {problem}",
                           details={"path": source, "index": index, "id": entry.get("id")})

    known = set(_REQUIRED) | set(_OPTIONAL_STR) | {"illustrative"}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise fail(f"unknown field(s) {', '.join(map(repr, unknown))}; "
                   f"known fields are {', '.join(sorted(known))}")
    missing = [name for name in _REQUIRED if name not in entry]
    if missing:
        raise fail(f"missing required field(s) {', '.join(map(repr, missing))}")
    for name in (*_REQUIRED, *_OPTIONAL_STR):
        if name in entry and not isinstance(entry[name], str):
            raise fail(f"field {name!r} must be a string, not {type(entry[name]).__name__}")
    illustrative = entry.get("illustrative", False)
    if not isinstance(illustrative, bool):
        raise fail("field 'illustrative' must be true or false")

    fields: dict[str, Any] = {name: entry[name] for name in (*_REQUIRED, *_OPTIONAL_STR)
                              if name in entry}
    # Certificates are named relative to the directory file, wherever the hub runs.
    for name in ("cert", "ca"):
        if fields.get(name):
            fields[name] = str(path.parent / fields[name])
    organ = Organ(illustrative=illustrative, **fields)
    _check_organ(organ, where, details={"path": source, "index": index})
    return organ


def _check_organ(organ: Organ, where: str,
                 details: dict[str, Any] | None = None) -> None:
    """The rules every entry obeys, whether it came from a file or from code."""

    def fail(problem: str) -> ConfigError:
        return ConfigError(f"{where}: {problem}",
                           details={**(details or {}), "id": organ.id})

    if not is_organ_id(organ.id):
        raise fail("id is not an OrganId of the form AAA.BB.CC.DDD "
                   "(three digits, two, two, a capital letter and two digits)")
    if not isinstance(organ.name, str) or not organ.name.strip():
        raise fail("name is empty")
    if organ.kind not in KINDS:
        raise fail(f"unknown kind {organ.kind!r}; expected one of "
                   f"{', '.join(sorted(KINDS))}")
    if not isinstance(organ.route, str) or not organ.route:
        raise fail("route is empty")
    if not _ROUTE_NAME.match(organ.route):
        raise fail(f"route {organ.route!r} is not a route name "
                   "(lower case letters, digits, '-', '_', dotted: e.g. peer.yenbinh)")
    if organ.is_local and organ.route != MAILBOX_ROUTE:
        raise fail(f"a local unit (kind {organ.kind!r}) must use route "
                   f"{MAILBOX_ROUTE!r}, not {organ.route!r}")
    if (organ.kind == "hub") != (organ.route == HUB_ROUTE):
        raise fail(f"route {HUB_ROUTE!r} is reserved for, and required of, "
                   "the entry of kind 'hub'")
    if not isinstance(organ.illustrative, bool):
        raise fail("illustrative must be true or false")
    if organ.parent is not None:
        if not is_organ_id(organ.parent):
            raise fail(f"parent {organ.parent!r} is not an OrganId")
        if organ.parent == organ.id:
            raise fail("an organ cannot be its own parent")
    if organ.signature_policy is not None \
            and organ.signature_policy not in SIGNATURE_POLICIES:
        raise fail(f"unknown signature_policy {organ.signature_policy!r}; expected "
                   f"one of {', '.join(sorted(SIGNATURE_POLICIES))}")
