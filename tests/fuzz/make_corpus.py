"""Write the fuzz target's seed inputs into tests/fuzz/corpus/ (run once; the files are committed).

    python tests/fuzz/make_corpus.py

Small valid messages (an edoc, a status, an edoc signed by a throw-away
development key, an edoc hop-signed by a throw-away hub key) and small
invalid ones (truncated, a DTD, the wrong namespace, a bad OrganId, a
missing element, UTF-16, a deep tree).
"""
from __future__ import annotations

import datetime as dt
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from hub.crypto import keys as devkeys  # noqa: E402
from hub.crypto.signing import sign_envelope, sign_hop  # noqa: E402
from hub.crypto.keys import load_hub_keys  # noqa: E402
from hub.edxml import samples  # noqa: E402

A, B, DEPT, HUB = "000.01.48.H63", "000.02.48.H63", "000.00.02.H63", "000.99.48.H63"
CORPUS = Path(__file__).resolve().parent / "corpus"


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    edoc = samples.edoc(A, [B, DEPT], "fz1", size=700)
    keys = Path(tempfile.mkdtemp(prefix="lt-corpus-"))
    devkeys.init_dev_keys(keys, HUB, [A])
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from cryptography import x509
    org_key = load_pem_private_key((keys / "orgs" / f"{A}.key").read_bytes(), None)
    org_cert = x509.load_pem_x509_certificate((keys / "orgs" / f"{A}.pem").read_bytes())
    hub = load_hub_keys(keys / "hub.key", keys / "hub.pem")
    now = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.timezone.utc)
    seeds = {
        "edoc.xml": edoc,
        "status.xml": samples.status(B, A, f"{A},2026/11/20,fz1/UBND", "03"),
        "edoc_signed.xml": sign_envelope(edoc, org_key, org_cert),
        "edoc_hop.xml": sign_hop(edoc, hub_id=HUB, keys=hub, now=now),
        "truncated.xml": edoc[: len(edoc) // 2],
        "dtd.xml": b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "y">]><a>&x;</a>',
        "wrong_namespace.xml": edoc.replace(samples.NS.encode(), b"urn:other"),
        "bad_organ.xml": edoc.replace(A.encode(), b"not-an-organ", 1),
        "missing_subject.xml": edoc.replace(b"<edXML:Subject>", b"<edXML:Subjec>", 1)
                                   .replace(b"</edXML:Subject>", b"</edXML:Subjec>", 1),
        "utf16.xml": edoc.decode().replace('encoding="UTF-8"', 'encoding="UTF-16"').encode("utf-16"),
        "deep.xml": b"<a>" * 80 + b"</a>" * 80,
        "empty.xml": b"",
    }
    for name, raw in seeds.items():
        (CORPUS / name).write_bytes(raw)
        print(f"{name}: {len(raw)} bytes")


if __name__ == "__main__":
    main()
