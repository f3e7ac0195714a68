"""Shared pieces of the benchmark: the hub as a child process, document pools, output.

Nothing here is imported by the hub.  The harness (``bench.run``) starts
``python -m hub.cli serve`` on a fresh data directory for each phase, with
development keys and a token secret made once per run and copied in, so
that documents signed once before any timing stay valid for every server.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

#: Local senders (communes) and local recipients (offices), all on the mailbox route.
COMMUNES = tuple(f"000.{n:02d}.48.H63" for n in range(1, 11))
OFFICES = tuple(f"000.{n:02d}.48.H63" for n in range(31, 44))
#: The peer district whose route (``peer.lucyen``) the end-to-end phase configures.
PEER_ORGAN = "000.00.44.H63"
PEER_ROUTE = "peer.lucyen"
HUB_ID = "000.99.48.H63"


# -- output ------------------------------------------------------------------------

def emit(name: str, params: dict[str, Any], value: float | None, unit: str,
         target: str | None = None, passed: bool | None = None, **extra: Any) -> dict[str, Any]:
    """One measurement as one JSON line on stdout (and returned for the table)."""
    rec = {"name": name, "params": params, "value": value, "unit": unit, "target": target,
           "pass": passed, **extra}
    print(json.dumps(rec, ensure_ascii=False), flush=True)
    return rec


def note(text: str) -> None:
    """Progress for a human, on stderr so stdout stays JSON lines then the table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100.0 * (len(ordered) - 1)))))
    return ordered[k]


# -- document pools: length-prefixed blobs in one file ---------------------------------

def write_pool(path: Path, docs: Iterator[tuple[str, bytes]]) -> int:
    """Write (sender, raw) pairs; returns the count."""
    n = 0
    with open(path, "wb") as fh:
        for sender, raw in docs:
            s = sender.encode()
            fh.write(struct.pack("<HQ", len(s), len(raw)))
            fh.write(s)
            fh.write(raw)
            n += 1
    return n


def read_pool(path: Path, limit: int | None = None) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    with open(path, "rb") as fh:
        while limit is None or len(out) < limit:
            head = fh.read(10)
            if len(head) < 10:
                break
            slen, rlen = struct.unpack("<HQ", head)
            sender = fh.read(slen).decode()
            out.append((sender, fh.read(rlen)))
    return out


# -- keys and tokens made once per run ----------------------------------------------------

def make_identity(work: Path) -> Path:
    """Dev keys (CA, hub, every organisation) and a token secret, in ``work/identity``.

    Copied into each server's data directory: the hub then finds
    ``keys/hub.key`` and pins ``keys/orgs/<id>.pem`` as it does for keys it
    generated itself on first start.
    """
    from hub.config import build_settings
    from hub.directory import load_directory
    from hub.crypto.keys import init_dev_keys
    from hub.auth import load_secret

    ident = work / "identity"
    if not (ident / "keys" / "hub.key").exists():
        directory = load_directory(build_settings({}))
        init_dev_keys(ident / "keys", directory.hub.id,
                      [o.id for o in directory if o.kind != "hub"])
        load_secret(ident)
    return ident


def token_for(ident: Path, organ: str, role: str = "agency") -> str:
    from hub.auth import TokenAuthority, load_secret
    return TokenAuthority(load_secret(ident)).issue(organ, role, 86400)


def sender_key(ident: Path, organ: str) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key((ident / "keys" / "orgs" / f"{organ}.key").read_bytes(),
                                             None)
    cert = x509.load_pem_x509_certificate((ident / "keys" / "orgs" / f"{organ}.pem").read_bytes())
    return key, cert


# -- the hub as a child process -----------------------------------------------------------

def describe_tree(tree: Path) -> dict[str, Any]:
    """Which code a run measured: the git commit and whether the tree had changes."""
    info: dict[str, Any] = {"tree": str(tree)}
    try:
        info["commit"] = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                                        capture_output=True, text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", str(tree), "status", "--porcelain", "--",
                                 "hub", "spool", "adapters", "schemas"],
                                capture_output=True, text=True, timeout=10).stdout
        info["dirty"] = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    stamp = tree / ".bench-commit"
    if stamp.exists():
        info["commit"] = stamp.read_text().strip()
        info["dirty"] = False
    return info


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


class Hub:
    """``python -m hub.cli serve`` on one data directory, started and killed by the harness."""

    def __init__(self, work: Path, name: str, ident: Path, *, config: str = "",
                 data: Path | None = None, cwd: Path = REPO) -> None:
        self.work = work
        self.name = name
        self.data = data or work / name / "var"
        self.port = free_port()
        self.log = work / name / "server.log"
        self.config = work / name / "hub.toml"
        self.ident = ident
        self.config_text = config
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        """Data directory with the run's keys and token secret; the config file."""
        self.data.mkdir(parents=True, exist_ok=True)
        if not (self.data / "keys").exists():
            shutil.copytree(self.ident / "keys", self.data / "keys")
        if not (self.data / "secrets").exists():
            shutil.copytree(self.ident / "secrets", self.data / "secrets")
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(self.config_text, encoding="utf-8")

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait for ``/readyz`` 200; returns seconds from spawn to ready."""
        self.prepare()
        cmd = [PYTHON, "-m", "hub.cli", "serve", "-c", str(self.config), "--data", str(self.data),
               "--listen", f"127.0.0.1:{self.port}"]
        logf = self.log.open("ab")
        logf.write(f"\n--- bench: {' '.join(cmd)}\n".encode())
        logf.flush()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=self.cwd, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        logf.close()
        deadline = self.started_at + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"hub {self.name} exited during start:\n{self.tail()}")
            try:
                status, _ = http_get(f"{self.base}/readyz", timeout=1.0)
                if status == 200:
                    return time.monotonic() - self.started_at
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"hub {self.name} not ready within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(0.02)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> tuple[int, int]:
        """(current RSS, peak RSS) of the server in bytes, from /proc."""
        cur = peak = 0
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    cur = int(line.split()[1]) * 1024
                elif line.startswith("VmHWM:"):
                    peak = int(line.split()[1]) * 1024
        return cur, peak

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS (Linux ≥ 4.0: write 5 to clear_refs)."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as fh:
                fh.write("5")
            return True
        except OSError:
            return False

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, bounded; SIGKILL after ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_bytes()[-chars:].decode(errors="replace")
        except FileNotFoundError:
            return "(no log)"


class Child:
    """A helper process of the harness (load generator, fake peer), always reaped."""

    def __init__(self, cmd: list[str], log: Path, tree: Path | None = None) -> None:
        """``tree``: import ``hub``/``spool`` from this source tree (``bench`` from ours)."""
        self.cmd = cmd
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if tree is not None and tree.resolve() != REPO:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(cmd, cwd=tree or REPO, stdout=subprocess.PIPE, stderr=fh,
                                         stdin=subprocess.DEVNULL, env=env)

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the process and parse the last JSON line it printed."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise TimeoutError(f"{' '.join(self.cmd[:4])}… did not finish in {timeout:.0f} s") from None
        lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
        if self.proc.returncode != 0 or not lines:
            raise RuntimeError(f"{' '.join(self.cmd[:4])}… failed (rc={self.proc.returncode}): "
                               f"{self.log.read_text(errors='replace')[-3000:]}")
        return json.loads(lines[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
