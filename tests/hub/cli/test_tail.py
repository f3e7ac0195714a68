"""``lienthong tail`` against a real ``lienthong serve`` in a subprocess.

The hub is started the way an operator starts it, documents go in through
the HTTP API, and ``tail`` runs as its own process: what is checked is what
a person (or a script reading JSON lines) would see, including a restart of
the hub under a running ``tail -f``.
"""
from __future__ import annotations

import json
import os
import pty
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from serve import Served
from support import AN_BINH, HUB_ID, MAU_A, REPO, VP_UBND, free_port

from hub.edxml import samples

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def tail_cmd(hub: Served, *args: str) -> list[str]:
    return [sys.executable, "-m", "hub.cli", "tail", "--data", str(hub.data), "--url", hub.url,
            *args]


def run_tail(hub: Served, *args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(tail_cmd(hub, *args), cwd=REPO, capture_output=True, text=True,
                          timeout=60, env=env, check=False)


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A hub holding two documents from Mậu A, one from An Bình and one refusal."""
    hub = Served(tmp_path_factory.mktemp("tail") / "var", start_timeout=60)
    hub.start()
    try:
        assert hub.submit(MAU_A, samples.edoc(MAU_A, [VP_UBND], 1))[0] == 202
        assert hub.submit(AN_BINH, samples.edoc(MAU_A, [VP_UBND], 2))[0] == 403
        assert hub.submit(MAU_A, samples.edoc(MAU_A, [VP_UBND], 3))[0] == 202
        assert hub.submit(AN_BINH, samples.edoc(AN_BINH, [VP_UBND], 4))[0] == 202
        yield hub
    finally:
        hub.stop()
        hub.close()


def test_tail_prints_what_exists_as_json_lines_when_piped(served):
    done = run_tail(served)
    assert done.returncode == 0, done.stderr
    events = json_lines(done.stdout)
    assert [e["id"] for e in events] == [1, 2, 3, 4]
    assert [e["kind"] for e in events] == ["accepted", "refused", "accepted", "accepted"]
    assert events[1]["detail"]["code"] == "sender_mismatch"
    assert events[0]["at_iso"].endswith("Z")
    assert run_tail(served, "--json").stdout == done.stdout


def test_tail_filters(served):
    assert [e["id"] for e in json_lines(run_tail(served, "--kind", "refused").stdout)] == [2]
    assert [e["id"] for e in json_lines(run_tail(served, "--organ", MAU_A).stdout)] == [1, 3]
    assert [e["id"] for e in json_lines(run_tail(served, "--state", "queued").stdout)] == [1, 3, 4]
    assert [e["id"] for e in json_lines(run_tail(served, "--after", "2").stdout)] == [3, 4]
    first = json_lines(run_tail(served).stdout)[0]["message_id"]
    assert [e["id"] for e in json_lines(run_tail(served, "--message", first).stdout)] == [1]


def test_tail_text_lines(served):
    done = run_tail(served, "--text", "--organ", MAU_A)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d #1 accepted queued [0-9A-Z]{26} "
                        rf"{re.escape(MAU_A)} kind=edoc doc=.* to={re.escape(VP_UBND)} .*",
                        lines[0]), lines[0]
    assert not ANSI.search(done.stdout)  # not a terminal: no colour
    refused = run_tail(served, "--text", "--kind", "refused").stdout
    assert f"#2 refused - - {AN_BINH} code=sender_mismatch message=\"" in refused


def test_tail_colours_a_terminal_unless_no_color(served):
    def on_tty(env_extra: dict[str, str]) -> str:
        env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
        env.update(TERM="xterm", **env_extra)
        leader, follower = pty.openpty()
        try:
            # (a few short lines: they fit the terminal's buffer before we read it)
            proc = subprocess.run(tail_cmd(served), cwd=REPO, stdout=follower,
                                  stderr=subprocess.PIPE, timeout=60, env=env, check=False)
            assert proc.returncode == 0, proc.stderr
            os.close(follower)
            follower = -1
            chunks = []
            while True:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the terminal's other side is closed
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            return b"".join(chunks).decode()
        finally:
            os.close(leader)
            if follower != -1:
                os.close(follower)

    coloured = on_tty({})
    assert "\x1b[36maccepted queued\x1b[0m" in coloured
    assert "\x1b[31mrefused -\x1b[0m" in coloured
    plain = on_tty({"NO_COLOR": "1"})
    assert not ANSI.search(plain) and "#2 refused -" in plain


def test_tail_errors_are_clear(served, tmp_path):
    bad_token = run_tail(served, "--token", "lt1.bad.token")
    assert bad_token.returncode == 2
    assert "bad_token" in bad_token.stderr and "Traceback" not in bad_token.stderr
    agency = served.mint(MAU_A)
    forbidden = run_tail(served, "--token", agency)
    assert forbidden.returncode == 2 and "forbidden" in forbidden.stderr
    bad_state = run_tail(served, "--state", "bogus")
    assert bad_state.returncode == 2 and "invalid choice: 'bogus'" in bad_state.stderr
    assert "'queued', 'active', 'delivered'" in bad_state.stderr
    nobody = run_tail(served, "--url", f"http://127.0.0.1:{free_port()}")  # the last --url wins
    assert nobody.returncode == 2
    assert "cannot read events" in nobody.stderr and "Traceback" not in nobody.stderr


class LineReader:
    """Lines of a subprocess' pipe, read by a thread so that waits can time out."""

    def __init__(self, pipe) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, args=(pipe,), daemon=True).start()

    def _pump(self, pipe) -> None:
        for line in pipe:
            self.lines.put(line)

    def take(self, n: int, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            try:
                out.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"got {len(out)} of {n} lines in {timeout}s: {out}") from None
        return out


def test_tail_follow_resumes_across_a_hub_restart(tmp_path):
    hub = Served(tmp_path / "var", start_timeout=60)
    follower: subprocess.Popen[str] | None = None
    try:
        hub.start()
        for n in (1, 2):
            assert hub.submit(MAU_A, samples.edoc(MAU_A, [VP_UBND], n))[0] == 202
        # Given: tail -f has printed what existed and is following
        follower = subprocess.Popen(tail_cmd(hub, "-f", "--json"), cwd=REPO, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out = LineReader(follower.stdout)
        seen = out.take(2)
        assert hub.submit(MAU_A, samples.edoc(MAU_A, [VP_UBND], 3))[0] == 202
        seen += out.take(1)  # live

        # When: the hub restarts under it (the open stream must not hold the stop up)
        hub.stop()
        assert hub.stop_seconds < 10
        hub.start()
        for n in (4, 5):
            assert hub.submit(MAU_A, samples.edoc(MAU_A, [VP_UBND], n))[0] == 202
        seen += out.take(2)

        # Then: every event exactly once, in order: what the log holds, no more, no less
        followed = [json.loads(line)["id"] for line in seen]
        assert followed == [1, 2, 3, 4, 5]
        # nothing printed twice: the line after them is the next event (no fixed wait)
        assert hub.submit(MAU_A, samples.edoc(MAU_A, [VP_UBND], 6))[0] == 202
        assert [json.loads(line)["id"] for line in out.take(1)] == [6], "tail printed events twice"
        assert out.lines.empty(), "tail printed events twice"
        assert [e["id"] for e in json_lines(run_tail(hub).stdout)] == followed + [6]

        # And: Ctrl-C ends it quietly with 130
        follower.send_signal(signal.SIGINT)
        assert follower.wait(15) == 130
        err = follower.stderr.read()
        assert "reconnecting" in err
        assert "Traceback" not in err and "Unclosed" not in err
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait(5)
        hub.stop()
        hub.close()


def test_tail_without_follow_does_not_need_the_hub_id_when_given_a_token(served):
    token = served.mint(HUB_ID, "auditor")
    done = run_tail(served, "--token", token, "--kind", "refused")
    assert done.returncode == 0, done.stderr
    assert [e["id"] for e in json_lines(done.stdout)] == [2]


def test_sse_parser_follows_the_event_stream_rules():
    from hub.cli.tail import SSEParser
    parser = SSEParser()
    stream = (b"\xef\xbb\xbfretry: 2000\r\n\r\n: keepalive\r\n\r\n"
              b"id: 7\r\nevent: state\r\ndata: {\"a\":\r\ndata:1}\r\n\r\n"
              b"id: 8\n\n"                      # an id alone moves the position, dispatches nothing
              b"data: plain\r\r"                # CR line endings; default event type
              b"field without colon\n:comment\nevent:x\ndata:  two spaces\n\n")
    got = []
    for i in range(len(stream)):  # one byte at a time: CRLF split across reads included
        got += parser.feed(stream[i:i + 1])
    assert [(m.event, m.data, m.id) for m in got] == [
        ("state", '{"a":\n1}', "7"), ("message", "plain", "8"), ("x", " two spaces", "8")]
    assert parser.retry_ms == 2000 and parser.last_id == "8"
