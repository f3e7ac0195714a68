"""A user's mistake gets one line saying what was wrong and what to do, never a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from support import MAU_A, REPO, free_port


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mistakes")
    (root / "bad.toml").write_text("listen = [\n")
    (root / "notafile").write_text("")
    data = root / "data"
    subprocess.run([sys.executable, "-m", "hub.cli", "token", "--examples", "--data", str(data)],
                   cwd=REPO, check=True, capture_output=True, timeout=60)
    return root


NOBODY = f"http://127.0.0.1:{free_port()}"

CASES = {
    "submit a missing file": (["submit", "{root}/missing.xml", "--as", MAU_A, "--data", "{root}/data"],
                              "cannot read {root}/missing.xml: No such file or directory"),
    "submit a directory": (["submit", "{root}", "--as", MAU_A, "--data", "{root}/data"],
                           "Is a directory"),
    "submit as an unknown organisation": (["submit", "{root}/bad.toml", "--as", "999.99.99.X99",
                                           "--data", "{root}/data"], "not in the directory"),
    "bad TOML": (["-c", "{root}/bad.toml", "conf"], "is not valid TOML"),
    "a config that is a directory": (["-c", "{root}", "conf"], "cannot read configuration file"),
    "a missing config": (["queue", "list", "-c", "{root}/missing.toml"], "does not exist"),
    "a port out of range": (["serve", "--listen", "127.0.0.1:99999", "--data", "{root}/s"],
                            "port 0 to 65535"),
    "a data directory under a file": (["token", MAU_A, "--data", "{root}/notafile/d"],
                                      "Not a directory"),
    "an unreachable hub": (["queue", "show", "01ABC", "--data", "{root}/data", "--url", NOBODY],
                           "cannot reach the hub at " + NOBODY),
    "a missing export": (["audit", "verify", "{root}/missing.jsonl", "--data", "{root}/data"],
                         "no export at"),
    "no database": (["audit", "verify", "--db", "--data", "{root}/data", "--cert", "{root}/missing.pem"],
                    "cannot read the hub certificate {root}/missing.pem: No such file"),
    "a missing receipt": (["receipts", "verify", "{root}/missing.xml", "--cert", "{root}/bad.toml"],
                          "lienthong receipts verify"),
    "an unknown state": (["queue", "list", "--state", "held", "--data", "{root}/data"],
                         "choose from queued, active, delivered, deferred, failed, hold, corrupt"),
    "an unknown kind": (["directory", "list", "--kind", "peer"], "invalid choice: 'peer'"),
}


@pytest.mark.parametrize("case", CASES)
def test_mistakes_are_one_clear_line(files, case):
    argv, expected = CASES[case]
    argv = [a.format(root=files) for a in argv]
    out = subprocess.run([sys.executable, "-m", "hub.cli", *argv], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr
    assert expected.format(root=files) in out.stderr, out.stderr
    assert not (files / "s").exists()


def test_an_unknown_id_is_named(live_server):
    base, data, _mint = live_server
    out = subprocess.run([sys.executable, "-m", "hub.cli", "queue", "show", "01NOSUCH", "--data",
                          str(data), "--url", base], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "not_found: no message id or DocumentId '01NOSUCH' in the spool" in out.stderr
