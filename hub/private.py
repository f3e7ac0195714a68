"""The data directory is private to the hub's user: the modes everything in it gets.

Where it sits: at the bottom, beside ``hub.errors``; the spool, the keys and
the token secret create their files and directories through it.  Directories
are 0700, files 0600 (payloads, the spool database and its WAL, keys, the
token secret), certificates 0640 (public material, still not the world's).
``lienthong serve`` also sets the umask to 077, so whatever else a library
creates under the data directory starts private too.

SQLite creates ``-wal`` and ``-shm`` with the mode of the database file, so
creating ``spool.db`` 0600 before SQLite opens it is what keeps them 0600.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
CERT_MODE = 0o640


def private_dir(path: Path) -> Path:
    """``mkdir -p`` where every directory it creates is 0700 (``Path.mkdir``
    gives the parents it makes the default mode); an existing one is tightened."""
    missing = []
    p = Path(path)
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir(mode=DIR_MODE)
        os.chmod(d, DIR_MODE)  # mkdir's mode is filtered by the umask
    tighten(path, DIR_MODE)
    return path


def private_file(path: Path, mode: int = FILE_MODE) -> Path:
    """Create ``path`` (empty) with ``mode`` if it does not exist; tighten it if it does."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode))
    tighten(path, mode)
    return path


def tighten(path: Path, mode: int) -> None:
    """Drop any permission ``path`` has beyond ``mode`` (files made by an older hub)."""
    with contextlib.suppress(FileNotFoundError):
        current = os.stat(path).st_mode & 0o777
        if current & ~mode:
            os.chmod(path, current & mode)
