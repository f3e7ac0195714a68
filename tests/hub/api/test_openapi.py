"""The OpenAPI document stays true: every route the app serves is in it, and
nothing in it is missing from the app."""
from __future__ import annotations

from hub.api.app import ROUTE_MODULES
from spool.states import OPERATOR_MOVES


async def test_openapi_matches_the_routes(client):
    spec = await (await client.get("/v1/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    served = set()
    for resource in client.app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        for route in resource:
            if route.method in ("HEAD", "*"):
                continue
            if "{action}" in path:  # one route serves the four operator actions
                for action in OPERATOR_MOVES:
                    served.add((route.method, path.replace("{action}", action)))
            else:
                served.add((route.method, path))
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), f"documented but not served (modules: {ROUTE_MODULES})"


async def test_every_operation_documents_its_errors(client):
    spec = await (await client.get("/v1/openapi.json")).json()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (method, path)
            if op.get("security"):
                assert "401" in op["responses"], (method, path)


async def test_the_envelope_view_is_documented(client, auth):
    from hub.edxml import samples
    from support import MAU_A, VP_UBND, submit
    spec = await (await client.get("/v1/openapi.json")).json()
    schema = spec["components"]["schemas"]["EnvelopeView"]
    orig = await submit(client, auth, MAU_A, samples.edoc(MAU_A, [VP_UBND], 1))
    upd = await submit(client, auth, MAU_A, samples.edoc(
        MAU_A, [VP_UBND], 2, business_type=2, business_document_id=orig["document_id"],
        receivers=[(VP_UBND, False)], empty_response_for=True))
    view = await (await client.get(f"/v1/envelopes/{orig['id']}", headers=auth(MAU_A))).json()
    assert set(view) == set(schema["properties"]) == set(schema["required"])
    assert view["standing"] in schema["properties"]["standing"]["enum"]
    link_schema = spec["components"]["schemas"]["Link"]
    (link,) = view["links"]
    assert set(link) <= set(link_schema["properties"]) and link["type"] in \
        link_schema["properties"]["type"]["enum"]
    mine = await (await client.get(f"/v1/envelopes/{upd['id']}", headers=auth(MAU_A))).json()
    (note,) = mine["irregularities"]
    assert set(note) == set(spec["components"]["schemas"]["Irregularity"]["properties"])
