"""The hub's signed receipts: build, verify, refuse tampering, schema, golden form."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from pathlib import Path

import pytest
from lxml import etree

from hub.errors import ValidationError
from hub.crypto.keys import HubKeys, init_dev_keys, issue_cert, load_hub_keys, make_ca
from hub.receipts.format import (
    RNS,
    ReceiptFields,
    ReceiptLink,
    build_receipt,
    build_receipts,
    canonical_body,
    validate_receipt_schema,
    verify_receipt,
)
from hub.crypto.signing import DS_SIGNATURE

HUB = "000.99.48.H63"
GOLDEN = Path(__file__).resolve().parents[2] / "golden"

ACCEPTED = ReceiptFields(
    receipt_id="rcpt-01HXA5K3J8Q2", message_id="msg-01HXA5K3J8Q0",
    document_sha256="3f0a6c1b9e2d4f5a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a",
    document_id="000.01.48.H63,2024/05/01,125/UBND-VP", sender="000.01.48.H63",
    event="accepted", state="queued", time=dt.datetime(2024, 5, 1, 1, 2, 3, tzinfo=dt.UTC),
    sender_signature="valid", hub_id=HUB)

DELIVERED = dataclasses.replace(
    ACCEPTED, receipt_id="rcpt-01HXA5K3J8Q3", event="delivered", state="delivered",
    recipient="000.31.48.H63", business_status="03",
    time=dt.datetime(2024, 5, 1, 8, 2, 3, 250000, tzinfo=dt.timezone(dt.timedelta(hours=7))))


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys")
    init_dev_keys(path, HUB, ["000.01.48.H63"])
    return path


@pytest.fixture(scope="module")
def hub_keys(keys_dir: Path) -> HubKeys:
    return load_hub_keys(keys_dir / "hub.key", keys_dir / "hub.pem")


def refused(xml: bytes, hub_keys: HubKeys) -> str:
    with pytest.raises(ValidationError) as caught:
        verify_receipt(xml, hub_keys.cert)
    assert caught.value.code == "receipt_invalid"
    return caught.value.message


@pytest.mark.parametrize("fields", [ACCEPTED, DELIVERED], ids=["accepted", "delivered"])
def test_round_trip(fields: ReceiptFields, hub_keys: HubKeys) -> None:
    xml = build_receipt(fields, hub_keys)
    got = verify_receipt(xml, hub_keys.cert)
    assert got == fields
    assert got.time.tzinfo is not None


def test_times_are_written_in_utc(hub_keys: HubKeys) -> None:
    xml = build_receipt(DELIVERED, hub_keys)
    assert b"<Time>2024-05-01T01:02:03.250000Z</Time>" in xml


def test_built_receipts_are_schema_valid_and_signed_last(hub_keys: HubKeys) -> None:
    root = etree.fromstring(build_receipt(DELIVERED, hub_keys))
    validate_receipt_schema(root)
    assert root.tag == f"{{{RNS}}}Receipt" and root[-1].tag == DS_SIGNATURE


def test_batch_builds_one_standalone_receipt_each(hub_keys: HubKeys) -> None:
    batch = [dataclasses.replace(ACCEPTED, receipt_id=f"rcpt-{i}") for i in range(20)]
    out = build_receipts(batch, hub_keys)
    assert [verify_receipt(x, hub_keys.cert).receipt_id for x in out] == \
        [f"rcpt-{i}" for i in range(20)]


@pytest.mark.parametrize("old, new", [
    (b"<Event>delivered</Event>", b"<Event>failed</Event>"),
    (b"<State>delivered</State>", b"<State>hold</State>"),
    (b"<Recipient>000.31.48.H63</Recipient>", b"<Recipient>000.02.48.H63</Recipient>"),
    (b"<BusinessStatus>03</BusinessStatus>", b"<BusinessStatus>02</BusinessStatus>"),
    (b"3f0a6c1b", b"3f0a6c1c"),
    (b"T01:02:03.25", b"T01:02:04.25"),
    (b"<SenderSignature>valid", b"<SenderSignature>unsigned"),
    (b"<Recipient>000.31.48.H63</Recipient>", b""),
])
def test_tampering_with_any_field_is_refused(old: bytes, new: bytes, hub_keys: HubKeys) -> None:
    xml = build_receipt(DELIVERED, hub_keys)
    assert old in xml
    tampered = xml.replace(old, new)
    validate_receipt_schema(etree.fromstring(tampered))   # still well-formed and valid…
    assert "Digest mismatch" in refused(tampered, hub_keys)  # …but not what was signed


def test_another_certificate_is_refused(keys_dir: Path, hub_keys: HubKeys) -> None:
    organ = load_hub_keys(keys_dir / "orgs" / "000.01.48.H63.key",
                          keys_dir / "orgs" / "000.01.48.H63.pem")
    forged = build_receipt(ACCEPTED, organ)          # a real certificate, not the hub's
    assert "bad signature" in refused(forged, hub_keys)


def test_expired_hub_certificate_is_refused_unless_audited_at_its_time(keys_dir: Path) -> None:
    ca_key, ca = make_ca("old hub CA")
    ended = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    key, cert = issue_cert(ca_key, ca, HUB, not_before=ended - dt.timedelta(hours=5),
                           not_after=ended)
    old_hub = HubKeys.from_objects(key, cert)
    xml = build_receipt(ACCEPTED, old_hub)
    with pytest.raises(ValidationError, match="expired"):
        verify_receipt(xml, cert)
    assert verify_receipt(xml, cert, at=ended - dt.timedelta(hours=1)) == ACCEPTED


@pytest.mark.parametrize("change, message", [
    (lambda r: r.remove(r.find(DS_SIGNATURE)), "receipt.xsd"),              # unsigned
    (lambda r: r.remove(r.find(f"{{{RNS}}}HubId")), "receipt.xsd"),         # missing field
    (lambda r: r.find(f"{{{RNS}}}Event").__setattr__("text", "lost"), "receipt.xsd"),
    (lambda r: r.find(f"{{{RNS}}}Time").__setattr__("text", "2024-05-01T08:02:03+07:00"),
     "receipt.xsd"),                                                         # not UTC
    (lambda r: r.set("version", "2"), "receipt.xsd"),
])
def test_schema_is_checked_first(change, message: str, hub_keys: HubKeys) -> None:
    root = etree.fromstring(build_receipt(ACCEPTED, hub_keys))
    change(root)
    assert message in refused(etree.tostring(root), hub_keys)


def test_a_second_signature_inside_the_first_is_refused(hub_keys: HubKeys) -> None:
    root = etree.fromstring(build_receipt(ACCEPTED, hub_keys))
    sig = root.find(DS_SIGNATURE)
    obj = etree.SubElement(sig, "{http://www.w3.org/2000/09/xmldsig#}Object")
    obj.append(etree.fromstring(etree.tostring(sig)))
    assert "exactly one ds:Signature" in refused(etree.tostring(root), hub_keys)


def test_malformed_and_dtd_input_is_refused(hub_keys: HubKeys) -> None:
    assert "malformed" in refused(b"<Receipt", hub_keys)
    xml = build_receipt(ACCEPTED, hub_keys).replace(
        b"<Receipt", b'<!DOCTYPE Receipt [<!ENTITY x "y">]><Receipt', 1)
    refused(xml, hub_keys)


def test_builder_refuses_impossible_fields(hub_keys: HubKeys) -> None:
    with pytest.raises(ValueError, match="timezone"):
        build_receipt(dataclasses.replace(ACCEPTED, time=dt.datetime(2024, 5, 1)), hub_keys)
    with pytest.raises(ValueError, match="event"):
        build_receipt(dataclasses.replace(ACCEPTED, event="lost"), hub_keys)
    with pytest.raises(ValueError, match="hex"):
        build_receipt(dataclasses.replace(ACCEPTED, document_sha256="ABC"), hub_keys)


@pytest.mark.parametrize("name", ["receipt_accepted", "receipt_delivered"])
def test_canonical_body_golden(name: str) -> None:
    # .in: the fields as JSON; .ref: exclusive c14n of the unsigned receipt.
    raw = json.loads((GOLDEN / f"{name}.in").read_text())
    raw["time"] = dt.datetime.fromisoformat(raw["time"])
    got = canonical_body(ReceiptFields(**raw))
    ref = GOLDEN / f"{name}.ref"
    if os.environ.get("UPDATE_GOLDEN"):
        ref.write_bytes(got)
    assert got == ref.read_bytes()


REVOKED = dataclasses.replace(
    DELIVERED, receipt_id="rcpt-01HXA5K3J8Q4", standing="revoked",
    links=(ReceiptLink("revoked_by", "msg-01HXA5K3J8Q9", "000.01.48.H63,2024/05/02,126/UBND-VP"),
           ReceiptLink("updated_by", "msg-01HXA5K3J8QA", None)))


def test_standing_and_links_round_trip(hub_keys: HubKeys) -> None:
    xml = build_receipt(REVOKED, hub_keys)
    assert verify_receipt(xml, hub_keys.cert) == REVOKED
    assert b"<Standing>revoked</Standing><Link " in xml
    # and a receipt without them (every receipt before them) is unchanged
    assert b"Standing" not in build_receipt(DELIVERED, hub_keys)


def test_unknown_standing_or_link_type_is_never_signed(hub_keys: HubKeys) -> None:
    with pytest.raises(ValueError):
        build_receipt(dataclasses.replace(REVOKED, standing="gone"), hub_keys)
    with pytest.raises(ValueError):
        build_receipt(dataclasses.replace(REVOKED, links=(ReceiptLink("eats", "m"),)), hub_keys)
