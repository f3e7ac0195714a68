"""The SDKVXP wire protocol as pure functions: the bottom of ``hub.vxp``.

Both ends use this module: ``hub.vxp.client`` signs what it sends with
``sign_headers``, and a server (``hub.sim.vxp_platform``, or a future hub
ingress) checks what it receives with ``verify_request``.  Nothing here does
I/O or reads a clock; time comes in as an argument.

Signing (spec section 3): every logical header ``NAME`` goes on the wire as
``XroadVnpt-NAME``; the names, in ``java.util.HashMap`` iteration order, are
listed in ``XroadVnpt-sign-header-key``; ``XroadVnpt-sign-header`` is a
Gson-style compact JSON object of the prefixed names and values; and
``XroadVnpt-hash-header`` is the lowercase hex HMAC-SHA256 of that JSON text,
keyed with the UTF-8 bytes of the secret string as is.

Verification (spec section 3.2) raises ``VxpAuthError`` with one of these
stable codes (callers switch on them; the fake platform answers them as its
``ErrorCode``):

``missing_header``
    ``XroadVnpt-sign-header``, ``-sign-header-key`` or ``-hash-header`` is
    absent, a signed member has no header of its name, ``systemid`` or
    ``timestamp`` is not signed, or a body is given and ``hash-file`` is not
    signed.
``duplicate_header``
    One of the three control headers occurs more than once.
``bad_sign_header``
    The sign-header is not a JSON object of string members all named
    ``XroadVnpt-...``, repeats a member, or its member names differ from
    ``sign-header-key`` (names or order).
``unknown_system``
    No secret is known for the signed ``systemid``.
``bad_mac``
    ``XroadVnpt-hash-header`` is not the HMAC of the received sign-header.
``header_mismatch``
    A header on the wire differs from the value signed for it.
``bad_timestamp``
    The signed ``timestamp`` is not ``ddMMyyyy'T'HHmmss+SSSS``.
``stale_timestamp``
    The timestamp is older than ``max_age``.
``future_timestamp``
    The timestamp is more than ``max_future`` ahead of ``now``.
``hash_file_mismatch``
    The body (with or without its final CRLF) does not hash to ``hash-file``.

The order of checks matters for what an unauthenticated caller can learn:
the MAC is checked right after the secret is found, before any signed value
is compared or interpreted.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Final, Protocol

from hub.errors import AuthError
from hub.vxp.java import gson_string, hashmap_order, java_string_hash

PREFIX: Final = "XroadVnpt-"
SIGN_HEADER_KEY: Final = PREFIX + "sign-header-key"
SIGN_HEADER: Final = PREFIX + "sign-header"
HASH_HEADER: Final = PREFIX + "hash-header"
USER_AGENT: Final = "JAVASDKAgent/1.0.0 XRoad/VPCP"
VERSION: Final = "3.0.201608"
#: Real clients run in the JVM's zone, Asia/Ho_Chi_Minh; the timestamp has none.
VN_TZ: Final = timezone(timedelta(hours=7))

__all__ = [
    "HASH_HEADER",
    "OPERATIONS",
    "PREFIX",
    "SIGN_HEADER",
    "SIGN_HEADER_KEY",
    "USER_AGENT",
    "VERSION",
    "VN_TZ",
    "FileHasher",
    "Operation",
    "Signature",
    "VerifiedRequest",
    "VxpAuthError",
    "answer",
    "format_timestamp",
    "gson_string",
    "hash_file",
    "hashmap_order",
    "java_string_hash",
    "mac",
    "parse_timestamp",
    "sign",
    "sign_headers",
    "unpadded_hex",
    "verify_request",
]


# ---------------------------------------------------------------- hash-file

def unpadded_hex(digest: bytes) -> str:
    """Hex of ``digest`` without zero-padding each byte (``0x0a`` -> ``a``), as the SDK writes it."""
    return "".join(f"{b:x}" for b in digest)


def hash_file(data: bytes) -> str:
    """The ``hash-file`` header of a file: unpadded hex of its SHA-256."""
    return unpadded_hex(hashlib.sha256(data).digest())


class _Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


class FileHasher:
    """``hash-file`` computed incrementally, for files read in chunks.

    ``FileHasher()`` starts a SHA-256; pass an existing hashlib object (fed or
    not) to reuse one: ``FileHasher(hashlib.sha256(head)).update(rest).value()``.
    """

    def __init__(self, digest: _Digest | None = None) -> None:
        self._digest: _Digest = digest if digest is not None else hashlib.sha256()

    def update(self, data: bytes) -> FileHasher:
        self._digest.update(data)
        return self

    def value(self) -> str:
        return unpadded_hex(self._digest.digest())


# ---------------------------------------------------------------- timestamps

_TIMESTAMP: Final = re.compile(r"(\d{2})(\d{2})(\d{4})T(\d{2})(\d{2})(\d{2})\+(\d{4})\Z")


def format_timestamp(dt: datetime, tz: timezone = VN_TZ) -> str:
    """``dt`` as ``ddMMyyyy'T'HHmmss+SSSS`` (``SSSS``: milliseconds padded to 4).

    An aware ``dt`` is first converted to ``tz``; a naive one is taken as is.
    """
    if dt.tzinfo is not None:
        dt = dt.astimezone(tz)
    return (f"{dt.day:02d}{dt.month:02d}{dt.year:04d}T"
            f"{dt.hour:02d}{dt.minute:02d}{dt.second:02d}+{dt.microsecond // 1000:04d}")


def parse_timestamp(s: str, tz: timezone = VN_TZ) -> datetime:
    """The aware datetime of an SDK timestamp read in ``tz``; ValueError if malformed."""
    m = _TIMESTAMP.match(s)
    if m is None:
        raise ValueError(f"not a ddMMyyyy'T'HHmmss+SSSS timestamp: {s!r}")
    day, month, year, hour, minute, second, millis = (int(g) for g in m.groups())
    if millis > 999:
        raise ValueError(f"millisecond field over 999: {s!r}")
    return datetime(year, month, day, hour, minute, second, millis * 1000, tzinfo=tz)


# ---------------------------------------------------------------- signing

@dataclasses.dataclass(frozen=True, slots=True)
class Signature:
    """The three signing headers' values for one set of logical headers."""

    names: tuple[str, ...]        # HashMap order
    values: Mapping[str, str]     # logical name -> value
    sign_header_key: str
    sign_header: str
    mac: str


def mac(secret: str, sign_header: str) -> str:
    """Lowercase hex HMAC-SHA256 of a sign-header string, keyed by the secret as is."""
    return hmac.new(secret.encode("utf-8"), sign_header.encode("utf-8"), hashlib.sha256).hexdigest()


def sign(pairs: Iterable[tuple[str, str]], secret: str) -> Signature:
    """Sign logical headers given in the SDK's insertion order (a later value replaces an earlier)."""
    values: dict[str, str] = {}
    for name, value in pairs:
        values[name] = value
    names = tuple(hashmap_order(values))
    sign_header = "{" + ",".join(gson_string(PREFIX + n) + ":" + gson_string(values[n])
                                 for n in names) + "}"
    return Signature(names, MappingProxyType(values), ";".join(names), sign_header,
                     mac(secret, sign_header))


def sign_headers(pairs: Iterable[tuple[str, str]], secret: str) -> dict[str, str]:
    """The full header dict the SDK puts on the wire for these logical headers.

    ``pairs`` are in insertion order: timestamp, systemid, Content-Type, the
    caller's JSON keys, then hash-file.  The bare ``Content-Type`` is the
    logical one's value; HTTP-library headers (Host, Content-Length...) are
    the transport's business.
    """
    sig = sign(pairs, secret)
    headers = {PREFIX + n: sig.values[n] for n in sig.names}
    if "Content-Type" in sig.values:
        headers["Content-Type"] = sig.values["Content-Type"]
    headers[SIGN_HEADER_KEY] = sig.sign_header_key
    headers[SIGN_HEADER] = sig.sign_header
    headers[HASH_HEADER] = sig.mac
    headers["User-Agent"] = USER_AGENT
    headers[PREFIX + "version"] = VERSION
    return headers


# ---------------------------------------------------------------- operations

@dataclasses.dataclass(frozen=True, slots=True)
class Operation:
    """How the SDK sends one call (spec section 1)."""

    name: str          # the path under the endpoint
    method: str        # "POST" or "GET"
    content_type: str  # both the bare and the signed Content-Type
    body: str          # "file" (raw bytes + CRLF), "empty" (0 bytes), "braces" (``{}``), "none"

    @property
    def expect_continue(self) -> bool:
        """Apache sends ``Expect: 100-continue`` with every non-empty body."""
        return self.body == "braces"


_JSON: Final = "application/json"
OPERATIONS: Final[Mapping[str, Operation]] = MappingProxyType({op.name: op for op in (
    Operation("sendEdoc", "POST", "application/octet-stream", "file"),
    Operation("getReceivedEdocList", "POST", _JSON, "empty"),
    Operation("getEdoc", "POST", _JSON, "braces"),
    Operation("updateStatus", "POST", _JSON, "braces"),
    Operation("getSentEdocList", "POST", _JSON, "empty"),
    Operation("getAgenciesList", "POST", _JSON, "empty"),
    Operation("getAgenciesListQD20", "POST", _JSON, "empty"),
    Operation("getSynchronizeUnit", "POST", _JSON, "empty"),
    Operation("deleteAgency", "POST", _JSON, "braces"),
    Operation("countReceiveEdoc", "POST", _JSON, "braces"),
    Operation("countReceiveStatus", "POST", _JSON, "braces"),
    Operation("downloadEdoc", "GET", _JSON, "none"),
)})


# ---------------------------------------------------------------- answers

def answer(status: str = "OK", code: str = "0", desc: str = "", *,
           ascii_only: bool = False, **fields: object) -> bytes:
    """A response body the SDK can parse: ``status``, ``ErrorCode``, ``ErrorDesc``, then ``fields``.

    ``ascii_only`` escapes non-ASCII as ``\\uXXXX``: the SDK reads the sendEdoc
    answer as US-ASCII.
    """
    reserved = {"status", "ErrorCode", "ErrorDesc"} & fields.keys()
    if reserved:
        raise TypeError(f"answer() fields may not override {sorted(reserved)}")
    body = {"status": status, "ErrorCode": code, "ErrorDesc": desc, **fields}
    return json.dumps(body, ensure_ascii=ascii_only, separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------- verification

class VxpAuthError(AuthError):
    """Raised when a request's SDK signature headers do not verify (``code``: see module doc)."""

    code = "vxp_auth"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.code, self.message))


@dataclasses.dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """What a verified request proves: who signed, when, and the signed values."""

    system_id: str
    timestamp: datetime
    #: Logical names (no prefix, case as signed: ``docId`` vs ``docid``) -> values, signed order.
    headers: Mapping[str, str]
    #: sendEdoc: the file the body carried (its final CRLF removed when the hash says so).
    file: bytes | None = None

    def get(self, name: str, default: str | None = None) -> str | None:
        """A signed value by logical name, exact spelling first, then case-insensitively."""
        if name in self.headers:
            return self.headers[name]
        lowered = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lowered:
                return value
        return default

    @property
    def doc_id(self) -> str | None:
        """The signed ``docId``, whichever spelling the caller used (``docId``, ``docid``)."""
        return self.get("docId")


def _received(headers: Mapping[str, str]) -> dict[str, list[str]]:
    # A multidict's items() yields every occurrence; a plain dict may hold
    # two spellings of one name.  Both end up as several values of one name.
    out: dict[str, list[str]] = {}
    for name, value in headers.items():
        out.setdefault(name.lower(), []).append(value)
    return out


def _one(received: dict[str, list[str]], name: str) -> str:
    values = received.get(name.lower())
    if not values:
        raise VxpAuthError("missing_header", f"no {name} header")
    if len(values) > 1:
        raise VxpAuthError("duplicate_header", f"{name} occurs {len(values)} times")
    return values[0]


def _signed_members(sign_header: str, sign_header_key: str) -> dict[str, str]:
    def pairs_hook(pairs: list[tuple[str, object]]) -> dict[str, object]:
        names = [n for n, _ in pairs]
        if len(set(names)) != len(names):
            raise VxpAuthError("bad_sign_header", "sign-header repeats a member")
        return dict(pairs)
    try:
        parsed: object = json.loads(sign_header, object_pairs_hook=pairs_hook)
    except ValueError as exc:
        raise VxpAuthError("bad_sign_header", f"sign-header is not JSON: {exc}") from None
    if not isinstance(parsed, dict) or not parsed:
        raise VxpAuthError("bad_sign_header", "sign-header is not a non-empty JSON object")
    members: dict[str, str] = {}
    for member, value in parsed.items():
        if not member.startswith(PREFIX) or not isinstance(value, str):
            raise VxpAuthError("bad_sign_header", f"sign-header member {member!r} is not a "
                               f"{PREFIX}NAME string")
        members[member[len(PREFIX):]] = value
    if ";".join(members) != sign_header_key:
        raise VxpAuthError("bad_sign_header", "sign-header members differ from sign-header-key")
    return members


def _epoch(t: float | datetime) -> float:
    return t.timestamp() if isinstance(t, datetime) else float(t)


def verify_request(headers: Mapping[str, str], secret_for: Callable[[str], str | None], *,
                   now: float | datetime, max_age: float, max_future: float = 300.0,
                   body: bytes | None = None, tz: timezone = VN_TZ) -> VerifiedRequest:
    """Check an SDK request's signature headers (spec 3.2); raise ``VxpAuthError`` if they fail.

    ``headers`` are the received HTTP headers (any mapping; names compared
    case-insensitively).  ``secret_for(system_id)`` gives a system's secret
    or None.  ``now`` is epoch seconds or an aware datetime; ``max_age`` and
    ``max_future`` are seconds.  Java clients freeze their timestamp when
    their service object is built, so ``max_age`` should allow hours.  Pass
    ``body`` for sendEdoc only: ``hash-file`` must then be signed and match it.
    """
    received = _received(headers)
    sign_header = _one(received, SIGN_HEADER)
    sign_header_key = _one(received, SIGN_HEADER_KEY)
    given_mac = _one(received, HASH_HEADER)
    members = _signed_members(sign_header, sign_header_key)
    for required in ("systemid", "timestamp"):
        if required not in members:
            raise VxpAuthError("missing_header", f"{PREFIX}{required} is not signed")
    system_id = members["systemid"]
    secret = secret_for(system_id)
    if secret is None:
        raise VxpAuthError("unknown_system", f"unknown system {system_id!r}")
    # aiohttp decodes header bytes as UTF-8 with surrogateescape: undo that to
    # MAC the bytes that were actually sent.
    expected = hmac.new(secret.encode("utf-8"), sign_header.encode("utf-8", "surrogateescape"),
                        hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode("ascii"),
                               given_mac.strip().lower().encode("utf-8", "surrogateescape")):
        raise VxpAuthError("bad_mac", "hash-header is not the MAC of sign-header")

    signed_by_name: dict[str, set[str]] = {}
    for name, value in members.items():
        signed_by_name.setdefault((PREFIX + name).lower(), set()).add(value)
    for lowered, values in signed_by_name.items():
        on_wire = received.get(lowered)
        if not on_wire:
            raise VxpAuthError("missing_header", f"signed header {lowered} is not on the wire")
        if set(on_wire) != values:
            raise VxpAuthError("header_mismatch", f"{lowered} differs from its signed value")

    try:
        stamp = parse_timestamp(members["timestamp"], tz)
    except ValueError as exc:
        raise VxpAuthError("bad_timestamp", str(exc)) from None
    age = _epoch(now) - stamp.timestamp()
    if age > max_age:
        raise VxpAuthError("stale_timestamp", f"timestamp is {age:.0f}s old (max {max_age:.0f}s)")
    if -age > max_future:
        raise VxpAuthError("future_timestamp", f"timestamp is {-age:.0f}s ahead")

    file = None
    if body is not None:
        file = _check_hash_file(members, body)
    return VerifiedRequest(system_id, stamp, MappingProxyType(members), file)


def _check_hash_file(members: Mapping[str, str], body: bytes) -> bytes:
    signed = members.get("hash-file")
    if signed is None:
        raise VxpAuthError("missing_header", f"{PREFIX}hash-file is not signed")
    signed = signed.strip().lower()
    # The SDK appends CRLF to the file; a client that does not is accepted too.
    candidates = [body[:-2], body] if body.endswith(b"\r\n") else [body]
    for file in candidates:
        if hmac.compare_digest(hash_file(file).encode("ascii"), signed.encode("utf-8", "replace")):
            return file
    raise VxpAuthError("hash_file_mismatch", "body does not hash to hash-file")
