"""Ingest from a folder: envelopes dropped as files are taken in, then moved.

For systems that can only write files (a scanner's export, a nightly job, a
shared folder mounted from an agency).  Each ``*.xml`` or ``*.edxml`` file in
``path`` is handed to cleanup as the route's relay identity; only after the
durable commit is it moved to ``path/done/`` (confirmed).  A refused file is
moved to ``path/refused/`` with a ``.error.json`` beside it naming the code.
A file still being written is left alone until its size has not changed for
one ``interval`` (write to a temporary name and rename into the folder to be
safe).  Nothing is lost on a crash: a file is moved only after the commit,
and one taken twice is the same message (cleanup's duplicate detection).

Options: ``path`` (required), ``interval`` (default ``"2s"``).
Ingest only: a route served by this adapter cannot be delivered to.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

from adapters.base import Adapter, Duration, IngestPort
from hub.errors import HubError

SUFFIXES = (".xml", ".edxml")


@dataclasses.dataclass(frozen=True)
class FolderOptions:
    #: The folder watched.
    path: Path
    #: How often it is looked at.
    interval: Duration = Duration(2.0)


class FolderAdapter(Adapter):
    ingests = True
    delivers = False
    Options = FolderOptions

    def __init__(self, name: str, options: Any = None) -> None:
        super().__init__(name, options)
        self.path: Path = self.options.path
        self.log = logging.getLogger(f"hub.adapter.{name}")
        self.taken = 0
        self.refused = 0
        self._sizes: dict[str, int] = {}

    async def ingest(self, port: IngestPort) -> None:
        for sub in ("done", "refused"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        while True:
            await self.scan(port)
            await asyncio.sleep(self.options.interval)

    async def scan(self, port: IngestPort) -> int:
        """One look at the folder; returns the files taken in."""
        taken = 0
        for entry in sorted(self.path.iterdir()):
            if not entry.is_file() or entry.suffix.lower() not in SUFFIXES:
                continue
            size = entry.stat().st_size
            if self._sizes.get(entry.name) != size:  # new, or still growing
                self._sizes[entry.name] = size
                continue
            del self._sizes[entry.name]
            try:
                result = await port.accept(entry, origin=f"folder:{self.name}")
            except HubError as exc:
                self._move(entry, "refused")
                (self.path / "refused" / f"{entry.name}.error.json").write_text(
                    json.dumps(exc.to_dict(), ensure_ascii=False), encoding="utf-8")
                self.refused += 1
                self.log.info("%s refused: %s", entry.name.encode("unicode_escape").decode(), exc.code)
                continue
            self._move(entry, "done")  # confirmed only now, after the commit
            taken += 1
            self.taken += 1
            self.log.info("%s taken in from %s", result.id, entry.name.encode("unicode_escape").decode())
        return taken

    def _move(self, entry: Path, where: str) -> None:
        os.replace(entry, self.path / where / entry.name)

    def health(self) -> dict[str, Any]:
        return {"taken_in": self.taken, "refused": self.refused}
