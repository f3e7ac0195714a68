"""Fixtures of the fault suite: a push destination on 127.0.0.1 (``traffic.Peer``)."""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from traffic import Peer


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    p = await Peer().start()
    try:
        yield p
    finally:
        await p.close()
