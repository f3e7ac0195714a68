"""Fixtures shared by the VXP tests (tests/hub/vxp and tests/fakes): a fake platform, clients.

The platform is the real aiohttp server of ``hub.sim.vxp_platform`` on
127.0.0.1, an ephemeral port; clients are real ``hub.vxp.client`` clients.
Timeouts are short so that a test meeting an injected hang ends quickly.
"""
from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support import SAMPLES

from hub.sim.vxp_platform import FakePlatform, start_platform
from hub.vxp.client import VxpClient

#: system id -> (secret, OrganIds).  edoc_update.edxml goes from G22 to H41, H14 and G17.
SYSTEMS = {
    "sys.a": ("secret-A-9f8e7d6c", ["000.00.00.G22"]),
    "sys.b": ("secret-B-5b4a3c2d", ["000.00.00.H41", "000.00.00.H14"]),
    "sys.c": ("secret-C-1a2b3c4d", ["000.00.00.G17", "000.00.00.A80", "28.22.H17"]),
}
OAUTH = {"hub-client": "hub-client-secret"}
TIMEOUT = 0.5   # seconds: every client call in these tests ends within it

EDOC = (SAMPLES / "edoc_update.edxml").read_bytes()
STATUS = (SAMPLES / "status_inbox_01.edxml").read_bytes()   # from H41 (sys.b) to G22 (sys.a)


async def make_platform(**options: object) -> FakePlatform:
    return await start_platform("127.0.0.1", 0, systems=[(s, sec, organs) for s, (sec, organs)
                                                         in SYSTEMS.items()], **options)


def make_client(platform: FakePlatform, system_id: str, **options: object) -> VxpClient:
    if platform.tokens is not None and "token_url" not in options:
        options.update(token_url=platform.token_url, client_id="hub-client",
                       client_secret=OAUTH["hub-client"])
    return VxpClient(platform.url, system_id, SYSTEMS[system_id][0], timeout=TIMEOUT,
                     **options)  # type: ignore[arg-type]


@pytest.fixture
async def platform() -> AsyncIterator[FakePlatform]:
    p = await make_platform()
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def gateway() -> AsyncIterator[FakePlatform]:
    """A platform behind an OAuth2 gateway."""
    p = await make_platform(oauth_clients=OAUTH, token_lifetime=600)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def client_a(platform: FakePlatform) -> AsyncIterator[VxpClient]:
    async with make_client(platform, "sys.a") as c:
        yield c


@pytest.fixture
async def client_b(platform: FakePlatform) -> AsyncIterator[VxpClient]:
    async with make_client(platform, "sys.b") as c:
        yield c
