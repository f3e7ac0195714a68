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
