"""Properties of cleanup, through the HTTP API (the aiohttp test client).

* Any well-formed envelope (hub/edxml/samples.py with random field values:
  unicode subjects, sizes, recipient sets, attachment bytes) is accepted
  and stored byte for byte.
* Any mutation of a valid envelope (byte flips, truncation, an element
  deleted or duplicated, and combinations) is answered 2xx or 4xx, never
  5xx, and a 4xx carries a stable code the hub defines (hub/errors.py and
  the ``code="..."`` literals under hub/).
"""
from __future__ import annotations

import ast
import base64
import copy
import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from lxml import etree

from hub.edxml import samples
from support import AN_BINH, MAU_A, REPO, SO_NOIVU, VP_UBND, XML

LOCAL = (MAU_A, AN_BINH, VP_UBND, "000.03.48.H63", "000.04.48.H63")
PEERS = (SO_NOIVU, "000.00.44.H63")  #: a provincial department, a unit of a peer district
NUMBERS = itertools.count(1)
#: XML 1.0 characters a producer may put in a text field (no controls, no surrogates)
TEXT = st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff")


def known_codes() -> set[str]:
    """Every stable error code the hub's source names: ``code = "..."`` class
    attributes (hub/errors.py), ``code="..."`` arguments, and string literals
    passed where a function of the same module (or a class's ``__init__``)
    takes a parameter named ``code`` (helpers such as ``_error(msg, "missing_element")``)."""
    codes: set[str] = set()
    for path in (REPO / "hub").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        takes: dict[str, int] = {}  # callable name -> position of its "code" parameter
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                        names = [a.arg for a in item.args.args][1:]
                        if "code" in names:
                            takes[node.name] = names.index("code")
            elif isinstance(node, ast.FunctionDef):
                names = [a.arg for a in node.args.args]
                if "code" in names:
                    takes[node.name] = names.index("code") - (names[:1] in (["self"], ["cls"]))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and any(
                    isinstance(t, ast.Name) and t.id == "code" for t in node.targets):
                values = [node.value]
            elif isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                values = [k.value for k in node.keywords if k.arg == "code"]
                if name in takes and len(node.args) > takes[name]:
                    values.append(node.args[takes[name]])
            else:
                continue
            codes |= {v.value for v in values if isinstance(v, ast.Constant)
                      and isinstance(v.value, str) and re.fullmatch(r"[a-z0-9_]+", v.value)}
    return codes


KNOWN = known_codes()


@pytest.fixture
def settings(make_settings):
    return make_settings(rate_limit_per_address=0, rate_limit_per_identity=0)


def with_attachment(raw: bytes, blob: bytes, wrap: bool) -> bytes:
    """``raw`` with its attachment's base64 replaced by ``blob``'s (wrapped in
    76-character CRLF lines, as many producers do, when ``wrap``)."""
    text = base64.b64encode(blob).decode("ascii")
    if wrap:
        text = "\r\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    start = raw.index(b"<ContentTransferEncoded>") + len(b"<ContentTransferEncoded>")
    end = raw.index(b"</ContentTransferEncoded>")
    return raw[:start] + text.encode("ascii") + raw[end:]


HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@hsettings(max_examples=60, deadline=None, suppress_health_check=HEALTH)
@given(sender=st.sampled_from(LOCAL),
       to=st.sets(st.sampled_from(LOCAL + PEERS), min_size=1, max_size=5),
       subject=st.text(TEXT, min_size=1, max_size=300).filter(lambda s: s.strip()),
       size=st.integers(600, 48_000),
       attachment=st.none() | st.binary(min_size=1, max_size=6000),
       wrap=st.booleans())
async def test_well_formed_envelopes_are_accepted_and_stored_byte_for_byte(
        client, hub, auth, sender, to, subject, size, attachment, wrap):
    recipients = sorted(to - {sender}) or [SO_NOIVU]
    raw = samples.edoc(sender, recipients, f"p{next(NUMBERS)}", subject=subject, size=size)
    if attachment is not None:
        raw = with_attachment(raw, attachment, wrap)
    resp = await client.post("/v1/envelopes", data=raw, headers={**auth(sender), **XML})
    body = await resp.json()
    assert resp.status == 202, body
    assert sorted(r["organ"] for r in body["recipients"]) == recipients
    env = await hub.spool.envelope(body["id"])
    assert await hub.spool.payload(env["sha256"]) == raw
    assert env["subject"] == subject.strip() or env["subject"] == subject
    # a mailbox recipient gets exactly the bytes that were sent
    mailbox = next((r for r in recipients if r in LOCAL), None)
    if mailbox is not None:
        got = await client.get(f"/v1/inbox/{body['id']}", headers=auth(mailbox))
        assert got.status == 200 and await got.read() == raw


BASE = samples.edoc(MAU_A, [AN_BINH, SO_NOIVU], "base", size=1500)
ELEMENTS = sum(1 for _ in etree.fromstring(BASE).iter())


def edit_element(raw: bytes, index: int, how: str) -> bytes:
    """``raw`` with its ``index``-th element deleted or duplicated (serialised again)."""
    root = etree.fromstring(raw)
    nodes = list(root.iter())
    node = nodes[index % len(nodes)]
    parent = node.getparent()
    if parent is None:
        return b""
    if how == "delete":
        parent.remove(node)
    else:
        node.addnext(copy.deepcopy(node))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


mutation = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, len(BASE) - 1), st.integers(0, 255)),
                                        min_size=1, max_size=8)),
    st.tuples(st.just("truncate"), st.integers(0, len(BASE) - 1)),
    st.tuples(st.sampled_from(("delete", "duplicate")), st.integers(0, ELEMENTS - 1)),
)


def mutate(raw: bytes, steps: list) -> bytes:
    for kind, arg in steps:
        if kind == "flip":
            data = bytearray(raw)
            for pos, byte in arg:
                if data:
                    data[pos % len(data)] = byte
            raw = bytes(data)
        elif kind == "truncate":
            raw = raw[:arg % (len(raw) + 1)]
        else:
            try:
                raw = edit_element(raw, arg, kind)
            except etree.XMLSyntaxError:  # already broken by an earlier step: leave it so
                pass
    return raw


_SIGNED: dict[str, bytes] = {}


def signed_base(dev_keys) -> bytes:
    """BASE signed with XML-DSig by its sender's development key (KeyInfo with
    the certificate): mutations then reach the signature's checks too."""
    if "raw" not in _SIGNED:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from hub.crypto.signing import sign_envelope
        key = serialization.load_pem_private_key((dev_keys / "orgs" / f"{MAU_A}.key").read_bytes(), None)
        cert = x509.load_pem_x509_certificate((dev_keys / "orgs" / f"{MAU_A}.pem").read_bytes())
        _SIGNED["raw"] = sign_envelope(BASE, key, cert)
    return _SIGNED["raw"]


@hsettings(max_examples=300, deadline=None, suppress_health_check=HEALTH)
@given(steps=st.lists(mutation, min_size=1, max_size=3), signed=st.booleans())
async def test_mutated_envelopes_get_a_stable_answer_never_a_server_error(client, auth, dev_keys,
                                                                          steps, signed):
    raw = mutate(signed_base(dev_keys) if signed else BASE, steps)
    resp = await client.post("/v1/envelopes", data=raw, headers={**auth(MAU_A), **XML})
    assert 200 <= resp.status < 500, (resp.status, await resp.text())
    if resp.status >= 400:
        body = await resp.json()
        assert body["error"]["code"] in KNOWN, body


def test_the_known_codes_are_collected():
    assert {"invalid_envelope", "forbidden", "not_found", "sender_mismatch",
            "duplicate_conflict"} <= KNOWN
