"""Development keys, the hub's key loading, and the trust store."""
from __future__ import annotations

import datetime as dt
import os
import stat
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from hub.errors import ConfigError
from hub.crypto.keys import (
    HubKeys,
    TrustStore,
    cert_names,
    init_dev_keys,
    issue_cert,
    load_hub_keys,
    make_ca,
)

HUB = "000.99.48.H63"
MAU_A = "000.01.48.H63"
VP_UBND = "000.31.48.H63"


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _snapshot(keys_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(keys_dir)): p.read_bytes()
            for p in sorted(keys_dir.rglob("*")) if p.is_file()}


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    init_dev_keys(tmp_path / "keys", HUB, [MAU_A, VP_UBND])
    return tmp_path / "keys"


def test_init_dev_keys_writes_the_layout_with_private_keys_0600(keys_dir: Path) -> None:
    expected = {"ca.pem", "ca.key", "hub.pem", "hub.key",
                f"orgs/{MAU_A}.pem", f"orgs/{MAU_A}.key",
                f"orgs/{VP_UBND}.pem", f"orgs/{VP_UBND}.key"}
    assert set(_snapshot(keys_dir)) == expected  # and no temporary files left behind
    for name in expected:
        mode = stat.S_IMODE(os.stat(keys_dir / name).st_mode)
        assert mode == (0o600 if name.endswith(".key") else 0o640), name  # private data dir


def test_dev_certificates_name_the_organ_and_chain_to_the_dev_ca(keys_dir: Path) -> None:
    ca = _cert(keys_dir / "ca.pem")
    hub = _cert(keys_dir / "hub.pem")
    org = _cert(keys_dir / "orgs" / f"{MAU_A}.pem")
    assert hub.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == HUB
    assert org.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == MAU_A
    assert org.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == MAU_A
    org.verify_directly_issued_by(ca)
    hub.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_init_dev_keys_is_idempotent_and_force_recreates(keys_dir: Path) -> None:
    before = _snapshot(keys_dir)
    report = init_dev_keys(keys_dir, HUB, [MAU_A, VP_UBND])
    assert report.created == [] and _snapshot(keys_dir) == before

    report = init_dev_keys(keys_dir, HUB, [MAU_A, VP_UBND, "000.02.48.H63"])
    assert report.created == ["orgs/000.02.48.H63"]

    report = init_dev_keys(keys_dir, HUB, [MAU_A], force=True)
    after = _snapshot(keys_dir)
    assert set(report.created) == {"ca", "hub", f"orgs/{MAU_A}"}
    assert after["ca.key"] != before["ca.key"]


def test_a_new_ca_reissues_every_certificate(keys_dir: Path) -> None:
    # Given the CA pair was lost, when keys are initialised again,
    # then every certificate is re-issued by the new CA (old ones would not chain).
    (keys_dir / "ca.key").unlink()
    report = init_dev_keys(keys_dir, HUB, [MAU_A, VP_UBND])
    assert set(report.created) == {"ca", "hub", f"orgs/{MAU_A}", f"orgs/{VP_UBND}"}
    _cert(keys_dir / "orgs" / f"{MAU_A}.pem").verify_directly_issued_by(
        _cert(keys_dir / "ca.pem"))


def test_init_dev_keys_for_a_district_is_fast(tmp_path: Path) -> None:
    organs = [f"{i:03d}.{j:02d}.48.H63" for i in range(13) for j in range(10)]
    start = time.perf_counter()
    report = init_dev_keys(tmp_path, HUB, organs)
    assert len(report.created) == 132
    assert time.perf_counter() - start < 5


def test_init_dev_keys_refuses_organ_ids_that_are_not_file_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        init_dev_keys(tmp_path, HUB, ["../evil"])


def test_load_hub_keys_from_pem(keys_dir: Path) -> None:
    keys = load_hub_keys(keys_dir / "hub.key", keys_dir / "hub.pem", ca_file=keys_dir / "ca.pem")
    assert isinstance(keys, HubKeys)
    assert cert_names(keys.cert) >= {HUB}
    assert keys.cert_der == keys.cert.public_bytes(serialization.Encoding.DER)
    assert keys.cert_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert keys.ca_cert == _cert(keys_dir / "ca.pem")


def test_load_hub_keys_from_pkcs12_with_password(keys_dir: Path, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key((keys_dir / "hub.key").read_bytes(), None)
    bundle = pkcs12.serialize_key_and_certificates(
        b"hub", key, _cert(keys_dir / "hub.pem"), [_cert(keys_dir / "ca.pem")],  # type: ignore[arg-type]
        serialization.BestAvailableEncryption(b"s3cret"))
    (tmp_path / "hub.p12").write_bytes(bundle)
    keys = load_hub_keys(None, None, pkcs12_file=tmp_path / "hub.p12", password=b"s3cret")
    assert keys.cert == _cert(keys_dir / "hub.pem")
    assert keys.ca_cert == _cert(keys_dir / "ca.pem")
    with pytest.raises(ConfigError):
        load_hub_keys(None, None, pkcs12_file=tmp_path / "hub.p12", password=b"wrong")


def test_load_hub_keys_refuses_a_mismatched_or_missing_pair(keys_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not match"):
        load_hub_keys(keys_dir / "hub.key", keys_dir / "orgs" / f"{MAU_A}.pem")
    with pytest.raises(ConfigError):
        load_hub_keys(keys_dir / "nope.key", keys_dir / "hub.pem")


def test_trust_pins_dev_certificates(keys_dir: Path) -> None:
    trust = TrustStore.build([(MAU_A, None, None), (VP_UBND, None, None), ("000.02.48.H63", None, None)],
                             dev_keys_dir=keys_dir)
    mau_a = _cert(keys_dir / "orgs" / f"{MAU_A}.pem")
    assert trust.cert_for(MAU_A) == mau_a
    assert trust.check_signer(MAU_A, mau_a)
    assert not trust.check_signer(VP_UBND, mau_a)          # another organ's cert
    assert "000.02.48.H63" not in trust                    # no dev cert, no CA: unknown
    assert not trust.check_signer("000.02.48.H63", mau_a)


def test_trust_explicit_pin_wins_over_ca(keys_dir: Path) -> None:
    vp = keys_dir / "orgs" / f"{VP_UBND}.pem"
    trust = TrustStore.build([(MAU_A, vp, keys_dir / "ca.pem")])
    assert trust.cert_for(MAU_A) == _cert(vp)
    assert not trust.check_signer(MAU_A, _cert(keys_dir / "orgs" / f"{MAU_A}.pem"))


def test_trust_by_ca_requires_chain_and_organ_id(keys_dir: Path) -> None:
    trust = TrustStore.build([(MAU_A, None, None), (VP_UBND, None, None)],
                             default_ca=keys_dir / "ca.pem")
    assert trust.cert_for(MAU_A) is None                   # trusted by CA, not pinned
    assert trust.entry(MAU_A).ca is trust.entry(VP_UBND).ca  # one file parsed once
    mau_a = _cert(keys_dir / "orgs" / f"{MAU_A}.pem")
    assert trust.check_signer(MAU_A, mau_a)
    assert not trust.check_signer(VP_UBND, mau_a)
    assert "does not name" in trust.signer_problem(VP_UBND, mau_a)

    other_ca_key, other_ca = make_ca("someone else's CA")
    _, stranger = issue_cert(other_ca_key, other_ca, MAU_A)
    assert "does not chain" in trust.signer_problem(MAU_A, stranger)


def test_trust_refuses_expired_certificates_but_audits_at_their_time(keys_dir: Path) -> None:
    ca_key = serialization.load_pem_private_key((keys_dir / "ca.key").read_bytes(), None)
    ca = _cert(keys_dir / "ca.pem")
    # (the dev CA itself is back-dated by one day only)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=12)
    _, expired = issue_cert(ca_key, ca, MAU_A, not_before=past - dt.timedelta(hours=8),  # type: ignore[arg-type]
                            not_after=past)
    trust = TrustStore.build([(MAU_A, None, keys_dir / "ca.pem")])
    assert "not valid" in trust.signer_problem(MAU_A, expired)
    assert trust.check_signer(MAU_A, expired, at=past - dt.timedelta(hours=1))


def test_trust_build_reports_unreadable_certificates(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="bad.pem"):
        TrustStore.build([(MAU_A, tmp_path / "bad.pem", None)])
    with pytest.raises(ConfigError, match="missing.pem"):
        TrustStore.build([(MAU_A, None, tmp_path / "missing.pem")])
