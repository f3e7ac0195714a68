"""Shared fixtures: a hub on a temporary data directory, served over real HTTP.

The aiohttp test server listens on a real socket on 127.0.0.1; nothing of
the hub is mocked.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest

from hub.api import HUB, create_app
from hub.clock import ManualClock
from hub.config import build_settings

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SAMPLES = SHARED / "reference" / "edxml" / "vpcp-sdk-samples"

#: Organisations used throughout the tests (from the bundled directory).
MAU_A = "000.01.48.H63"          # thị trấn Mậu A (commune)
AN_BINH = "000.02.48.H63"        # a second commune
VP_UBND = "000.31.48.H63"        # Văn phòng HĐND và UBND huyện (office)
SO_NOIVU = "000.00.02.H63"       # a provincial department (route provincial)
HUB_ID = "000.99.48.H63"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def make_settings(tmp_path: Path):
    def make(**overrides: Any):
        raw = {"data_dir": str(tmp_path / "var"), **overrides}
        return build_settings(raw)
    return make


@pytest.fixture
def settings(make_settings):
    return make_settings()


@pytest.fixture
async def client(aiohttp_client, settings):
    app = create_app(settings)
    return await aiohttp_client(app)


@pytest.fixture
def hub(client):
    return client.app[HUB]


@pytest.fixture
def auth(hub):
    """``auth(organ, role="agency")`` → headers with a bearer token."""
    def make(organ: str, role: str = "agency") -> dict[str, str]:
        return {"Authorization": f"Bearer {hub.tokens.issue(organ, role)}"}
    return make


def pytest_collection_modifyitems(config, items):  # noqa: D401
    if not SAMPLES.is_dir() and os.environ.get("CI"):
        raise pytest.UsageError(f"reference samples missing at {SAMPLES}")
