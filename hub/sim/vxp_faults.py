"""Failure injection and OAuth2 tokens of the fake VXP platform.

Used by ``hub.sim.vxp_platform``; no HTTP here.  A ``Fault`` applies to the
next ``count`` calls (``None``: until cleared) of one operation (``None``:
any operation, the token endpoint excluded).  Each call takes at most one
fault, the first that matches.  Kinds:

``timeout``         hang ``delay`` seconds (longer than the client's timeout)
``http_error``      answer HTTP ``status`` (default 503) with a non-JSON body
``fail``            answer ``status: FAIL`` with ``error_code``
``not_json``        answer 200 with a body that is not JSON
``duplicate_list``  list answers carry every item twice
``slow``            add ``delay`` seconds of latency, then answer normally

With ``after: true`` the operation takes effect first and only its answer
is lost or spoiled, as when a platform commits and then the connection
drops: what a retrying client must survive without delivering twice.
Tokens are expired all at once with ``TokenStore.expire_all``.
"""
from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Mapping
from typing import Final

KINDS: Final = ("timeout", "http_error", "fail", "not_json", "duplicate_list", "slow")


@dataclasses.dataclass(slots=True)
class Fault:
    kind: str
    operation: str | None = None
    count: int | None = 1
    status: int = 503
    error_code: str = "internal_error"
    delay: float = 30.0
    after: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1 (or null: until cleared)")
        if self.kind == "http_error" and not 400 <= self.status <= 599:
            raise ValueError("http_error status must be 4xx or 5xx")
        if self.delay < 0:
            raise ValueError("delay must not be negative")

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> Fault:
        """A fault from ``POST /_control`` JSON (ValueError if malformed)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(obj) - known - {"action"}
        if unknown:
            raise ValueError(f"unknown fault fields {sorted(unknown)}")
        kw = {k: v for k, v in obj.items() if k in known}
        try:
            return cls(**kw)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class Faults:
    """The queue of armed faults."""

    def __init__(self) -> None:
        self._armed: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        self._armed.append(fault)
        return fault

    def clear(self) -> None:
        self._armed.clear()

    def take(self, operation: str) -> Fault | None:
        """The fault this call suffers, if any, counting it down."""
        for fault in self._armed:
            if fault.operation in (None, operation):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count == 0:
                        self._armed.remove(fault)
                return fault
        return None

    def to_json(self) -> list[dict[str, object]]:
        return [f.to_json() for f in self._armed]


class TokenStore:
    """Client-credentials tokens of the gateway: issued for ``lifetime`` seconds."""

    def __init__(self, clients: Mapping[str, str], lifetime: float,
                 clock: Callable[[], float]) -> None:
        self.clients = dict(clients)
        self.lifetime = lifetime
        self._clock = clock
        self._expiry: dict[str, float] = {}

    def issue(self, client_id: str, client_secret: str) -> str | None:
        """A new token, or None when the credentials are wrong."""
        known = self.clients.get(client_id)
        if known is None or not secrets.compare_digest(known.encode(), client_secret.encode()):
            return None
        token = secrets.token_urlsafe(24)
        self._expiry[token] = self._clock() + self.lifetime
        return token

    def valid(self, token: str) -> bool:
        expiry = self._expiry.get(token)
        if expiry is None:
            return False
        if self._clock() >= expiry:
            del self._expiry[token]
            return False
        return True

    def expire_all(self) -> None:
        self._expiry.clear()
