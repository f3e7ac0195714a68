"""``lienthong receipts`` against a real ``lienthong serve`` process, and the
offline verification an auditor runs with nothing but the hub's certificate."""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
import urllib.request

import pytest
from support import MAU_A, REPO, VP_UBND

from hub.edxml import samples


def lienthong(data, *args):
    out = subprocess.run([sys.executable, "-m", "hub.cli", *args, "--data", str(data)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    return out.returncode, out.stdout, out.stderr


def call(base, path, token, data=None):
    req = urllib.request.Request(base + path, data=data, method="POST" if data is not None else "GET",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/xml"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.load(resp)


@pytest.mark.slow
def test_query_get_and_verify_offline(live_server, tmp_path):
    base, data, mint = live_server
    # Given: a document sent and acknowledged on the running hub
    sent = call(base, "/v1/envelopes", mint(MAU_A), samples.edoc(MAU_A, [VP_UBND], 1))
    call(base, f"/v1/inbox/{sent['id']}/ack", mint(VP_UBND), b"")

    # When: an auditor queries the receipts of that document (issued just after the commit)
    deadline = time.monotonic() + 15
    while True:
        code, out, err = lienthong(data, "receipts", "query", "--document", sent["id"], "--json",
                                   "--url", base)
        assert code == 0, err
        items = json.loads(out)
        if len(items) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(i["event"], i["recipient"]) for i in items] == [("accepted", None),
                                                             ("delivered", VP_UBND)]
    code, out, err = lienthong(data, "receipts", "query", "--document", sent["id"], "--url", base)
    assert code == 0 and "delivered" in out and "-- 2 receipts" in out
    code, out, err = lienthong(data, "receipts", "query", "--event", "delivered", "--csv",
                               "--url", base)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["id"] for r in rows] == [items[1]["id"]]

    # Then: one receipt downloaded verifies with the hub's certificate alone
    receipt = tmp_path / "receipt.xml"
    code, _, err = lienthong(data, "receipts", "get", items[1]["id"], "-o", str(receipt),
                             "--url", base)
    assert code == 0, err
    assert receipt.read_bytes().startswith(b"<?xml")
    code, out, err = lienthong(data, "receipts", "verify", str(receipt),
                               "--cert", str(data / "keys" / "hub.pem"))
    assert code == 0, err
    assert "valid" in out and sent["id"] in out and VP_UBND in out and "delivered" in out
    # the default certificate is DATA/keys/hub.pem
    code, out, err = lienthong(data, "receipts", "verify", str(receipt))
    assert code == 0, err

    # And: a byte flipped in a signed field is caught, with the reason
    forged = tmp_path / "forged.xml"
    forged.write_bytes(receipt.read_bytes().replace(b"<Event>delivered</Event>",
                                                    b"<Event>delivereD</Event>"))
    code, out, err = lienthong(data, "receipts", "verify", str(forged),
                               "--cert", str(data / "keys" / "hub.pem"))
    assert code == 1 and "invalid" in err and "valid" not in out
    original = receipt.read_bytes()
    at = original.index(b'algorithm="sha256">') + len(b'algorithm="sha256">')  # the digest
    forged.write_bytes(original[:at] + (b"1" if original[at:at + 1] == b"0" else b"0")
                       + original[at + 1:])
    code, out, err = lienthong(data, "receipts", "verify", str(forged),
                               "--cert", str(data / "keys" / "hub.pem"))
    assert code == 1 and "signature" in err

    # unknown receipts are the hub's 404
    code, _, err = lienthong(data, "receipts", "get", "NOSUCH.accepted", "--url", base)
    assert code == 1 and "not_found" in err


def test_verify_without_a_certificate_is_a_usage_error(tmp_path):
    receipt = tmp_path / "r.xml"
    receipt.write_bytes(b"<Receipt/>")
    code, _, err = lienthong(tmp_path / "empty", "receipts", "verify", str(receipt))
    assert code == 2 and "--cert" in err
