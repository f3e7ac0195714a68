"""Configuration: every key declared once, with its default and its meaning.

Like Postfix's ``main.cf`` parameters, each key is flat snake_case, durations
carry units (``"4000s"``, ``"5d"``) and sizes carry units (``"64KiB"``).
``conf/hub.toml`` repeats every key with its comment; a test keeps the two in
step.  ``lienthong conf`` prints the effective configuration.

Adapter instances live in ``[adapters.<name>]`` tables: ``class`` names a
registered adapter (entry point group ``lienthong.adapters``) and the other
keys are passed to it.  The instance name is the route name used in the
directory (``provincial``, ``peer.yenbinh``, …).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Callable

from hub.errors import ConfigError

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
               "gb": 1000**3, "gib": 1024**3}


def parse_duration(value: str | int | float) -> float:
    """``"4000s"``, ``"2ms"``, ``"5d"`` → seconds.  Bare numbers are seconds."""
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*", str(value))
    if not m:
        raise ConfigError(f"bad duration {value!r}: use a number and a unit (ms, s, m, h, d, w)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_size(value: str | int) -> int:
    """``"64KiB"``, ``"128MB"`` → bytes.  Bare numbers are bytes."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ConfigError(f"bad size {value!r}: use a number and a unit (B, KiB, MiB, GiB, KB, MB, GB)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ConfigError(f"must be one of {', '.join(allowed)}, not {value!r}")
        return str(value)
    return check


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "yes", "1", "on"):
        return True
    if str(value).lower() in ("false", "no", "0", "off"):
        return False
    raise ConfigError(f"must be true or false, not {value!r}")


def _workers(value: Any) -> int:
    if str(value).lower() == "auto":
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"must be a number of processes or auto, not {value!r}") from None
    if count < 0:
        raise ConfigError(f"must be 0 or more, not {count}")
    return count


def _listen(value: Any) -> str:
    host, sep, port = str(value).rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"listen must be HOST:PORT (port 0 to 65535), not {value!r}")
    return str(value)


@dataclasses.dataclass(frozen=True)
class Param:
    name: str
    default: Any
    convert: Callable[[Any], Any]
    doc: str


PARAMS: tuple[Param, ...] = (
    Param("listen", "127.0.0.1:8780", _listen, "HOST:PORT the HTTP API listens on."),
    Param("tls_cert_file", "", str,
          "Certificate (PEM, with its chain) for HTTPS on listen; with tls_key_file. Empty: "
          "plain HTTP (put a TLS reverse proxy in front). Needed for peer hubs that "
          "authenticate by client certificate (peer_hub accept_client_cert)."),
    Param("tls_key_file", "", str, "The private key (PEM) of tls_cert_file."),
    Param("data_dir", "var", str, "Runtime data: spool database, payload files, generated keys. "
          "Relative paths are relative to the working directory."),
    Param("directory", "", str, "Directory of organisations (TOML). Empty: the bundled conf/directory.toml."),
    Param("organ_id_policy", "lenient", _choice("strict", "lenient"),
          "strict: every OrganId must be AAA.BB.CC.DDD (13 characters); lenient: also accept the "
          "shorter dotted ids real producers send (e.g. 28.22.H17)."),
    Param("upstream_route", "provincial", str,
          "Route for well-formed OrganIds that are not in the directory (the provincial platform)."),
    Param("unknown_recipient", "upstream", _choice("upstream", "refuse"),
          "A recipient no entry or rule of the directory knows: upstream (sent on the upstream "
          "route, and said so in the 202 answer's upstream and warnings) or refuse (422 "
          "unknown_recipient)."),
    Param("max_envelope_size", "128MiB", parse_size,
          "Largest envelope accepted; a larger body is refused (413) before it is read whole."),
    Param("max_xml_depth", 64, int, "Deepest element nesting accepted in an envelope."),
    Param("max_xml_elements", 100000, int,
          "Most elements in one envelope, and most attributes in all (413 too_many_elements / "
          "too_many_attributes, checked on the bytes before the tree is built). A document's "
          "header is about 100 elements; attachments are one text node each."),
    Param("max_xml_attributes", 256, int,
          "Most attributes (namespace declarations included) on one element "
          "(413 too_many_attributes)."),
    Param("max_xml_namespaces", 256, int,
          "Most namespace declarations in one envelope (413 too_many_namespaces)."),
    Param("max_xml_text", "1MiB", parse_size,
          "Longest text node, comment or attribute value, except an attachment's base64 "
          "content (ContentTransferEncoded), which only max_envelope_size bounds "
          "(413 xml_text_too_long)."),
    Param("max_text_field", "16KiB", parse_size,
          "Longest free-text field the hub keeps and lists (Subject, Description, OrganName), "
          "in characters (413 field_too_long)."),
    Param("max_recipients", 500, int,
          "Most recipients (To) of one document: each is a delivery (413 too_many_recipients)."),
    Param("max_listing_bytes", "4MiB", parse_size,
          "Largest JSON page of a listing (GET /v1/inbox, /v1/queue, /v1/receipts) or batch of "
          "/v1/events; a page that would be larger ends early with its next cursor."),
    Param("inline_payload_limit", "64KiB", parse_size,
          "Payloads up to this size are stored inside the database; larger ones as files "
          "(fsync + atomic rename) under data_dir/payloads."),
    Param("commit_max_wait", "2ms", parse_duration,
          "Group commit: how long the spool writer waits for more concurrent accepts before one "
          "durable commit."),
    Param("commit_max_batch", 256, int, "Group commit: most operations in one transaction."),
    Param("cpu_workers", "auto", _workers,
          "Worker processes for the CPU work of small envelopes (up to 64 KiB): parse, validate, "
          "verify, sign the receipts and the hop signatures, so the hub uses more than one core. "
          "auto: one per CPU the hub may run on. 0: all in the hub's own process."),
    Param("default_signature_policy", "verify_if_present",
          _choice("required", "verify_if_present", "record_only"),
          "Sender-signature policy for organisations whose directory entry sets none."),
    Param("hub_key_file", "", str,
          "The hub's signing key (PEM; its password, if any, in the environment variable "
          "LIENTHONG_KEY_PASSWORD). Empty: development keys under data_dir/keys."),
    Param("hub_cert_file", "", str, "The hub's certificate (PEM, optionally followed by its chain)."),
    Param("hub_pkcs12_file", "", str, "Alternatively, key and certificate in one PKCS#12 file."),
    Param("trust_ca_file", "", str,
          "CA (PEM) that issues organisations' signing certificates, for directory entries that "
          "pin no certificate of their own, and for the organisations of a [[rule]]'s code "
          "space when the rule names no ca of its own."),
    Param("dev_keys", True, _bool,
          "With no hub key configured, generate a development CA, hub key and one key per "
          "organisation under data_dir/keys on first start (`lienthong keys init` does it by hand)."),
    Param("checkpoint_interval", "1h", parse_duration,
          "How often the hub signs a checkpoint of the audit log's chain head (also at shutdown)."),
    Param("token_lifetime", "365d", parse_duration, "Lifetime of tokens issued by `lienthong token`."),
    Param("door_endpoint", "", str,
          "The national-SDK door's endpoint as agency software reaches it (what SDK users set as "
          "their endpoint; `lienthong door credentials` prints it). Empty: http://<listen>/vxp."),
    Param("door_max_timestamp_age", "24h", parse_duration,
          "Oldest signed timestamp the door accepts. The SDK freezes its timestamp when its "
          "service object is made, so long-lived clients send old ones: allow hours."),
    Param("door_max_clock_skew", "10m", parse_duration,
          "How far ahead of the hub's clock a signed timestamp may be (clients' clocks drift)."),
    Param("minimal_backoff", "60s", parse_duration, "Shortest wait before retrying a deferred delivery."),
    Param("maximal_backoff", "4000s", parse_duration, "Longest wait between two delivery attempts."),
    Param("maximal_lifetime", "5d", parse_duration,
          "A delivery not done after this long fails and its sender gets a failure status."),
    Param("queue_run_delay", "30s", parse_duration, "How often the queue manager sweeps for due deliveries."),
    Param("crash_limit", 3, int, "A delivery active during this many crashes is moved to corrupt."),
    Param("lease_time", "10m", parse_duration,
          "How long a delivery stays leased (active) to the node attempting it; the node renews "
          "the lease of attempts still running, and an expired lease (its node died, or the "
          "outcome could not be recorded) is reclaimed by any node's next sweep."),
    Param("node_id", "", str,
          "This node's name on its leases. Empty: the host name and the data directory, so a "
          "restarted node recognises its own leases."),
    Param("destination_concurrency", 20, int, "Most deliveries in flight to one route at once "
          "(Postfix's default_destination_concurrency_limit)."),
    Param("global_concurrency", 64, int, "Most deliveries in flight in total."),
    Param("delivered_retention", "30d", parse_duration,
          "Payloads of documents whose deliveries are all final are deleted after this long "
          "(metadata, receipts and the audit log are kept)."),
    Param("spool_quota", "20GiB", parse_size,
          "Above this much payload in the spool, new envelopes get 503 with Retry-After."),
    Param("min_free_space", "512MiB", parse_size,
          "Below this much free disk under data_dir, new envelopes get 503 with Retry-After."),
    Param("header_read_timeout", "10s", parse_duration,
          "A connection must deliver a whole request head (request line and headers) within "
          "this long after it opens, or after the first byte of its next request; else it is "
          "closed (slow-loris)."),
    Param("body_read_timeout", "30s", parse_duration,
          "A request body may take this long plus one second per min_body_rate bytes received; "
          "a slower body is answered 408 request_timeout and its connection closed."),
    Param("min_body_rate", "1KiB", parse_size,
          "Bytes per second a request body must average once body_read_timeout has passed."),
    Param("idle_timeout", "30s", parse_duration,
          "A keep-alive connection with no request in progress is closed after this long."),
    Param("max_connections", 512, int,
          "Most client connections open at once; one more is answered 503 too_many_connections "
          "and closed. Keep it well under the hub's file-descriptor limit."),
    Param("rate_limit_per_identity", 200.0, float,
          "Requests per second one authenticated identity (organisation and role) may make on "
          "average; more are answered 429 rate_limited with Retry-After. 0: no limit."),
    Param("rate_limit_identity_burst", 400, int,
          "Requests one identity may make at once above its rate (the token bucket's size)."),
    Param("rate_limit_per_relay", 1000.0, float,
          "Requests per second one relay identity (a peer hub, a gateway: role relay) may make "
          "on average, in place of rate_limit_per_identity: a relay carries the traffic of "
          "every organisation its route speaks for. Its address's limit still applies. "
          "0: no limit."),
    Param("rate_limit_relay_burst", 2000, int,
          "Requests one relay identity may make at once above its rate."),
    Param("rate_limit_per_address", 1000.0, float,
          "Requests per second one client address may make on average, with or without a valid "
          "token; checked before anything else. 0: no limit."),
    Param("rate_limit_address_burst", 2000, int,
          "Requests one address may make at once above its rate (the token bucket's size)."),
    Param("refusal_audit_window", "60s", parse_duration,
          "Refusals of one kind (code) from one source are written to the audit log one by one "
          "up to refusal_audit_burst per window; the rest of the window is one refused_summary "
          "entry with their count."),
    Param("refusal_audit_burst", 20, int,
          "Refusals of one code from one source written individually per refusal_audit_window."),
    Param("log_level", "info", _choice("debug", "info", "warning", "error"), "Logging threshold."),
)
_BY_NAME = {p.name: p for p in PARAMS}


class Settings:
    """The effective configuration: defaults, overridden by a file, then by flags."""

    def __init__(self, values: dict[str, Any], adapters: dict[str, dict[str, Any]],
                 source: Path | None) -> None:
        self._values = values
        self.adapters = adapters
        self.source = source

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def data_path(self) -> Path:
        return Path(self._values["data_dir"])

    @property
    def listen_host(self) -> str:
        return self._values["listen"].rpartition(":")[0]

    @property
    def listen_port(self) -> int:
        return int(self._values["listen"].rpartition(":")[2])

    def raw(self) -> dict[str, Any]:
        """The values as written (before unit conversion), for `lienthong conf`."""
        return dict(self._raw)

    def replace(self, **overrides: Any) -> "Settings":
        raw = {**self._raw, **overrides}
        return build_settings(raw, self.adapters, self.source)

    _raw: dict[str, Any]


def build_settings(raw: dict[str, Any], adapters: dict[str, dict[str, Any]] | None = None,
                   source: Path | None = None) -> Settings:
    unknown = sorted(set(raw) - set(_BY_NAME))
    if unknown:
        raise ConfigError(f"unknown configuration key(s): {', '.join(unknown)}",
                          details={"keys": unknown})
    merged = {p.name: raw.get(p.name, p.default) for p in PARAMS}
    values: dict[str, Any] = {}
    for name, value in merged.items():
        try:
            values[name] = _BY_NAME[name].convert(value)
        except (ConfigError, ValueError, TypeError) as exc:
            msg = exc.message if isinstance(exc, ConfigError) else str(exc)
            raise ConfigError(f"{name}: {msg}", details={"key": name}) from None
    if values["minimal_backoff"] > values["maximal_backoff"]:
        raise ConfigError("minimal_backoff must not exceed maximal_backoff")
    settings = Settings(values, dict(adapters or {}), source)
    settings._raw = merged
    return settings


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def toml_key(key: str) -> str:
    """A TOML key: bare when it can be, quoted otherwise (``"peer.lucyen"``)."""
    return key if _BARE_KEY.match(key) else toml_value(key)


def toml_value(value: Any) -> str:
    """A TOML value for what a hub.toml may hold: strings, numbers, booleans,
    arrays and (inline) tables.  ``lienthong conf`` prints with it, so its
    output can be pasted back into hub.toml."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        # A JSON string is a TOML basic string: the same quotes and escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} as TOML")


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (if given) and apply non-None ``overrides`` (command-line flags)."""
    raw: dict[str, Any] = {}
    adapters: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"configuration file {path} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc} (conf/hub.toml shows every key "
                              f"in its form)") from None
        adapters = doc.pop("adapters", {}) or {}
        for name, table in adapters.items():
            if not isinstance(table, dict) or "class" not in table:
                raise ConfigError(f"{path}: [adapters.{name}] needs a 'class' key")
        raw.update(doc)
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return build_settings(raw, adapters, path)
