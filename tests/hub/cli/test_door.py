"""``lienthong door credentials``: made on first use, kept, rotated; private on disk."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from hub.door.credentials import credentials_path, read_credentials
from support import MAU_A, REPO, SO_NOIVU, VP_UBND


def door(*args, data, check=True):
    out = subprocess.run([sys.executable, "-m", "hub.cli", "door", "credentials", *args,
                          "--data", str(data)], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_first_use_creates_then_keeps_then_rotates(tmp_path):
    data = tmp_path / "var"
    first = json.loads(door(MAU_A, "--json", data=data).stdout)
    assert set(first) == {"endpoint", "system_id", "secret"}
    assert first["endpoint"] == "http://127.0.0.1:8780/vxp"
    assert first["system_id"] == MAU_A
    assert len(first["secret"]) == 44 and first["secret"].endswith("=")
    # --json prints exactly one JSON object and nothing else
    out = door(MAU_A, "--json", data=data).stdout
    assert out.count("\n") == 1 and json.loads(out) == first
    # the plain form prints the same three values
    text = door(MAU_A, data=data).stdout
    assert f"endpoint   {first['endpoint']}" in text and first["secret"] in text
    rotated = json.loads(door(MAU_A, "--json", "--rotate", data=data).stdout)
    assert rotated["system_id"] == MAU_A and rotated["secret"] != first["secret"]
    # another organisation's credentials leave the first one's alone
    other = json.loads(door(VP_UBND, "--json", data=data).stdout)
    creds = read_credentials(credentials_path(data))
    assert {c.system_id: c.secret for c in creds.values()} == {
        MAU_A: rotated["secret"], VP_UBND: other["secret"]}
    path = credentials_path(data)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700


def test_endpoint_from_the_configuration_or_url(tmp_path):
    conf = tmp_path / "hub.toml"
    conf.write_text('door_endpoint = "https://hub.vanyen.example/vxp"\n')
    out = json.loads(door(MAU_A, "--json", "-c", str(conf), data=tmp_path / "var").stdout)
    assert out["endpoint"] == "https://hub.vanyen.example/vxp"
    out = json.loads(door(MAU_A, "--json", "--url", "http://10.0.0.5:8780/",
                          data=tmp_path / "var").stdout)
    assert out["endpoint"] == "http://10.0.0.5:8780/vxp"


def test_refuses_organisations_without_a_mailbox(tmp_path):
    out = door(SO_NOIVU, data=tmp_path / "var", check=False)
    assert out.returncode == 2 and "department" in out.stderr
    out = door("123.45.67.Z99", data=tmp_path / "var", check=False)
    assert out.returncode == 2 and "not in the directory" in out.stderr
    assert not credentials_path(tmp_path / "var").exists()
