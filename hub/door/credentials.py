"""The national-SDK door's credentials: one system id and secret per organisation.

Kept in ``DATA/secrets/door.json`` (mode 0600, its folder 0700), written only
by ``lienthong door credentials`` (``issue``), read by the running hub
(``DoorSecrets``), which notices a new or rotated secret without a restart:
it looks at the file's size, mtime and inode at most once a second, and at
once when a request names a system it does not know or whose MAC does not
verify (so a secret just issued works on its first request; a rotated one's
predecessor is refused at the latest a second after the rotation).

System id: the OrganId itself.  The SDK signs ``systemid`` and ``from``
separately; with the OrganId as system id, the two are the same text for an
agency's own software, the door's mapping needs no table an operator must
keep in step with the directory, and the audit log names the organisation
directly.  One organisation has one door credential; rotating it revokes
the old secret.

Secret: 32 random bytes as standard base64 (44 characters, like the axis's).
The SDK keys its HMAC with the secret *string* as is, so it is never decoded.
Secrets are never logged; they are compared only inside ``hmac.compare_digest``
(through ``hub.vxp.protocol.verify_request``).
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Callable, Iterator

from hub.errors import ConfigError

log = logging.getLogger("hub.door")

FILE_NAME = "door.json"
#: At most this often the running hub looks at the file for changes (seconds).
RECHECK = 1.0


def credentials_path(data_dir: Path) -> Path:
    return data_dir / "secrets" / FILE_NAME


def new_secret() -> str:
    """44 characters of base64 over 32 random bytes."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@dataclasses.dataclass(frozen=True, slots=True)
class Credential:
    system_id: str
    organ: str
    secret: str
    created: float
    rotated: float | None = None

    def to_json(self) -> dict[str, object]:
        return {"organ": self.organ, "secret": self.secret, "created": self.created,
                "rotated": self.rotated}


def _parse(text: str, path: Path) -> dict[str, Credential]:
    try:
        doc = json.loads(text) if text.strip() else {}
        systems = doc.get("systems", {}) if isinstance(doc, dict) else None
        if not isinstance(systems, dict):
            raise ValueError("no 'systems' object")
        return {sid: Credential(sid, str(v["organ"]), str(v["secret"]), float(v["created"]),
                                None if v.get("rotated") is None else float(v["rotated"]))
                for sid, v in systems.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a door credentials file ({exc})") from None


def read_credentials(path: Path) -> dict[str, Credential]:
    try:
        return _parse(path.read_text(encoding="utf-8"), path)
    except FileNotFoundError:
        return {}


def _private_dir(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time (two `lienthong door credentials` racing)."""
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, creds: dict[str, Credential]) -> None:
    body = json.dumps({"version": 1, "systems": {sid: c.to_json() for sid, c in
                                                  sorted(creds.items())}}, indent=2)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, body.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def issue(data_dir: Path, organ: str, *, rotate: bool = False,
          now: Callable[[], float] = time.time) -> tuple[Credential, str]:
    """The organisation's credential, made on first use or replaced with ``rotate``;
    returns it and what happened (``created``, ``rotated`` or ``existing``)."""
    path = credentials_path(data_dir)
    _private_dir(path.parent)
    with _locked(path):
        creds = read_credentials(path)
        system_id = organ
        old = creds.get(system_id)
        if old is not None and not rotate:
            if path.stat().st_mode & 0o077:  # someone loosened it: tighten again
                os.chmod(path, 0o600)
            return old, "existing"
        t = now()
        cred = (Credential(system_id, organ, new_secret(), old.created, t) if old is not None
                else Credential(system_id, organ, new_secret(), t))
        creds[system_id] = cred
        _write(path, creds)
    return cred, "rotated" if old is not None else "created"


class DoorSecrets:
    """The running hub's view of the credentials file, re-read when it changes.

    ``known(organ)`` is the directory's test: a credential of an organisation
    no longer in the directory is not honoured."""

    def __init__(self, data_dir: Path, known: Callable[[str], bool] = lambda organ: True, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = credentials_path(data_dir)
        self._known = known
        self._clock = clock
        self._creds: dict[str, Credential] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self.refresh(force=True)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the file if it changed (looked at once a second, or now with
        ``force``); True when what the hub knows changed."""
        t = self._clock()
        if not force and t - self._checked < RECHECK:
            return False
        self._checked = t
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return False
        try:
            creds = read_credentials(self.path)
        except (ConfigError, OSError) as exc:
            # Keep serving what was read last; a half-edited file is the operator's to fix.
            log.error("door credentials not reloaded: %s", exc)
            return False
        changed = creds != self._creds
        self._creds, self._stamp = creds, stamp
        if changed:
            log.info("door credentials loaded: %d systems", len(creds))
        return changed

    def credential(self, system_id: str) -> Credential | None:
        self.refresh()
        cred = self._creds.get(system_id)
        if cred is None and self.refresh(force=True):
            cred = self._creds.get(system_id)
        if cred is None or not self._known(cred.organ):
            return None
        return cred

    def secret_for(self, system_id: str) -> str | None:
        cred = self.credential(system_id)
        return cred.secret if cred is not None else None

    def organ_of(self, system_id: str) -> str | None:
        cred = self.credential(system_id)
        return cred.organ if cred is not None else None
