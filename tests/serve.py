"""A real ``lienthong serve`` process for the tests that need one.

``Served`` starts the hub as a child process on 127.0.0.1 (its own data
directory, a free port, optionally a hub.toml written from text), waits for
``/healthz`` (or ``/readyz``) with a deadline, mints tokens with the
server's own secret, stops it with SIGTERM (then SIGKILL, failing the test),
kills it with SIGKILL for crash tests, and restarts it on the same port and
data.  Every start appends to one log file with a line saying what the test
did, so a failure shows the whole story.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from support import REPO, free_port


class Served:
    """``lienthong serve`` on one data directory, as a child process of the test."""

    def __init__(self, data: Path | None, *, port: int | None = None, config: str | None = None,
                 log: Path | None = None, cwd: Path = REPO, program: Sequence[str] | None = None,
                 health: str = "/healthz", start_timeout: float = 30.0,
                 new_session: bool = False, scheme: str = "http",
                 ca_file: Path | None = None) -> None:
        """``data`` None: the command's own default (``cwd``'s data directory);
        ``scheme`` "https" for a hub with tls_cert_file, whose certificate
        ``ca_file`` verifies;
        ``config``: hub.toml text, written beside the log and passed with ``-c``;
        ``program``: the command instead of ``python -m hub.cli``;
        ``new_session``: the hub leads a process group of its own (``os.killpg``)."""
        self.data = data
        self.port = port or free_port()
        self.cwd = cwd
        self.health = health
        self.start_timeout = start_timeout
        self.new_session = new_session
        self.scheme = scheme
        self._ssl = None
        if scheme == "https":
            import ssl
            self._ssl = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        where = data.parent if data is not None else cwd
        self.log = log or where / f"serve-{self.port}.log"
        self.config: Path | None = None
        if config is not None:
            self.config = self.log.with_suffix(".toml")
            self.config.write_text(config, encoding="utf-8")
        self.program = list(program or [sys.executable, "-m", "hub.cli"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        #: How long the last ``stop()`` took, seconds.
        self.stop_seconds = 0.0

    # -- where --------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    base = url

    @property
    def pid(self) -> int:
        assert self.proc is not None, "the hub was never started"
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        cmd = list(self.program)
        if self.config is not None:
            cmd += ["-c", str(self.config)]
        cmd += ["serve", "--listen", f"127.0.0.1:{self.port}"]
        if self.data is not None:
            cmd += ["--data", str(self.data)]
        return cmd

    # -- life cycle -------------------------------------------------------------------

    def start(self) -> "Served":
        """Start the process and wait until it answers ``health`` (bounded)."""
        assert not self.running, "the hub is already running"
        self.starts += 1
        cmd = self.command()
        with self.log.open("ab") as log:
            log.write(f"\n--- test: start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"},
                                         start_new_session=self.new_session)
        self.wait_ready()
        return self

    async def start_async(self) -> "Served":
        """``start`` without blocking the test's event loop."""
        import asyncio
        return await asyncio.to_thread(self.start)

    def wait_ready(self) -> None:
        """Poll ``health`` until it answers 200; fail if the process exits or the deadline passes."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            if not self.running:
                rc = self.proc.returncode if self.proc is not None else None
                raise AssertionError(f"the hub exited during start #{self.starts} (rc={rc}):\n"
                                     f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + self.health, timeout=1,
                                            context=self._ssl) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the hub did not answer {self.health} within "
                                     f"{self.start_timeout:.0f} s (start #{self.starts}):\n"
                                     f"{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> int | None:
        """A clean stop (SIGTERM), bounded; returns the exit code (None: was not running).
        A hub that ignores SIGTERM is killed and the test fails."""
        if not self.running:
            return self.proc.returncode if self.proc is not None else None
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the hub did not stop within {timeout:.0f} s of SIGTERM:\n"
                                 f"{self.log_tail()}") from None
        self.stop_seconds = time.monotonic() - started
        self._note(f"stopped with SIGTERM (rc={rc}, {self.stop_seconds:.1f} s)")
        return rc

    def kill(self) -> None:
        """kill -9: no signal handler, no shutdown code, no final checkpoint."""
        if self.running:
            os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)
            self._note(f"killed with SIGKILL (rc={self.proc.returncode})")

    def restart(self) -> "Served":
        """Stop cleanly (if running) and start again on the same port and data."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Teardown: whatever state it is in, the process is gone afterwards."""
        if self.running:
            if self.new_session:
                os.killpg(self.pid, signal.SIGKILL)
            self.kill()

    def __enter__(self) -> "Served":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.close()

    # -- the log --------------------------------------------------------------------

    def _note(self, text: str) -> None:
        with self.log.open("ab") as log:
            log.write(f"--- test: {text}\n".encode())

    def log_text(self) -> str:
        try:
            return self.log.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return "(no log)"

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_text()[-chars:]

    # -- talking to it -------------------------------------------------------------

    def mint(self, organ: str, role: str = "agency", *args: Any, **kw: Any) -> str:
        """A token for ``organ`` signed with the server's own secret."""
        from hub.auth import TokenAuthority, load_secret
        assert self.data is not None, "a hub on its default data directory: read its secret there"
        return TokenAuthority(load_secret(self.data)).issue(organ, role, *args, **kw)

    def auth(self, organ: str, role: str = "agency") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.mint(organ, role)}"}

    def submit(self, organ: str, raw: bytes) -> tuple[int, dict]:
        """POST an envelope as ``organ``; (HTTP status, JSON body)."""
        req = urllib.request.Request(f"{self.url}/v1/envelopes", data=raw, method="POST",
                                     headers={**self.auth(organ),
                                              "Content-Type": "application/xml"})
        try:
            with urllib.request.urlopen(req, timeout=30, context=self._ssl) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())
