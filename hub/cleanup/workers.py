"""Worker processes that run module-level functions for the event loop.

Why not ``concurrent.futures.ProcessPoolExecutor``: each of its calls crosses
four threads (the caller's, its queue feeder, its result manager, and back to
the loop through the loop's self-pipe), and on this kind of machine the
thread wake-ups cost more than the work they carry: measured, a quarter of
the hub process's CPU under end-to-end load was spent in the kernel's
context switches.  Here the event loop talks to each worker over one Unix
socket through an asyncio transport: a call is one write, its answer one
``data_received``, and no other thread is involved.

Wire: each frame is a 4-byte big-endian length and a pickle.  Parent →
worker ``(call_id, function, args)``; worker → parent ``(call_id, ok,
value)``, ``value`` being the result or the exception raised (HubErrors keep
their code and details; an exception that cannot be pickled arrives as a
``RuntimeError`` with its text).

Life cycle: workers are spawned (never forked: the hub already runs threads)
when the pool starts, run ``initializer(*initargs)`` once, then answer calls
in order.  A worker whose socket closes (it died) fails the calls it held
with a 500 and is replaced at once; a worker whose parent dies goes too
(``PR_SET_PDEATHSIG``, and it also reads end-of-file on its socket).
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import multiprocessing
import multiprocessing.util  # its exit handler is registered before ours (_kill_leftovers)
import os
import pickle
import signal
import socket
import threading
import time
from typing import Any, Callable

from hub.errors import HubError

log = logging.getLogger("hub.cleanup.workers")

_HEADER = 4
#: Calls queued on a worker before the next one is used: a light load stays
#: on one warm process; only a burst of accepts spreads over all of them.
_ROOM = 4
#: Workers yield the CPU to the hub's own process when both want it: that
#: process (one core, the GIL) bounds end-to-end throughput, the workers only
#: bursts of accepts.  Measured on 2 cores: end to end ~440 -> ~500 docs/s
#: with two workers, 10 KB accepts unchanged (~1,950/s at concurrency 64).
_NICE = 5
_PICKLE = pickle.HIGHEST_PROTOCOL


class WorkerLost(HubError):
    """The worker process running a call died before it answered (retry)."""

    code = "worker_lost"
    http_status = 503


_LOST = "an internal worker process died during the request; retry"


def _frame(obj: Any) -> bytes:
    body = pickle.dumps(obj, _PICKLE)
    return len(body).to_bytes(_HEADER, "big") + body


class _Link(asyncio.Protocol):
    """The parent's end of one worker's socket."""

    def __init__(self, pool: "WorkerPool", process: Any) -> None:
        self.pool = pool
        self.process = process
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, call_id: int, fut: asyncio.Future[Any], fn: Callable[..., Any],
             args: tuple[Any, ...]) -> None:
        assert self.transport is not None
        self.pending[call_id] = fut
        self.transport.write(_frame((call_id, fn, args)))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        start = 0
        while len(buf) - start >= _HEADER:
            size = int.from_bytes(buf[start:start + _HEADER], "big")
            end = start + _HEADER + size
            if len(buf) < end:
                break
            call_id, ok, value = pickle.loads(memoryview(buf)[start + _HEADER:end])
            start = end
            fut = self.pending.pop(call_id, None)
            if fut is None or fut.done():
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
        if start:
            del buf[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(WorkerLost(_LOST))
        self.pool._lost(self, len(pending))


class WorkerPool:
    """N spawned processes; ``await pool.call(fn, *args)`` runs ``fn(*args)`` in one."""

    def __init__(self, size: int, initializer: Callable[..., Any], initargs: tuple[Any, ...],
                 *, name: str = "worker") -> None:
        self.size = size
        self.initializer = initializer
        self.initargs = initargs
        self.name = name
        self.links: list[_Link] = []
        self.restarts = 0
        self._ids = 0
        self._closing = False
        self._starting: asyncio.Task[None] | None = None
        self._last_restart = float("-inf")
        self._delay = 0.0

    async def start(self) -> None:
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        await self._starting

    async def _start(self) -> None:
        for _ in range(self.size - len(self.links)):
            await self._spawn()

    async def _spawn(self) -> None:
        parent_sock, child_sock = socket.socketpair()
        ctx = multiprocessing.get_context("spawn")
        process = ctx.Process(target=_worker_main, name=f"lienthong-{self.name}", daemon=True,
                              args=(child_sock, os.getpid(), self.initializer, self.initargs))
        # The child inherits ignored SIGINT/SIGTERM from its first instruction:
        # a signal to the whole process group while it is still starting would
        # otherwise kill it (a signal to the hub in these few milliseconds is
        # lost; run it again).
        saved = {}
        if threading.current_thread() is threading.main_thread():
            saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            process.start()
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)
            child_sock.close()
        _ALL.add(process)
        loop = asyncio.get_running_loop()
        _transport, link = await loop.create_unix_connection(lambda: _Link(self, process),
                                                             sock=parent_sock)
        self.links.append(link)

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        if not self.links:
            if self._closing:
                raise WorkerLost("the hub is shutting down")
            await self.start()
            if not self.links:
                raise WorkerLost("no worker process is running")
        # The first worker with room, not the least busy: a light load stays on
        # one warm process instead of waking every worker in turn.
        link = next((k for k in self.links if len(k.pending) < _ROOM), None) or min(
            self.links, key=lambda k: len(k.pending))
        self._ids += 1
        fut = asyncio.get_running_loop().create_future()
        link.send(self._ids, fut, fn, args)
        return await fut

    def _lost(self, link: _Link, pending: int) -> None:
        if link in self.links:
            self.links.remove(link)
        process = link.process
        threading.Thread(target=process.join, args=(5,), daemon=True).start()  # reap it
        if self._closing:
            return
        # A worker that keeps dying (keys it cannot read, say) is restarted
        # less and less often, not in a loop: 1 s, 2 s, … up to a minute.
        now = time.monotonic()
        self._delay = 0.0 if now - self._last_restart > 60 else min(60.0, max(1.0, 2 * self._delay))
        self._last_restart = now
        log.error("%s process %s exited (code %s) with %d calls in flight; starting another%s",
                  self.name, process.pid, process.exitcode, pending,
                  f" in {self._delay:.0f}s" if self._delay else "")
        self.restarts += 1
        self._starting = asyncio.ensure_future(self._restart(self._delay))

    async def _restart(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if not self._closing:
            await self._start()

    async def close(self, grace: float = 5.0) -> None:
        """Close every socket (workers exit at end of file), then wait for them."""
        self._closing = True
        if self._starting is not None:
            if not self._starting.done():
                self._starting.cancel()  # a restart still waiting out its delay
            await asyncio.gather(self._starting, return_exceptions=True)
        links, self.links = list(self.links), []
        for link in links:
            if link.transport is not None:
                link.transport.close()
        await asyncio.to_thread(_reap, [k.process for k in links], grace)


def _reap(processes: list[Any], grace: float) -> None:
    deadline = time.monotonic() + grace
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)
        _ALL.discard(p)


#: Every worker still running.  Workers ignore SIGTERM (see _worker_main), so
#: multiprocessing's own exit handler, which terminates and then joins
#: daemonic children, would wait forever for one the pool did not close (a
#: hub whose shutdown failed half-way); this handler, registered after it
#: and so run before it, kills them first.
_ALL: set[Any] = set()


@atexit.register
def _kill_leftovers() -> None:
    for p in list(_ALL):
        if p.is_alive():
            p.kill()
            p.join(1.0)
    _ALL.clear()


# -- in the worker ----------------------------------------------------------------

def _die_with_parent(parent: int) -> None:
    """A worker must not outlive the hub (kill -9 leaves no one to close its socket)."""
    try:  # Linux: the kernel kills us when the parent dies
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        os._exit(0)


def _worker_main(sock: socket.socket, parent: int, initializer: Callable[..., Any],
                 initargs: tuple[Any, ...]) -> None:
    _die_with_parent(parent)
    # The hub decides when we stop (it closes our socket): a Ctrl-C or a
    # SIGTERM sent to the whole process group must not kill us first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _NICE:
        os.nice(_NICE)
    initializer(*initargs)
    rfile = sock.makefile("rb", buffering=1 << 16)
    while True:
        header = rfile.read(_HEADER)
        if len(header) < _HEADER:
            os._exit(0)  # the hub closed our socket, or died
        body = rfile.read(int.from_bytes(header, "big"))
        call_id, fn, args = pickle.loads(body)
        try:
            answer = (call_id, True, fn(*args))
        except BaseException as exc:  # the caller gets it, we carry on
            answer = (call_id, False, exc)
        try:
            out = _frame(answer)
        except Exception as exc:  # an unpicklable result or exception
            out = _frame((call_id, False, RuntimeError(f"{type(answer[2]).__name__}: "
                                                       f"{answer[2]} ({exc})")))
        sock.sendall(out)
