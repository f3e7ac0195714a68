"""Payload files: the original bytes of large envelopes, addressed by SHA-256.

Small payloads live inline in the database row; larger ones are written here
*before* the transaction that references them commits: temporary file, write,
fsync, atomic rename, fsync of the directory.  A crash between the file and
the commit leaves an unreferenced file, which housekeeping removes; never a
row that points at nothing.  Files are never modified once written.

Very large bodies never sit whole in memory: the HTTP layer streams them
into ``incoming/`` as they arrive (``BodyWriter``, hashing on the way),
cleanup parses the file, and the spool adopts it as the payload with one
rename (``adopt``).  Deliveries send them from the file.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import secrets
from pathlib import Path

from hub.errors import PayloadCorruptError, SpoolError
from hub.private import FILE_MODE, private_dir


#: Bodies larger than this are handled as files, never whole in memory: an
#: upload is streamed to disk, a delivery is sent from its payload file.
LARGE = 8 << 20
#: Files are read (hashed, streamed) in pieces of this size.
CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class SpooledBody:
    """A body written to ``incoming/`` as it arrived: its file, size and SHA-256."""

    path: Path
    size: int
    sha256: str

    def __len__(self) -> int:
        return self.size

    def read(self) -> bytes:
        return self.path.read_bytes()

    def discard(self) -> None:
        """Remove the file unless the spool adopted it (then it is gone already)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class BodyWriter:
    """Appends a body's pieces to a new file in ``incoming/``, hashing them."""

    def __init__(self, store: "PayloadStore") -> None:
        incoming = store.root / "incoming"
        private_dir(incoming)
        self.path = incoming / f"{secrets.token_hex(12)}.part"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self.size += len(data)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise _write_failed(self.path.name, exc) from exc

    def finish(self) -> SpooledBody:
        """Durable on disk (fsync) before anyone is told it was accepted."""
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise _write_failed(self.path.name, exc) from exc
        finally:
            os.close(self._fd)
        return SpooledBody(self.path, self.size, self._hash.hexdigest())

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class PayloadStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        private_dir(root)

    def relpath(self, sha256: str) -> str:
        return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def path(self, sha256: str) -> Path:
        return self.root / self.relpath(sha256)

    def put(self, sha256: str, data: "bytes | SpooledBody") -> str:
        """Write ``data`` durably under its digest; return the relative path."""
        if isinstance(data, SpooledBody):
            return self.adopt(data)
        rel = self.relpath(sha256)
        final = self.root / rel
        if _already_there(final, len(data)):
            return rel
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        try:
            private_dir(final.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
        except OSError as exc:
            # A full disk (or a failing one): nothing half-written stays behind to
            # hold space, and the sender is told to try again (503), not "internal error".
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise _write_failed(rel, exc) from exc
        return rel

    def adopt(self, body: SpooledBody) -> str:
        """Make a body already on disk (and fsynced) the payload: one rename."""
        rel = self.relpath(body.sha256)
        final = self.root / rel
        if _already_there(final, body.size):
            body.discard()
            return rel
        private_dir(final.parent)
        os.replace(body.path, final)
        _fsync_dir(final.parent)
        return rel

    def get(self, rel: str, sha256: str | None = None) -> bytes:
        """The file's bytes; with ``sha256``, checked against it as they are read
        (``PayloadCorruptError`` when the file no longer hashes to it)."""
        data = (self.root / rel).read_bytes()
        if sha256 is not None:
            _check(rel, sha256, hashlib.sha256(data).hexdigest(), len(data))
        return data

    def verify(self, rel: str, sha256: str) -> Path:
        """The file's path after reading it through once, in ``CHUNK`` pieces, and
        checking its SHA-256 (``PayloadCorruptError`` if it does not match)."""
        path = self.root / rel
        digest, size = hashlib.sha256(), 0
        with open(path, "rb") as f:
            while piece := f.read(CHUNK):
                digest.update(piece)
                size += len(piece)
        _check(rel, sha256, digest.hexdigest(), size)
        return path

    def remove(self, rel: str) -> None:
        try:
            (self.root / rel).unlink()
        except FileNotFoundError:
            pass

    def sweep(self, referenced: set[str], older_than: float) -> int:
        """Remove files no row references (a crash between write and commit)
        and stale temporaries, if last touched before ``older_than``."""
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, self.root)
                if rel in referenced:
                    continue
                try:
                    if os.stat(full).st_mtime < older_than:
                        os.unlink(full)
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed


def _write_failed(rel: str, exc: OSError) -> SpoolError:
    return SpoolError(f"the spool could not write payload {rel}: {exc.strerror or exc}",
                      details={"errno": exc.errno})


def _check(rel: str, sha256: str, found: str, size: int) -> None:
    if found != sha256:
        raise PayloadCorruptError(
            f"payload file {rel} is corrupt: its {size} bytes hash to {found[:16]}…, "
            f"not to the SHA-256 it was stored under", details={"sha256": sha256, "path": rel})


def _already_there(final: Path, size: int) -> bool:
    """The same payload is stored already: touch it, so a sweep running now
    does not take it."""
    if final.exists() and final.stat().st_size == size:
        os.utime(final)
        return True
    return False


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
