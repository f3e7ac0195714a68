"""Payload files: the original bytes of large envelopes, addressed by SHA-256.

Small payloads live inline in the database row; larger ones are written here
*before* the transaction that references them commits: temporary file, write,
fsync, atomic rename, fsync of the directory.  A crash between the file and
the commit leaves an unreferenced file, which housekeeping removes; never a
row that points at nothing.  Files are never modified once written.
"""
from __future__ import annotations

import os
from pathlib import Path


class PayloadStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def relpath(self, sha256: str) -> str:
        return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def path(self, sha256: str) -> Path:
        return self.root / self.relpath(sha256)

    def put(self, sha256: str, data: bytes) -> str:
        """Write ``data`` durably under its digest; return the relative path."""
        rel = self.relpath(sha256)
        final = self.root / rel
        if final.exists() and final.stat().st_size == len(data):
            os.utime(final)  # fresh again: a sweep running now must not take it
            return rel
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        dfd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return rel

    def get(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

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
