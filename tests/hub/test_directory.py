"""Tests of hub.directory: the bundled directory, resolution, and bad files."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from hub.directory import (
    KINDS,
    LOCAL_KINDS,
    Directory,
    Organ,
    Route,
    default_directory_path,
)
from hub.errors import ConfigError, ValidationError

HUB_ID = "000.99.48.H63"
DISTRICT_ID = "000.00.48.H63"
PROVINCE_ID = "000.00.00.H63"
STRICT_ID = re.compile(r"\d{3}\.\d{2}\.\d{2}\.[A-Z]\d{2}")


@pytest.fixture(scope="module")
def bundled() -> Directory:
    return Directory.load(default_directory_path())


# -- the bundled directory ----------------------------------------------------


def test_bundled_directory_loads(bundled: Directory) -> None:
    assert default_directory_path().name == "directory.toml"
    assert len(bundled) == len(list(bundled)) > 0
    assert bundled.upstream_route == "provincial"


def test_local_units_are_the_districts_74_plus_committee_and_council(
        bundled: Directory) -> None:
    counts = Counter(o.kind for o in bundled.local_units())
    assert counts == {"commune": 27, "office": 13, "public_service_unit": 7,
                      "agency": 27, "district_committee": 1, "district_council": 1}
    assert sum(counts[k] for k in ("commune", "office", "public_service_unit",
                                   "agency")) == 74
    assert all(o.route == "mailbox" for o in bundled.local_units())
    mailbox = [o for o in bundled if o.route == "mailbox"]
    assert len(mailbox) == 76


def test_fixed_ids_of_the_district(bundled: Directory) -> None:
    assert bundled.get(DISTRICT_ID).kind == "district_committee"
    assert bundled.get("000.98.48.H63").kind == "district_council"
    assert bundled.get("000.01.48.H63").name == "UBND thị trấn Mậu A"
    assert {o.id for o in bundled.by_kind("commune")} == {
        f"000.{n:02d}.48.H63" for n in range(1, 28)}
    assert {o.id for o in bundled.by_kind("office")} == {
        f"000.{n:02d}.48.H63" for n in range(31, 44)}
    assert {o.id for o in bundled.by_kind("public_service_unit")} == {
        f"000.{n:02d}.48.H63" for n in range(51, 58)}
    assert {o.id for o in bundled.by_kind("agency")} == {
        f"000.{n:02d}.48.H63" for n in range(61, 88)}


def test_province_and_its_41_departments(bundled: Directory) -> None:
    departments = bundled.by_kind("department")
    assert len(departments) == 41
    assert {o.id for o in departments} == {f"000.00.{n:02d}.H63" for n in range(1, 42)}
    assert all(o.route == "provincial" for o in departments)
    assert bundled.get(PROVINCE_ID).kind == "province"


def test_eight_peer_districts_each_on_its_own_route(bundled: Directory) -> None:
    peers = bundled.by_kind("peer_district")
    assert len(peers) == 8
    assert {o.id for o in peers} == {
        f"000.00.{n:02d}.H63" for n in (42, 43, 44, 45, 46, 47, 49, 50)}
    routes = [o.route for o in peers]
    assert len(set(routes)) == 8
    assert all(r.startswith("peer.") for r in routes)
    assert bundled.get("000.00.50.H63").route == "peer.yenbinh"


def test_hub_entry(bundled: Directory) -> None:
    assert bundled.hub.id == HUB_ID
    assert bundled.hub.kind == "hub" and bundled.hub.route == "hub"
    assert not bundled.hub.is_local


def test_ids_unique_strict_and_kinds_known(bundled: Directory) -> None:
    ids = [o.id for o in bundled]
    assert len(ids) == len(set(ids))
    assert all(STRICT_ID.fullmatch(i) for i in ids)
    assert all(o.kind in KINDS for o in bundled)
    assert all(o.name.strip() for o in bundled)


def test_bundled_file_has_no_duplicate_ids_before_indexing() -> None:
    # The dict index would hide a duplicate if load() ever stopped checking.
    text = default_directory_path().read_text(encoding="utf-8")
    ids = re.findall(r'^id = "([^"]+)"', text, re.MULTILINE)
    assert len(ids) == len(set(ids)) == 136  # 128 organisations and the 8 peer hubs


def test_routes_need_one_adapter_each(bundled: Directory) -> None:
    routes = bundled.routes()
    assert {"mailbox", "provincial"} <= routes
    assert "hub" not in routes
    assert len([r for r in routes if r.startswith("peer.")]) == 8


def test_to_rows_is_json_ready(bundled: Directory) -> None:
    rows = bundled.to_rows()
    assert len(rows) == len(bundled)
    assert rows[0]["id"] == HUB_ID
    first_commune = next(r for r in rows if r["id"] == "000.01.48.H63")
    assert first_commune["local"] is True and first_commune["route"] == "mailbox"
    json.dumps(rows, ensure_ascii=False)


# -- resolution ---------------------------------------------------------------


def test_resolve_local_unit_to_mailbox(bundled: Directory) -> None:
    route = bundled.resolve("000.01.48.H63")
    assert route == Route("mailbox", bundled.get("000.01.48.H63"), True)


def test_resolve_department_to_provincial(bundled: Directory) -> None:
    route = bundled.resolve("000.00.03.H63")
    assert route.name == "provincial" and route.known


def test_resolve_peer_to_its_own_route(bundled: Directory) -> None:
    for peer in bundled.by_kind("peer_district"):
        assert bundled.resolve(peer.id).name == peer.route


def test_resolve_unknown_goes_upstream(bundled: Directory) -> None:
    # The Government Office is not listed: the provincial platform knows it.
    route = bundled.resolve("000.00.00.G22")
    assert route == Route("provincial", None, False)


def test_upstream_route_is_configurable() -> None:
    directory = Directory.load(default_directory_path(), upstream_route="national")
    assert directory.resolve("000.00.00.G22").name == "national"
    assert "national" in directory.routes()


def test_resolve_refuses_the_hub_itself(bundled: Directory) -> None:
    with pytest.raises(ValidationError) as caught:
        bundled.resolve(HUB_ID)
    assert caught.value.code == "unroutable_recipient"


@pytest.mark.parametrize("bad", ["", "000.00.48.h63", "00.00.48.H63",
                                 "000.00.48.H63\n", " 000.00.48.H63", "000-00-48-H63"])
def test_resolve_refuses_malformed_ids(bundled: Directory, bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        bundled.resolve(bad)
    assert caught.value.code == "invalid_organ_id"


def test_lookup_helpers(bundled: Directory) -> None:
    assert DISTRICT_ID in bundled
    assert "000.00.00.G22" not in bundled
    assert bundled.get("000.00.00.G22") is None
    assert {o.kind for o in bundled.local_units()} == LOCAL_KINDS
    with pytest.raises(ValueError):
        bundled.by_kind("ministry")


# -- bad files ----------------------------------------------------------------

HUB = '''
[[organ]]
id = "000.99.48.H63"
name = "Hub"
kind = "hub"
route = "hub"
'''
COMMUNE = '''
[[organ]]
id = "000.01.48.H63"
name = "UBND thị trấn Mậu A"
kind = "commune"
route = "mailbox"
'''


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "directory.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        Directory.load(write(tmp_path, text))
    return caught.value.message


def test_minimal_file_loads(tmp_path: Path) -> None:
    directory = Directory.load(write(tmp_path, HUB + COMMUNE))
    assert len(directory) == 2
    assert directory.resolve("000.01.48.H63").name == "mailbox"


def test_duplicate_id(tmp_path: Path) -> None:
    message = load_error(tmp_path, HUB + COMMUNE + COMMUNE)
    assert "organ entry 3" in message and "000.01.48.H63" in message
    assert "duplicate id" in message and "entry 2" in message


def test_missing_field(tmp_path: Path) -> None:
    message = load_error(tmp_path, HUB + COMMUNE.replace('route = "mailbox"\n', ""))
    assert "organ entry 2" in message and "000.01.48.H63" in message
    assert "'route'" in message


def test_unknown_kind(tmp_path: Path) -> None:
    message = load_error(tmp_path, HUB + COMMUNE.replace('"commune"', '"ward"'))
    assert "organ entry 2" in message and "unknown kind 'ward'" in message


def test_local_unit_must_use_mailbox(tmp_path: Path) -> None:
    message = load_error(tmp_path, HUB + COMMUNE.replace('"mailbox"', '"provincial"'))
    assert "organ entry 2" in message and "000.01.48.H63" in message
    assert "must use route 'mailbox'" in message


def test_two_hubs(tmp_path: Path) -> None:
    second = HUB.replace("000.99.48.H63", "000.97.48.H63")
    message = load_error(tmp_path, HUB + COMMUNE + second)
    assert "exactly one entry must have kind 'hub'" in message
    assert "entry 1 (000.99.48.H63)" in message and "entry 3 (000.97.48.H63)" in message


def test_no_hub(tmp_path: Path) -> None:
    assert "found none" in load_error(tmp_path, COMMUNE)


@pytest.mark.parametrize("bad_id", ["000.1.48.H63", "000.01.48.h63", "000.01.48.H6",
                                    "000.01.48.634", "UBND Mậu A"])
def test_malformed_id(tmp_path: Path, bad_id: str) -> None:
    message = load_error(tmp_path, HUB + COMMUNE.replace("000.01.48.H63", bad_id))
    assert "organ entry 2" in message and repr(bad_id) in message
    assert "AAA.BB.CC.DDD" in message


def test_toml_syntax_error(tmp_path: Path) -> None:
    message = load_error(tmp_path, HUB + '[[organ]]\nid = "000.01.48.H63\n')
    assert "not valid TOML" in message and "line" in message


@pytest.mark.parametrize("change, expected", [
    (('route = "mailbox"', 'route = "mailbox"\nrout = "x"'), "unknown field(s) 'rout'"),
    (('"commune"', "7"), "field 'kind' must be a string"),
    (('route = "mailbox"', 'route = "mailbox"\nillustrative = "yes"'),
     "'illustrative' must be true or false"),
    (('route = "mailbox"', 'route = "mailbox"\nsignature_policy = "maybe"'),
     "unknown signature_policy 'maybe'"),
    (('route = "mailbox"', 'route = "mailbox"\nparent = "huyện"'),
     "parent 'huyện' is not an OrganId"),
])
def test_other_bad_fields(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    assert expected in load_error(tmp_path, HUB + COMMUNE.replace(*change))


def test_hub_route_is_reserved(tmp_path: Path) -> None:
    peer = ('\n[[organ]]\nid = "000.00.50.H63"\nname = "UBND huyện Yên Bình"\n'
            'kind = "peer_district"\nroute = "hub"\n')
    assert "reserved" in load_error(tmp_path, HUB + peer)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Directory.load(tmp_path / "absent.toml")


def test_cert_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    text = HUB + COMMUNE.replace('route = "mailbox"',
                                 'route = "mailbox"\ncert = "trust/maua.pem"')
    directory = Directory.load(write(tmp_path, text))
    assert directory.get("000.01.48.H63").cert == str(tmp_path / "trust" / "maua.pem")


# -- from_organs ---------------------------------------------------------------


def test_from_organs_checks_like_a_file() -> None:
    hub = Organ(HUB_ID, "Hub", "hub", "hub")
    office = Organ("000.31.48.H63", "Văn phòng HĐND và UBND", "office", "mailbox")
    directory = Directory.from_organs([hub, office], upstream_route="provincial")
    assert directory.hub is hub and directory.resolve(office.id).organ is office
    with pytest.raises(ConfigError, match="must use route 'mailbox'"):
        Directory.from_organs([hub, Organ(office.id, office.name, "office", "peer.x")])
    with pytest.raises(ConfigError, match="duplicate id"):
        Directory.from_organs([hub, office, office])


# -- rules: routes by OrganId pattern (issue 10.7) ----------------------------------

def _with_rules(tmp_path, rules: str):
    from hub.directory import Directory, default_directory_path
    text = Path(str(default_directory_path())).read_text(encoding="utf-8")
    text = text.split("# Each peer district's whole code space goes to its hub.")[0]
    path = tmp_path / "directory.toml"
    path.write_text(text + rules, encoding="utf-8")
    return Directory.load(path)


def test_a_peer_districts_code_space_routes_to_its_hub_by_rule():
    from hub.directory import load_directory
    from hub.config import build_settings
    d = load_directory(build_settings({}))
    route = d.resolve("000.05.44.H63")  # a commune of Lục Yên nobody listed
    assert (route.name, route.known, route.rule.pattern) == ("peer.lucyen", True, "*.*.44.H63")
    assert d.may_speak_for("peer.lucyen", "000.05.44.H63")
    assert not d.may_speak_for("peer.yenbinh", "000.05.44.H63")
    assert not d.may_speak_for("peer.lucyen", "000.01.48.H63")  # one of ours
    assert d.knows("000.05.44.H63") and not d.knows("000.05.77.H63")
    # an entry beats every rule
    assert d.resolve("000.00.44.H63").organ is not None
    # nothing matches: upstream, as before
    assert d.resolve("000.05.77.H63").name == "provincial"
    assert {"peer.lucyen", "peer.yenbinh"} <= d.routes()


def test_the_most_specific_rule_wins(tmp_path):
    d = _with_rules(tmp_path, '''
[[rule]]
pattern = "*.*.44.H63"
route = "peer.lucyen"

[[rule]]
pattern = "*.07.44.H63"
route = "peer.special"
''')
    assert d.resolve("000.07.44.H63").name == "peer.special"
    assert d.resolve("000.08.44.H63").name == "peer.lucyen"
    assert "rule '*.07.44.H63'" in d.resolve("000.07.44.H63").explain("000.07.44.H63")
    assert d.may_speak_for("peer.special", "000.07.44.H63")
    assert not d.may_speak_for("peer.lucyen", "000.07.44.H63")


@pytest.mark.parametrize("rule,message", [
    ('pattern = "44.H63"\nroute = "peer.x"', "must be an OrganId"),
    ('pattern = "*.*.44.H63"\nroute = "mailbox"', "not a usable route"),
    ('pattern = "*.*.44.H63"', "the keys pattern and route"),
    ('pattern = "*.*.44.H63"\nroute = "peer.x"\ncolour = "red"', "the keys pattern and route"),
    ('pattern = "*.*.44.H63"\nroute = "peer.x"\nca = 5', "ca must be the path"),
])
def test_bad_rules_stop_the_load_with_their_index(tmp_path, rule, message):
    from hub.errors import ConfigError
    with pytest.raises(ConfigError) as err:
        _with_rules(tmp_path, f"\n[[rule]]\n{rule}\n")
    assert message in err.value.message and "[[rule]] 1" in err.value.message


def test_directory_resolve_says_which_rule_matched():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "hub.cli", "directory", "resolve", "000.05.44.H63"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "000.05.44.H63 -> peer.lucyen: rule '*.*.44.H63' ([[rule]] 3)"
