"""Constants and helpers shared by the tests (importable: tests/ is on pythonpath)."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _shared() -> Path:
    """The project's shared reference tree (DESIGN.md, reference/edxml/...).

    ``$LIENTHONG_SHARED`` if set; else ``shared/`` beside this checkout; else
    beside the repository it was cloned from (a CI clone in /tmp has no
    sibling, but its ``origin`` does)."""
    if os.environ.get("LIENTHONG_SHARED"):
        return Path(os.environ["LIENTHONG_SHARED"])
    beside = REPO.parent / "shared"
    if beside.is_dir():
        return beside
    try:
        origin = subprocess.run(["git", "-C", str(REPO), "remote", "get-url", "origin"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    if origin and "://" not in origin and ":" not in origin.split("/", 1)[0]:
        source = Path(origin)
        source = source if source.is_absolute() else (REPO / source)
        candidate = source.resolve().parent / "shared"
        if candidate.is_dir():
            return candidate
    return beside


SHARED = _shared()
#: The public VPCP SDK samples, in the shared reference tree (not in this repository).
SAMPLES = SHARED / "reference" / "edxml" / "vpcp-sdk-samples"
#: The project's own messages, shaped like real producers' (tests/fixtures/README.md).
FIXTURES = REPO / "tests" / "fixtures"

SAMPLES_MISSING = (f"the public edXML samples are not at {SAMPLES}: set LIENTHONG_SHARED to the "
                   f"shared reference tree to run the tests of the public samples")


#: The public samples' names, for ``parametrize`` (known whether or not the tree is there).
PUBLIC_SAMPLES = ("edoc_new.edxml", "edoc_update.edxml", "status.edxml",
                  "status_acceptance_03.edxml", "status_assignment_04.edxml",
                  "status_finish_06.edxml", "status_inbox_01.edxml",
                  "status_processing_05.edxml", "status_rejection_02.edxml")


def public_sample(name: str) -> bytes:
    """One public sample's bytes; skips the test when the tree is absent."""
    import pytest
    if not SAMPLES.is_dir():
        pytest.skip(SAMPLES_MISSING)
    return (SAMPLES / name).read_bytes()


def fixture(name: str) -> bytes:
    """One of the project's own test messages (tests/fixtures/NAME)."""
    return (FIXTURES / name).read_bytes()


def big_edoc(size: int = 360_000) -> bytes:
    """``edoc_legacy.edxml`` with an attachment of about ``size`` bytes of base64
    in 76-character CRLF lines, as producers wrap it."""
    from hub.edxml.samples import attachment_b64
    text = attachment_b64(size * 3 // 4, seed="big")
    wrapped = "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    raw = fixture("edoc_legacy.edxml")
    small = b"dGlueSB6aXAgc3RhbmQtaW4="
    assert raw.count(small) == 1
    return raw.replace(small, wrapped.encode())

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


XML = {"Content-Type": "application/xml"}


async def submit(client, auth, organ: str, raw: bytes, status: int = 202) -> dict:
    """POST an envelope as ``organ`` through the real API; assert the status; return the body."""
    resp = await client.post("/v1/envelopes", data=raw, headers={**auth(organ), **XML})
    body = await resp.json()
    assert resp.status == status, body
    return body


async def eventually(check, *, timeout: float = 10.0, interval: float = 0.02, what: str = ""):
    """Poll ``check`` (a function or coroutine function) until it returns a
    truthy value, and return that value; fail after ``timeout`` seconds.
    The one way tests wait for something asynchronous: no fixed sleeps."""
    import asyncio
    import inspect
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if asyncio.get_running_loop().time() >= deadline:
            raise AssertionError(f"not true after {timeout}s: {what or check}; last value {last!r}")
        await asyncio.sleep(interval)
