"""Who is calling: bearer tokens per organisation and role.

A token is ``lt1.<payload>.<mac>``: the payload (base64url JSON: organ, role,
issued, expires) is authenticated with HMAC-SHA256 under the hub's token
secret (``data_dir/secrets/token.key``, created on first use, mode 0600).
Tokens are verified without a database read; changing the secret revokes
them all.  The organ must be in the directory.

Roles: ``agency`` (its own documents, inbox and receipts only),
``relay`` (a peer hub or a platform, bound to a route: it submits documents
and statuses whose From is an organisation that route may speak for, see
``Directory.may_speak_for``), ``operator`` (queue and live tail),
``auditor`` (read-only: receipts, audit), ``admin`` (everything).
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path

from hub.errors import AuthError, ConfigError, ForbiddenError
from hub.private import private_dir

ROLES = ("agency", "relay", "operator", "auditor", "admin")


@dataclasses.dataclass(frozen=True, slots=True)
class Identity:
    organ: str
    role: str
    #: For ``relay``: the route it arrives by, whose organisations it speaks for.
    route: str | None = None

    @classmethod
    def relay(cls, route: str, organ: str = "") -> "Identity":
        """The identity an ingest adapter vouches for: its own route."""
        return cls(organ or f"route:{route}", "relay", route)

    def require(self, *roles: str) -> None:
        if self.role != "admin" and self.role not in roles:
            raise ForbiddenError(f"the {self.role} role may not do this (needs {' or '.join(roles)})")

    def may_see(self, *organs: str | None) -> bool:
        return self.role != "agency" or self.organ in organs


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_secret(data_dir: Path, *, create: bool = True) -> bytes:
    """The token secret, created on first use (only by the hub and ``lienthong token``:
    a client pointed at the wrong ``--data`` must fail, not invent a secret)."""
    path = data_dir / "secrets" / "token.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if not create:
            raise ConfigError(f"no token secret at {path}: is {data_dir} the data directory of "
                              f"the hub you are talking to (--data)?") from None
    private_dir(path.parent)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_bytes(32))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # first writer wins if two processes race
    except FileExistsError:
        pass
    os.unlink(tmp)
    return path.read_bytes()


_VERIFIED_MAX = 10_000
#: What every refused token's message ends with.
_NEW_TOKEN = "get a new one from the hub's operator (`lienthong token ORGANID`)"


class TokenAuthority:
    def __init__(self, secret: bytes, known_organ=None) -> None:  # type: ignore[no-untyped-def]
        self._secret = secret
        self._known = known_organ or (lambda organ: True)
        #: Claims of tokens whose MAC already checked out (only those: junk
        #: cannot fill it).  Expiry and the directory are still checked on
        #: every request; the HMAC and JSON are not redone.
        self._verified: dict[str, tuple[str, str, float, str | None]] = {}

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, organ: str, role: str = "agency", lifetime: float = 365 * 86400,
              now: float | None = None, route: str | None = None) -> str:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if (role == "relay") != (route is not None):
            raise ValueError("a relay token needs a route (--route), and only a relay token has one")
        issued = int(time.time() if now is None else now)
        claims: dict[str, object] = {"o": organ, "r": role, "iat": issued,
                                     "exp": issued + int(lifetime)}
        if route is not None:
            claims["rt"] = route
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        return f"lt1.{payload}.{self._mac(payload)}"

    def verify(self, token: str, now: float | None = None) -> Identity:
        known = self._verified.get(token)
        if known is None:
            known = self._claims(token)
            if len(self._verified) >= _VERIFIED_MAX:
                self._verified.clear()
            self._verified[token] = known
        organ, role, expires, route = known
        if expires < (time.time() if now is None else now):
            when = datetime.fromtimestamp(expires, UTC).isoformat().replace("+00:00", "Z")
            raise AuthError(f"token expired at {when}; {_NEW_TOKEN}", code="token_expired",
                            details={"expired_at": when})
        if role not in ROLES or not self._known(organ):
            raise AuthError(f"token names unknown organisation {organ}", code="bad_token")
        if (role == "relay") != (route is not None):
            raise AuthError("token names a role and route that do not go together", code="bad_token")
        return Identity(organ, role, route)

    def _claims(self, token: str) -> tuple[str, str, int, str | None]:
        """The claims of a token whose MAC checks out and that has the shape the hub
        issues; anything else, however it is broken, is a 401: ``malformed_token``
        for what is not shaped as a token, ``bad_token`` for the rest."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "lt1" or not all(parts) or not token.isascii():
            raise AuthError("malformed token: a lienthong token is lt1.<payload>.<mac>; "
                            f"{_NEW_TOKEN}", code="malformed_token")
        _version, payload, mac = parts
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            raise AuthError("invalid token: it was not signed by this hub (another hub's "
                            f"token, or this hub's secret has changed since); {_NEW_TOKEN}",
                            code="bad_token")
        try:
            claims = json.loads(_unb64(payload))
        except (ValueError, binascii.Error):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise AuthError("invalid token", code="bad_token") from None
        if not isinstance(claims, dict):
            raise AuthError("invalid token claims", code="bad_token")
        organ, role, expires = claims.get("o"), claims.get("r"), claims.get("exp")
        route = claims.get("rt")
        # The hub issues whole seconds: a float, a bool or a number past 2^62 is not ours.
        if (not isinstance(organ, str) or role not in ROLES or type(expires) is not int
                or not 0 <= expires < 1 << 62 or not (route is None or isinstance(route, str))):
            raise AuthError("invalid token claims", code="bad_token")
        return organ, str(role), expires, route

    def from_header(self, header: str | None) -> Identity:
        if not header:
            raise AuthError("missing Authorization: Bearer token", code="no_credentials")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("Authorization must be 'Bearer <token>'", code="no_credentials")
        return self.verify(token.strip())
