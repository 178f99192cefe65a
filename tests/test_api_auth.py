"""The API's front door: bearer tokens (401 with a JSON error otherwise), JSON errors for unknown
routes and methods, the OpenAPI schema and offline interactive docs."""

from __future__ import annotations

import re

import pytest

from tests.api_helpers import TOKEN, make_settings, start_api

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(moto_server):
    api = start_api(make_settings())
    yield api
    api.stop()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": "Bearer x"}, {"Authorization": TOKEN}])
def test_requests_without_a_valid_token_are_401_with_a_json_error(api, headers):
    count = api.record_count()
    with api.client(token=None) as client:
        for method, path, body in [("GET", "/v1/assets", None), ("POST", "/v1/uploads", {"filename": "a.mp4", "size": 9}),
                                   ("GET", "/v1/uploads/0123456789abcdef01234567", None),
                                   ("DELETE", "/v1/assets/0123456789abcdef01234567", None)]:
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"
    assert api.record_count() == count
    assert api.object_keys() == [] and api.multipart_uploads() == []


def test_a_valid_token_is_accepted(api):
    with api.client() as client:
        response = client.get("/v1/assets")
    assert response.status_code == 200 and response.json() == {"data": [], "next_cursor": None}


def test_unknown_routes_and_methods_are_json_errors(api):
    with api.client() as client:
        missing = client.get("/v1/nothing-here")
        wrong_method = client.put("/v1/assets")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"


def test_openapi_schema_and_docs_work_offline(api):
    with api.client(token=None) as client:
        schema = client.get("/openapi.json").json()
        docs = client.get("/docs")
        assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
        fetched = {path: client.get(path) for path in assets}
    assert {"/v1/uploads", "/v1/uploads/{upload_id}", "/v1/uploads/{upload_id}/complete", "/v1/assets",
            "/v1/assets/{asset_id}"} <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    # Every script and stylesheet comes from the API itself (no CDN) and is there.
    assert assets and all(path.startswith("/") for path in assets), assets
    assert all(r.status_code == 200 and len(r.content) > 100 for r in fetched.values()), \
        {p: r.status_code for p, r in fetched.items()}
