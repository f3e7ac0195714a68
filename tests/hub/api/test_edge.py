"""The HTTP edge under hostile or broken clients: tokens, bodies, HEAD.

Each test drives the real app over a real socket (aiohttp's test server);
the ones that need a real ``lienthong serve`` process are in
``tests/hub/api/test_serve_edge.py``.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import socket
import zlib

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from hub.auth import TokenAuthority
from hub.errors import AuthError
from hub.edxml import samples
from support import MAU_A, VP_UBND, submit

XML = {"Content-Type": "application/xml"}
SECRET = b"k" * 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def signed(claims_json: bytes, secret: bytes = SECRET) -> str:
    """A token whose MAC is right, whatever its claims say."""
    payload = _b64(claims_json)
    mac = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    return f"lt1.{payload}.{mac}"


# -- 14: HEAD does not fetch -----------------------------------------------------------

async def test_head_of_an_inbox_item_does_not_mark_it_fetched(client, auth):
    sent = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 41))
    head = await client.head(f"/v1/inbox/{sent['id']}", headers=auth(VP_UBND))
    assert head.status == 200 and head.headers["X-Lienthong-Sender"] == MAU_A
    view = await (await client.get(f"/v1/envelopes/{sent['id']}", headers=auth(MAU_A))).json()
    assert view["deliveries"][0]["fetched_at"] is None
    inbox = await (await client.get("/v1/inbox", headers=auth(VP_UBND))).json()
    assert inbox["items"][0]["fetched"] is False
    # the GET still marks it
    assert (await client.get(f"/v1/inbox/{sent['id']}", headers=auth(VP_UBND))).status == 200
    view = await (await client.get(f"/v1/envelopes/{sent['id']}", headers=auth(MAU_A))).json()
    assert view["deliveries"][0]["fetched_at"] is not None


# -- 6: tokens ----------------------------------------------------------------------

BAD_CLAIMS = [
    b'[1, 2, 3]',                                             # an array, not an object
    b'"lt1"', b'17', b'null', b'true',
    b'{}',                                                    # nothing
    b'{"o": "000.01.48.H63", "r": "agency"}',                 # no expiry
    b'{"o": "000.01.48.H63", "r": "root", "exp": 9999999999}',   # unknown role
    b'{"o": "000.01.48.H63", "r": ["agency"], "exp": 9999999999}',
    b'{"o": ["000.01.48.H63"], "r": "agency", "exp": 9999999999}',  # unhashable organ
    b'{"o": {"x": 1}, "r": "agency", "exp": 9999999999}',
    b'{"o": 12, "r": "agency", "exp": 9999999999}',
    b'{"o": "000.01.48.H63", "r": "agency", "exp": "never"}',  # wrong type
    b'{"o": "000.01.48.H63", "r": "agency", "exp": true}',
    b'{"o": "000.01.48.H63", "r": "agency", "exp": NaN}',
    b'{"o": "000.01.48.H63", "r": "agency", "exp": 1e999}',
    b'{"o": "000.01.48.H63", "r": "agency", "exp": 1' + b"0" * 400 + b'}',
    b'\xff\xfe not json',                                     # not UTF-8
    b'{"o": "000.01.48.H63", "r": "agency", "exp": 99999999',  # truncated JSON
]


@pytest.mark.parametrize("claims", BAD_CLAIMS)
def test_a_validly_signed_token_with_foreign_claims_is_bad_token(claims):
    authority = TokenAuthority(SECRET)
    with pytest.raises(AuthError) as info:
        authority.verify(signed(claims))
    assert info.value.code == "bad_token" and info.value.http_status == 401


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(token=st.one_of(
    st.text(max_size=200),
    st.builds(lambda a, b, c: f"{a}.{b}.{c}", st.text(max_size=20), st.text(max_size=60),
              st.text(max_size=60)),
    st.builds(lambda b: signed(b), st.binary(max_size=120)),
    st.builds(lambda v: signed(json.dumps(v).encode()),
              st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.sampled_from(["o", "r", "exp", "iat", "x"]), inner,
                                             max_size=5), max_leaves=12)),
))
def test_the_token_parser_only_answers_an_identity_or_auth_error(token):
    authority = TokenAuthority(SECRET)
    try:
        ident = authority.verify(token, now=0)
    except AuthError as exc:
        assert exc.http_status == 401 and exc.code in {"bad_token", "malformed_token",
                                                        "token_expired"}
    else:
        assert isinstance(ident.organ, str) and ident.role in {"agency", "relay", "operator",
                                                               "auditor", "admin"}


def _raw_request(port: int, head: bytes, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


async def test_non_ascii_bytes_in_a_bearer_token_are_401_not_500(client, caplog):
    port = client.server.port
    head = (b"GET /v1/inbox HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer lt1.\xc3\xa9\xff.\xe2\x80\xae\r\n\r\n")
    with caplog.at_level(logging.INFO):
        answer = await asyncio.to_thread(_raw_request, port, head)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"401", answer
    # not shaped as one of ours (non-ASCII): malformed, said as such
    assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "malformed_token"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_validly_signed_token_with_an_array_for_claims_is_401(client, hub):
    token = signed(b'["000.01.48.H63", "agency"]', hub.tokens._secret)
    resp = await client.get("/v1/inbox", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "bad_token"


# -- 9: broken bodies ----------------------------------------------------------------

async def test_a_body_that_says_gzip_but_is_not_is_400(client, auth, caplog):
    with caplog.at_level(logging.INFO):
        resp = await client.post("/v1/envelopes", data=b"this is not gzip at all",
                                 headers={**auth(MAU_A), **XML, "Content-Encoding": "gzip"})
    body = await resp.json()
    assert resp.status == 400 and body["error"]["code"] == "bad_content_encoding", body
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_real_gzip_body_is_still_accepted(client, auth):
    raw = samples.edoc(MAU_A, [VP_UBND], 42)
    z = zlib.compressobj(wbits=31)
    resp = await client.post("/v1/envelopes", data=z.compress(raw) + z.flush(),
                             headers={**auth(MAU_A), **XML, "Content-Encoding": "gzip"})
    assert resp.status == 202, await resp.text()
