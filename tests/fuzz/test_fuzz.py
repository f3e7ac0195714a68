"""The parsing path's fuzz target (tests/fuzz/fuzz_parse.py), run for a bounded time.

libFuzzer runs as a subprocess on a copy of tests/fuzz/corpus/ (it writes the
inputs it finds into its corpus directories, and a crashing input as
``crash-*`` under ``-artifact_prefix``): the test fails on a non-zero exit,
showing the crash and naming the file.  Skipped when atheris is not
installed (``pip install atheris``; it is in the ``test`` extra).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
#: Seconds of fuzzing in the suite; LIENTHONG_FUZZ_TIME for longer local runs.
BUDGET = int(os.environ.get("LIENTHONG_FUZZ_TIME", "60"))


def test_every_seed_is_handled(tmp_path):
    # the seeds alone, once each (fast; the regression inputs among them)
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")
    run = subprocess.run([sys.executable, str(HERE / "fuzz_parse.py"), "-runs=0",
                          f"-artifact_prefix={tmp_path}/", str(HERE / "corpus")],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-4000:]


@pytest.mark.slow
def test_the_parsing_path_survives_fuzzing(tmp_path):
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")
    corpus = tmp_path / "corpus"
    shutil.copytree(HERE / "corpus", corpus)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    run = subprocess.run(
        [sys.executable, str(HERE / "fuzz_parse.py"), f"-max_total_time={BUDGET}",
         "-rss_limit_mb=2048", "-timeout=20", f"-artifact_prefix={artifacts}/", str(corpus)],
        capture_output=True, text=True, timeout=BUDGET + 120, cwd=tmp_path)
    found = sorted(p.name for p in artifacts.iterdir())
    assert run.returncode == 0 and not found, (
        f"the fuzz target crashed (exit {run.returncode}); inputs {found} in {artifacts}: fix the "
        f"hub and add the input to tests/fuzz/corpus/\n{run.stderr[-6000:]}")
