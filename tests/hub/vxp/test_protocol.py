"""hub.vxp.protocol against the captures of the real Java SDK (vdxp-sdk-protocol.md, sections 3 and 6)."""
from __future__ import annotations

import hashlib
import pickle
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from support import SAMPLES

from hub.vxp.protocol import (
    HASH_HEADER,
    SIGN_HEADER,
    SIGN_HEADER_KEY,
    VN_TZ,
    FileHasher,
    VxpAuthError,
    answer,
    format_timestamp,
    gson_string,
    hash_file,
    hashmap_order,
    java_string_hash,
    parse_timestamp,
    sign,
    sign_headers,
    verify_request,
)

SECRET = "TEST-ONLY-secret-9f8e7d6c5b4a"
SYS = "test.sys.01"
DOC = "6f1c2a9e-3b7d-4e58-9a41-0c2d5e7f8a10"
SENT = "d2344a9b-42d6-4fec-b855-a7f088747be2"
JSON_CT = ("Content-Type", "application/json")


def base(ts: str, ct: tuple[str, str] = JSON_CT) -> list[tuple[str, str]]:
    return [("timestamp", ts), ("systemid", SYS), ct]


# (pairs in SDK insertion order, expected sign-header-key, expected MAC): one per captured operation.
CAPTURES = {
    "sendEdoc": (
        base("26112026T101236+0254", ("Content-Type", "application/octet-stream"))
        + [("from", "000.00.00.G22"), ("servicetype", "eDoc"), ("messagetype", "edoc"),
           ("hash-file", "90da13a57ed0e9a52280b620384dd33d9ca278f6fd7cb38e106acc783cd9a7")],
        "systemid;servicetype;messagetype;hash-file;from;timestamp;Content-Type",
        "bbafa9ec90f0d769db83d8bdf0218502b5f965742922d6dd9dae31c78f21125d"),
    "getReceivedEdocList": (
        base("26112026T101236+0739") + [("servicetype", "eDoc"), ("messagetype", "edoc")],
        "systemid;servicetype;messagetype;timestamp;Content-Type",
        "7d6a8e0a5557d26ab13b9707a17d9326a541bb2c19c031db01691d0ae2cba9e5"),
    "getEdoc": (
        base("26112026T101237+0581") + [("filePath", "xml"), ("docId", DOC)],
        "systemid;docId;filePath;timestamp;Content-Type",
        "4cc42cc87ebb7f9cbfa19f337e98c9f08a67af85c928226fbf6885d6a8196ea1"),
    "updateStatus": (
        base("26112026T101237+0794") + [("status", "done"), ("docId", DOC)],
        "systemid;docId;timestamp;Content-Type;status",
        "057517e27c06e36caabbe2bf0076dbfebaef3dcaf61834bb9cf73154368c6ee8"),
    "getSentEdocList": (
        base("26112026T101237+0860") + [("servicetype", "eDoc"), ("messagetype", "edoc"),
                                        ("docId", SENT)],
        "systemid;servicetype;messagetype;docId;timestamp;Content-Type",
        "0b28dd9b99a246818f81597e1ba3fd836cc701037c40eb7726c6ba178fc11fbd"),
    "getAgenciesList": (
        base("26112026T101237+0886"), "systemid;timestamp;Content-Type",
        "eac64837c394110a7a7c3c430babceaa28447f86a0979db0d71c8672157ae18a"),
}
#: The capture run's clock: the frozen timestamps above are a few seconds old.
CAPTURE_NOW = datetime(2026, 11, 26, 10, 12, 40, tzinfo=VN_TZ)


@pytest.mark.parametrize("op", sorted(CAPTURES))
def test_captured_macs_reproduced(op: str) -> None:
    pairs, key, mac = CAPTURES[op]
    headers = sign_headers(pairs, SECRET)
    assert headers[SIGN_HEADER_KEY] == key
    assert headers[HASH_HEADER] == mac
    ct = dict(pairs)["Content-Type"]
    assert headers["Content-Type"] == headers["XroadVnpt-Content-Type"] == ct
    assert headers["User-Agent"] == "JAVASDKAgent/1.0.0 XRoad/VPCP"
    assert headers["XroadVnpt-version"] == "3.0.201608"
    assert not {"systemid", "timestamp"} & headers.keys()  # bare logical names are never sent


def test_captured_sign_header_text() -> None:
    headers = sign_headers(CAPTURES["getAgenciesList"][0], SECRET)
    assert headers[SIGN_HEADER] == (
        '{"XroadVnpt-systemid":"test.sys.01","XroadVnpt-timestamp":"26112026T101237+0886",'
        '"XroadVnpt-Content-Type":"application/json"}')


def test_to_header_keeps_its_json_text() -> None:
    to = '[{"OrganId":"000.00.00.H41"}]'
    sig = sign(base("26112026T101236+0254") + [("to", to)], SECRET)
    assert '"XroadVnpt-to":"[{\\"OrganId\\":\\"000.00.00.H41\\"}]"' in sig.sign_header


def test_java_string_hash() -> None:
    # Values of String.hashCode, as unsigned ints (Java: "".hashCode()==0, "a"==97).
    assert java_string_hash("") == 0
    assert java_string_hash("a") == 97
    assert java_string_hash("timestamp") == 55126294
    assert java_string_hash("ă") == 0x103
    assert java_string_hash("\U0001F600") == (31 * 0xD83D + 0xDE00)  # two UTF-16 units


def test_hashmap_order_collisions_keep_insertion_order() -> None:
    # timestamp / Content-Type / status share bin 15; hash-file / docId / docid bin 6.
    assert hashmap_order(["status", "Content-Type", "timestamp"]) == ["status", "Content-Type",
                                                                       "timestamp"]
    assert hashmap_order(["timestamp", "Content-Type", "status"]) == ["timestamp", "Content-Type",
                                                                       "status"]
    assert hashmap_order(["docid", "hash-file", "docId"]) == ["docid", "hash-file", "docId"]
    assert hashmap_order(["a", "b", "a"]) == ["a", "b"]  # a repeated put keeps the first place


# A long-lived SDK service object after many calls (names accumulate).  Order
# printed by java.util.HashMap on OpenJDK 17: 14 names resize the table to
# 32 bins, which separates servicetype from systemid and docId from hash-file.
ACCUMULATED = ["timestamp", "systemid", "Content-Type", "from", "servicetype", "messagetype",
               "hash-file", "to", "filePath", "docId", "status", "docid", "level", "AgencyCode"]
JAVA_ORDER_14 = ["systemid", "messagetype", "level", "docId", "docid", "filePath", "servicetype",
                 "hash-file", "AgencyCode", "from", "to", "timestamp", "Content-Type", "status"]
JAVA_ORDER_12 = ["systemid", "servicetype", "messagetype", "hash-file", "docId", "docid",
                 "filePath", "from", "to", "timestamp", "Content-Type", "status"]


def test_hashmap_order_resize() -> None:
    assert hashmap_order(ACCUMULATED[:12]) == JAVA_ORDER_12      # 12 = 3/4 of 16: no resize
    assert hashmap_order(ACCUMULATED) == JAVA_ORDER_14


def _same_bin(n: int, mask: int, bin_: int) -> list[str]:
    from hub.vxp.java import _spread
    return [c for c in (f"k{i}" for i in range(20000))
            if _spread(java_string_hash(c)) & mask == bin_][:n]


def test_hashmap_order_nine_in_a_bin_doubles_a_small_table() -> None:
    # Java resizes instead of treeifying a 9-entry bin while under 64 bins.
    names = _same_bin(9, 15, 3)
    assert [n for n in hashmap_order(names)] == sorted(
        names, key=lambda n: (java_string_hash(n) ^ (java_string_hash(n) >> 16)) & 31)


def test_hashmap_order_refuses_tree_bins() -> None:
    with pytest.raises(ValueError):
        hashmap_order([f"f{i}" for i in range(60)] + _same_bin(9, 127, 7))


@pytest.mark.skipif(shutil.which("java") is None, reason="no java to compare with")
def test_hashmap_order_matches_java(tmp_path) -> None:
    src = tmp_path / "Order.java"
    src.write_text(
        "import java.util.*;public class Order{public static void main(String[] a){"
        "Scanner s=new Scanner(System.in,\"UTF-8\");while(s.hasNextLine()){"
        "HashMap<String,String> m=new HashMap<>();for(String n:s.nextLine().split(\"\\t\"))"
        "m.put(n,\"v\");System.out.println(String.join(\"\\t\",m.keySet()));}}}")
    sets = [ACCUMULATED, _same_bin(9, 15, 3), _same_bin(10, 31, 5) + ["x", "y"],
            [f"XroadVnpt-h{i}" for i in range(40)], ["systemid", "servicetype", "docId", "ab"] * 2]
    out = subprocess.run(["java", str(src)], input="\n".join("\t".join(s) for s in sets) + "\n",
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert [line.split("\t") for line in out.splitlines()] == [hashmap_order(s) for s in sets]


def test_gson_string_escaping() -> None:
    assert gson_string('a"b\\c') == '"a\\"b\\\\c"'
    assert gson_string("\t\b\n\r\f") == '"\\t\\b\\n\\r\\f"'
    assert gson_string("\x00\x1f\x0b") == '"\\u0000\\u001f\\u000b"'
    assert gson_string("\u2028\u2029") == '"\\u2028\\u2029"'
    raw = "/<>&='\x7fUBND Tỉnh Nghệ An \U0001F600"
    assert gson_string(raw) == '"' + raw + '"'


def test_hash_file_drops_zero_padding() -> None:
    data = (SAMPLES / "status_inbox_01.edxml").read_bytes()
    assert hashlib.sha256(data).hexdigest().startswith("f51b0a8b")
    assert hash_file(data) == "f51ba8b927ea8c7e6c2be88ef55b86ca859f23fbcbf9e213e23e24e"
    # A digest whose first byte is 0x00 starts with a single "0".
    zero_first = next(i for i in range(10000) if hashlib.sha256(b"%d" % i).digest()[0] == 0)
    value = hash_file(b"%d" % zero_first)
    assert hashlib.sha256(b"%d" % zero_first).hexdigest().startswith("00")
    assert value.startswith("0") and not value.startswith("00") and len(value) < 64


def test_file_hasher_is_incremental() -> None:
    data = (SAMPLES / "edoc_update.edxml").read_bytes()
    hasher = FileHasher()
    for i in range(0, len(data), 4096):
        hasher.update(data[i:i + 4096])
    assert hasher.value() == hash_file(data) == CAPTURES["sendEdoc"][0][-1][1]
    assert FileHasher(hashlib.sha256(data[:10])).update(data[10:]).value() == hash_file(data)


def test_timestamps() -> None:
    dt = datetime(2026, 11, 26, 10, 12, 36, 254_999, tzinfo=VN_TZ)
    assert format_timestamp(dt) == "26112026T101236+0254"
    assert format_timestamp(dt.astimezone(UTC)) == "26112026T101236+0254"
    assert format_timestamp(datetime(2026, 1, 2, 3, 4, 5, 7000)) == "02012026T030405+0007"
    parsed = parse_timestamp("26112026T101236+0254")
    assert parsed == datetime(2026, 11, 26, 3, 12, 36, 254_000, tzinfo=UTC)
    assert parse_timestamp("26112026T101236+0254", UTC).hour == 10
    for bad in ("26112026T101236+254", "26112026T101236+1000", "26112026 101236+0254",
                "32112026T101236+0254", "26112026T101236+0254\n"):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def test_answer() -> None:
    assert answer() == b'{"status":"OK","ErrorCode":"0","ErrorDesc":""}'
    body = answer(DocId="x", ErrorDesc_extra="Đã gửi", ascii_only=True)
    assert body.isascii() and b"\\u0110" in body
    assert "Đã".encode() in answer("FAIL", "bad_mac", "Đã")
    with pytest.raises(TypeError):
        answer(ErrorCode="1")


# ---------------------------------------------------------------- verify_request

def secrets(system_id: str) -> str | None:
    return {SYS: SECRET, "other.sys": "other-secret"}.get(system_id)


def verify(headers: dict[str, str], *, body: bytes | None = None,
           now: datetime = CAPTURE_NOW, max_age: float = 3600):
    return verify_request(headers, secrets, now=now, max_age=max_age, body=body)


def test_verify_accepts_every_capture() -> None:
    for op, (pairs, _, _) in CAPTURES.items():
        if op != "sendEdoc":
            got = verify(sign_headers(pairs, SECRET))
            assert got.system_id == SYS and dict(got.headers) == dict(pairs)


def test_verify_send_edoc_binds_the_body() -> None:
    data = (SAMPLES / "edoc_update.edxml").read_bytes()
    headers = sign_headers(CAPTURES["sendEdoc"][0], SECRET)
    assert verify(headers, body=data + b"\r\n").file == data
    assert verify(headers, body=data).file == data       # a client without the CRLF
    with pytest.raises(VxpAuthError) as err:
        verify(headers, body=data[:-1] + b"X\r\n")
    assert err.value.code == "hash_file_mismatch"
    with pytest.raises(VxpAuthError) as err:
        verify(sign_headers(CAPTURES["getEdoc"][0], SECRET), body=b"x")
    assert err.value.code == "missing_header"


def test_verify_frozen_timestamp_within_max_age() -> None:
    headers = sign_headers(CAPTURES["getEdoc"][0], SECRET)
    hours_later = CAPTURE_NOW + timedelta(hours=5)
    assert verify(headers, now=hours_later, max_age=6 * 3600).timestamp.minute == 12
    with pytest.raises(VxpAuthError) as err:
        verify(headers, now=hours_later, max_age=4 * 3600)
    assert err.value.code == "stale_timestamp"
    with pytest.raises(VxpAuthError) as err:
        verify(headers, now=CAPTURE_NOW - timedelta(hours=1))
    assert err.value.code == "future_timestamp"
    assert verify(headers, now=CAPTURE_NOW.timestamp()).system_id == SYS


def test_verify_accumulated_headers_and_docid_spelling() -> None:
    # Given a reused SDK object: sendEdoc's names still present, then updateStatus with "docid"
    pairs = (CAPTURES["sendEdoc"][0]
             + [JSON_CT, ("status", "done"), ("docid", DOC), ("filePath", "xml")])
    headers = sign_headers(pairs, SECRET)
    assert "hash-file" in headers[SIGN_HEADER_KEY]
    got = verify(headers)
    assert got.doc_id == DOC and got.get("DOCID") == DOC and got.get("nothing") is None
    assert "docid" in got.headers and "docId" not in got.headers
    # Header names on the wire are case-insensitive.
    assert verify({k.lower(): v for k, v in headers.items()}).doc_id == DOC


def refused(headers: dict[str, str], **kw: object) -> str:
    with pytest.raises(VxpAuthError) as err:
        verify(headers, **kw)  # type: ignore[arg-type]
    assert err.value.message
    return err.value.code


def test_verify_refusals_have_stable_codes() -> None:
    pairs = CAPTURES["updateStatus"][0]
    good = sign_headers(pairs, SECRET)
    assert refused({**good, HASH_HEADER: "0" * 64}) == "bad_mac"
    assert refused(sign_headers(pairs, "wrong-secret")) == "bad_mac"
    assert verify({**good, HASH_HEADER: good[HASH_HEADER].upper()}).system_id == SYS
    assert refused(sign_headers([("systemid", "nobody")] + pairs[:1] + pairs[2:],
                                SECRET)) == "unknown_system"
    assert refused({**good, "XroadVnpt-status": "fail"}) == "header_mismatch"
    assert refused({k: v for k, v in good.items() if k != "XroadVnpt-docId"}) == "missing_header"
    assert refused({k: v for k, v in good.items() if k != HASH_HEADER}) == "missing_header"
    assert refused({**good, SIGN_HEADER: "{not json"}) == "bad_sign_header"
    reordered = ";".join(reversed(good[SIGN_HEADER_KEY].split(";")))
    assert refused({**good, SIGN_HEADER_KEY: reordered}) == "bad_sign_header"
    assert refused({**good, "xroadvnpt-hash-header": good[HASH_HEADER]}) == "duplicate_header"
    no_ts = sign_headers([p for p in pairs if p[0] != "timestamp"], SECRET)
    assert refused(no_ts) == "missing_header"
    bad_ts = sign_headers([("timestamp", "2026-11-26T10:12:37")] + pairs[1:], SECRET)
    assert refused(bad_ts) == "bad_timestamp"


def test_auth_error_pickles_with_its_code() -> None:
    err = pickle.loads(pickle.dumps(VxpAuthError("bad_mac", "no")))
    assert (err.code, err.message, err.http_status) == ("bad_mac", "no", 401)
