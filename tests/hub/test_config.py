"""Configuration: every key documented in conf/hub.toml, defaults, units, errors."""
from __future__ import annotations

import tomllib

import pytest

from support import REPO
from hub.config import PARAMS, build_settings, load_settings, parse_duration, parse_size
from hub.errors import ConfigError


def test_every_key_is_in_hub_toml_with_its_default_and_a_comment():
    text = (REPO / "conf" / "hub.toml").read_text(encoding="utf-8")
    doc = tomllib.loads(text)
    assert set(doc) == {p.name for p in PARAMS}
    for p in PARAMS:
        assert doc[p.name] == p.default, p.name
        # the line before the key is (the end of) its comment
        before = text.split(f"\n{p.name} = ", 1)[0].rstrip().splitlines()[-1]
        assert before.startswith("# "), p.name


def test_bundled_hub_toml_loads_to_the_defaults():
    s = load_settings(REPO / "conf" / "hub.toml")
    d = build_settings({})
    assert s.raw() == d.raw()
    assert s.listen == "127.0.0.1:8780" and s.data_dir == "var"


@pytest.mark.parametrize("text,seconds", [("4000s", 4000), ("2ms", 0.002), ("5d", 432000),
                                          ("1.5h", 5400), (30, 30)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text,size", [("64KiB", 65536), ("128MB", 128_000_000), ("1GiB", 1 << 30), (10, 10)])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("raw,fragment", [
    ({"nonsense": 1}, "unknown configuration key"),
    ({"maximal_backoff": "forever"}, "maximal_backoff"),
    ({"max_envelope_size": "big"}, "max_envelope_size"),
    ({"organ_id_policy": "loose"}, "organ_id_policy"),
    ({"listen": "8780"}, "listen"),
    ({"cpu_workers": "many"}, "cpu_workers"),
    ({"cpu_workers": -1}, "cpu_workers"),
    ({"minimal_backoff": "2h", "maximal_backoff": "1h"}, "minimal_backoff"),
])
def test_bad_values_are_named(raw, fragment):
    with pytest.raises(ConfigError) as err:
        build_settings(raw)
    assert fragment in err.value.message


def test_file_flags_and_adapters(tmp_path):
    conf = tmp_path / "hub.toml"
    conf.write_text('listen = "127.0.0.1:9999"\nmaximal_lifetime = "2d"\n'
                    '[adapters.provincial]\nclass = "edxml_http"\nurl = "http://127.0.0.1:1/"\n')
    s = load_settings(conf, listen="127.0.0.1:9000", data_dir=None)
    assert s.listen == "127.0.0.1:9000"  # the flag wins over the file
    assert s.maximal_lifetime == 172800
    assert s.adapters["provincial"]["class"] == "edxml_http"
    conf.write_text("listen = [")
    with pytest.raises(ConfigError):
        load_settings(conf)
    conf.write_text("[adapters.x]\nurl = 1\n")
    with pytest.raises(ConfigError, match="class"):
        load_settings(conf)
