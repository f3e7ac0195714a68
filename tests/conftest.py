"""Shared fixtures: a hub on a temporary data directory, served over real HTTP.

The aiohttp test server listens on a real socket on 127.0.0.1; nothing of
the hub is mocked.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hub.api.app import HUB, create_app
from hub.clock import ManualClock
from hub.config import build_settings

from support import SAMPLES  # noqa: E402

from hypothesis import settings as hsettings

# Hypothesis profiles: "ci" (the default) is derandomized, so every run tries
# the same examples and a failure reproduces; HYPOTHESIS_PROFILE=long runs
# randomised and much longer, for local bug hunting (tests size themselves
# from the profile where they set their own counts, e.g. the delivery machine).
hsettings.register_profile("ci", derandomize=True, deadline=None, database=None,
                           print_blob=True)
hsettings.register_profile("long", derandomize=False, deadline=None, max_examples=1000,
                           stateful_step_count=80, print_blob=True)
hsettings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def dev_keys(tmp_path_factory) -> Path:
    """Development keys made once per test run: CA, hub, one key per organisation."""
    from hub.directory import load_directory
    from hub.crypto.keys import init_dev_keys
    keys = tmp_path_factory.mktemp("keys")
    directory = load_directory(build_settings({}))
    init_dev_keys(keys, directory.hub.id, [o.id for o in directory if o.kind != "hub"])
    return keys


@pytest.fixture
def make_settings(tmp_path: Path, dev_keys: Path):
    """Settings on a fresh data directory, signing with the shared test keys
    (organisations are trusted through the dev CA that issued theirs)."""
    def make(**overrides: Any):
        # cpu_workers 0: no worker processes per test app (tests/hub/cleanup/test_cpu_pool.py
        # and the live-server tests run the default pool).
        raw = {"data_dir": str(tmp_path / "var"), "cpu_workers": 0,
               "hub_key_file": str(dev_keys / "hub.key"),
               "hub_cert_file": str(dev_keys / "hub.pem"), "trust_ca_file": str(dev_keys / "ca.pem"),
               **overrides}
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
    if SAMPLES.is_dir():
        return
    if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
        # Under CI the public samples are required: a missing tree fails the run.
        raise pytest.UsageError(f"reference samples missing at {SAMPLES} (set LIENTHONG_SHARED "
                                f"to the shared reference tree)")


@pytest.fixture
def live_hub(tmp_path):
    """A real ``lienthong serve`` process on 127.0.0.1 (``serve.Served``), started."""
    from serve import Served
    server = Served(tmp_path / "live", log=tmp_path / "server.log")
    try:
        yield server.start()
    finally:
        server.stop()
        server.close()


@pytest.fixture
def live_server(live_hub):
    """The live hub as (base_url, data_dir, mint)."""
    return live_hub.url, live_hub.data, live_hub.mint
