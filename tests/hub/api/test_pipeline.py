"""The core path through the real HTTP server: submit, inbox, ack, status back."""
from __future__ import annotations

import pytest

from support import AN_BINH, HUB_ID, MAU_A, SO_NOIVU, VP_UBND, submit
from hub.edxml import samples

XML = {"Content-Type": "application/xml"}




async def test_two_unit_round_trip(client, auth, hub):
    # Given: Mậu A sends a document to the district office
    raw = samples.edoc(MAU_A, [VP_UBND], 17)
    sent = await submit(client, auth, MAU_A, raw)
    assert sent["recipients"] == [{"organ": VP_UBND, "route": "mailbox"}]
    assert sent["document_id"] == f"{MAU_A},2026/11/20,17/UBND"

    # When: the office polls its inbox and fetches the document
    inbox = await (await client.get("/v1/inbox", headers=auth(VP_UBND))).json()
    assert [i["id"] for i in inbox["items"]] == [sent["id"]]
    resp = await client.get(f"/v1/inbox/{sent['id']}", headers=auth(VP_UBND))
    assert resp.status == 200
    assert await resp.read() == raw  # the original bytes, unaltered
    assert resp.headers["X-Lienthong-Sender"] == MAU_A

    # Then: acknowledging makes the delivery delivered and empties the inbox
    ack = await client.post(f"/v1/inbox/{sent['id']}/ack", headers=auth(VP_UBND))
    assert (await ack.json())["state"] == "delivered"
    view = await (await client.get(f"/v1/envelopes/{sent['id']}", headers=auth(MAU_A))).json()
    assert view["deliveries"][0]["state"] == "delivered"
    assert view["deliveries"][0]["fetched_at"] is not None
    inbox = await (await client.get("/v1/inbox", headers=auth(VP_UBND))).json()
    assert inbox["items"] == []

    # And: the office's status 03 is recorded and relayed to Mậu A's inbox
    st = samples.status(VP_UBND, MAU_A, sent["document_id"], "03", description="Đã tiếp nhận")
    st_sent = await submit(client, auth, VP_UBND, st)
    assert st_sent["kind"] == "status"
    assert st_sent["recipients"] == [{"organ": MAU_A, "route": "mailbox"}]
    view = await (await client.get(f"/v1/envelopes/{sent['id']}", headers=auth(MAU_A))).json()
    assert view["deliveries"][0]["business_status"] == "03"
    assert view["statuses"][0]["organ"] == VP_UBND
    inbox = await (await client.get("/v1/inbox", headers=auth(MAU_A))).json()
    assert [i["id"] for i in inbox["items"]] == [st_sent["id"]]
    assert inbox["items"][0]["status_code"] == "03"
    got = await client.get(f"/v1/inbox/{st_sent['id']}", headers=auth(MAU_A))
    assert await got.read() == st


@pytest.mark.parametrize("code", ["01", "02", "03", "04", "05", "06", "15", "16"])
async def test_every_status_code_is_recorded_and_relayed(client, auth, code):
    sent = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND, AN_BINH], 5))
    if code in ("15", "16"):  # answers to the sender's recall
        await submit(client, auth, MAU_A, samples.status(MAU_A, MAU_A, sent["document_id"], "13"))
    st = await submit(client, auth, AN_BINH, samples.status(AN_BINH, MAU_A, sent["document_id"], code))
    assert st["recipients"] == [{"organ": MAU_A, "route": "mailbox"}]
    view = await (await client.get(f"/v1/envelopes/{sent['id']}", headers=auth(MAU_A))).json()
    by = {d["recipient"]: d for d in view["deliveries"]}
    assert by[AN_BINH]["business_status"] == code
    assert by[VP_UBND]["business_status"] is None  # a recall is recorded as the sender's


async def test_recall_status_from_sender_goes_to_every_recipient(client, auth):
    sent = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND, AN_BINH], 6))
    st = await submit(client, auth, MAU_A, samples.status(MAU_A, MAU_A, sent["document_id"], "13"))
    assert sorted(r["organ"] for r in st["recipients"]) == sorted([VP_UBND, AN_BINH])


async def test_status_for_unknown_document_is_refused(client, auth):
    body = await submit(client, auth, VP_UBND,
                        samples.status(VP_UBND, MAU_A, f"{MAU_A},2026/01/01,999/UBND"), status=422)
    assert body["error"]["code"] == "unknown_document"
    assert "never carried" in body["error"]["message"]
    assert body["error"]["details"]["path"].endswith("/ResponseFor")


async def test_status_from_a_non_recipient_is_refused(client, auth):
    sent = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 7))
    body = await submit(client, auth, AN_BINH,
                        samples.status(AN_BINH, MAU_A, sent["document_id"]), status=403)
    assert body["error"]["code"] == "not_a_recipient"


async def test_routes_for_departments_and_unknown_organs(client, auth):
    raw = samples.edoc(MAU_A, [SO_NOIVU, "000.00.00.G22", "000.00.44.H63"], 8)
    sent = await submit(client, auth, MAU_A, raw)
    assert sent["recipients"] == [{"organ": SO_NOIVU, "route": "provincial"},
                                  {"organ": "000.00.00.G22", "route": "provincial"},
                                  {"organ": "000.00.44.H63", "route": "peer.lucyen"}]


async def test_duplicate_is_same_message_and_conflict_is_409(client, auth):
    raw = samples.edoc(MAU_A, [VP_UBND], 9)
    first = await submit(client, auth, MAU_A, raw)
    again = await submit(client, auth, MAU_A, raw, status=200)
    assert again["id"] == first["id"]
    other = samples.edoc(MAU_A, [VP_UBND], 9, subject="Nội dung khác")
    body = await submit(client, auth, MAU_A, other, status=409)
    assert body["error"]["code"] == "duplicate_conflict"
    assert body["error"]["details"]["existing_id"] == first["id"]


async def test_agency_sees_only_its_own(client, auth):
    sent = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 10))
    # a third unit can neither read the envelope nor fetch or ack it from its inbox
    resp = await client.get(f"/v1/envelopes/{sent['id']}", headers=auth(AN_BINH))
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "forbidden"
    resp = await client.get(f"/v1/inbox/{sent['id']}", headers=auth(AN_BINH))
    assert resp.status == 403
    resp = await client.post(f"/v1/inbox/{sent['id']}/ack", headers=auth(AN_BINH))
    assert resp.status == 403
    # the sender cannot take it out of the recipient's inbox either
    resp = await client.post(f"/v1/inbox/{sent['id']}/ack", headers=auth(MAU_A))
    assert resp.status == 403
    # and a message id that does not exist is simply not found
    assert (await client.get("/v1/inbox/01JZZZZZZZZZZZZZZZZZZZZZZZ", headers=auth(AN_BINH))).status == 404
    # the recipient sees the envelope, but only its own delivery
    view = await (await client.get(f"/v1/envelopes/{sent['id']}", headers=auth(VP_UBND))).json()
    assert [d["recipient"] for d in view["deliveries"]] == [VP_UBND]
    # operators see everything
    resp = await client.get(f"/v1/envelopes/{sent['id']}", headers=auth(HUB_ID, "operator"))
    assert resp.status == 200


async def test_sender_must_be_the_authenticated_organisation(client, auth):
    body = await submit(client, auth, AN_BINH, samples.edoc(MAU_A, [VP_UBND], 11), status=403)
    assert body["error"]["code"] == "sender_mismatch"
    assert body["error"]["details"]["path"].endswith("/From/OrganId")


async def test_only_agencies_submit(client, auth):
    resp = await client.post("/v1/envelopes", data=samples.edoc(HUB_ID, [VP_UBND], 1),
                             headers={**auth(HUB_ID, "auditor"), **XML})
    assert resp.status == 403


@pytest.mark.parametrize("header", [None, "Bearer nonsense", "Basic abc",
                                    "Bearer lt1.eyJvIjoiMDAwLjAxLjQ4Lkg2MyJ9.forged"])
async def test_bad_credentials_are_401(client, header):
    headers = {**XML}
    if header:
        headers["Authorization"] = header
    resp = await client.post("/v1/envelopes", data=samples.edoc(MAU_A, [VP_UBND], 1), headers=headers)
    assert resp.status == 401
    body = await resp.json()
    assert body["error"]["code"] in {"no_credentials", "malformed_token", "bad_token"}
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_token_of_another_hub_is_refused(client, auth, tmp_path):
    from hub.auth import TokenAuthority
    foreign = TokenAuthority(b"x" * 32).issue(MAU_A)
    resp = await client.get("/v1/inbox", headers={"Authorization": f"Bearer {foreign}"})
    assert resp.status == 401


async def test_unknown_recipient_format_and_empty_recipients(client, auth):
    body = await submit(client, auth, MAU_A, samples.edoc(MAU_A, ["not an id!"], 12), status=422)
    assert body["error"]["details"]["path"].startswith("/edXML")


async def test_errors_have_code_message_and_line(client, auth):
    body = await submit(client, auth, MAU_A, b"<edXML><unclosed></edXML>", status=422)
    assert body["error"]["code"] == "xml_malformed"
    assert body["error"]["details"]["line"] == 1
    assert body["error"]["message"]


async def test_wrong_content_type_and_empty_body(client, auth):
    resp = await client.post("/v1/envelopes", data=b"{}", headers={
        **auth(MAU_A), "Content-Type": "application/json"})
    assert resp.status == 415
    resp = await client.post("/v1/envelopes", data=b"", headers={**auth(MAU_A), **XML})
    assert resp.status == 422
    assert (await resp.json())["error"]["code"] == "empty_body"


async def test_body_over_limit_is_refused_before_reading(aiohttp_client, make_settings):
    from hub.api.app import HUB, create_app
    client = await aiohttp_client(create_app(make_settings(max_envelope_size="20KiB")))
    token = client.app[HUB].tokens.issue(MAU_A)
    big = samples.edoc(MAU_A, [VP_UBND], 1, size=40_000)
    resp = await client.post("/v1/envelopes", data=big,
                             headers={"Authorization": f"Bearer {token}", **XML})
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "envelope_too_large"

    async def chunks():  # no Content-Length: the limit applies while streaming
        for i in range(0, len(big), 4096):
            yield big[i:i + 4096]
    resp = await client.post("/v1/envelopes", data=chunks(),
                             headers={"Authorization": f"Bearer {token}", **XML})
    assert resp.status == 413


async def test_health_and_readiness(client):
    assert (await client.get("/healthz")).status == 200
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert (await resp.json())["hub"] == HUB_ID


async def test_unknown_path_is_json_404(client):
    resp = await client.get("/v1/nothing")
    assert resp.status == 404
    assert (await resp.json())["error"]["code"] == "not_found"


async def test_inbox_pages(client, auth):
    ids = [(await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], n)))["id"]
           for n in range(100, 105)]
    page = await (await client.get("/v1/inbox?limit=2", headers=auth(VP_UBND))).json()
    assert [i["id"] for i in page["items"]] == ids[:2]
    page2 = await (await client.get(page["next"], headers=auth(VP_UBND))).json()
    assert [i["id"] for i in page2["items"]] == ids[2:4]


@pytest.mark.parametrize("policy,status", [("lenient", 202), ("strict", 422)])
async def test_organ_id_policy(aiohttp_client, make_settings, policy, status):
    from hub.api.app import HUB, create_app
    client = await aiohttp_client(create_app(make_settings(organ_id_policy=policy)))
    token = client.app[HUB].tokens.issue(MAU_A)
    resp = await client.post("/v1/envelopes", data=samples.edoc(MAU_A, ["28.22.H17"], 1),
                             headers={"Authorization": f"Bearer {token}", **XML})
    body = await resp.json()
    assert resp.status == status, body
    if status == 202:
        assert body["recipients"] == [{"organ": "28.22.H17", "route": "provincial"}]
    else:
        assert body["error"]["code"] == "bad_organ_id"
        assert body["error"]["details"]["path"].endswith("/To/OrganId")


def test_a_token_once_verified_still_expires_and_stays_tied_to_its_mac():
    import time

    from hub.auth import TokenAuthority
    from hub.errors import AuthError
    authority = TokenAuthority(b"s" * 32)
    token = authority.issue(MAU_A, lifetime=60, now=1000)
    assert authority.verify(token, now=1010).organ == MAU_A  # checked, then remembered
    with pytest.raises(AuthError) as expired:
        authority.verify(token, now=1061)
    assert expired.value.code == "token_expired"
    # a forged variant of a remembered token is still refused
    version, payload, mac = token.split(".")
    with pytest.raises(AuthError):
        authority.verify(f"{version}.{payload}.{mac[:-2]}AA", now=1010)
    assert authority.verify(authority.issue(VP_UBND), now=time.time()).organ == VP_UBND


async def test_refused_tokens_say_which_and_how_to_get_a_new_one(client, hub):
    from hub.auth import TokenAuthority
    cases = {
        "lt1.only-two": "malformed_token",
        TokenAuthority(b"x" * 32).issue(MAU_A): "bad_token",  # another hub's secret
        hub.tokens.issue(MAU_A, lifetime=60, now=1_000_000_000): "token_expired",
    }
    for token, code in cases.items():
        resp = await client.get("/v1/inbox", headers={"Authorization": f"Bearer {token}"})
        err = (await resp.json())["error"]
        assert resp.status == 401 and err["code"] == code, err
        assert "`lienthong token ORGANID`" in err["message"]
    assert "expired at 2001-09-09T01:47:40Z" in err["message"]
    assert err["details"] == {"expired_at": "2001-09-09T01:47:40Z"}


@pytest.mark.parametrize("body", [b"hello", b'{"json": true}', b"\xef\xbb\xbf  plain text"])
async def test_a_body_that_is_not_xml_says_what_is_expected(client, auth, body):
    resp = await client.post("/v1/envelopes", data=body, headers={**auth(MAU_A), **XML})
    err = (await resp.json())["error"]
    assert resp.status == 422 and err["code"] == "xml_malformed"
    assert "the body is not XML" in err["message"]
    assert "edXML envelope" in err["message"] and "Content-Type: application/xml" in err["message"]
