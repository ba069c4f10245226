"""Service routes, routing errors, response headers, id derivation vectors."""

import re
import uuid

import pytest

VECTORS = [
    ("11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222",
     "70030948-bb89-9933-eaf8-ac47c88cbaff"),
    ("11111111-1111-1111-1111-111111111111", "33333333-3333-3333-3333-333333333333",
     "6fd01fcd-2566-e1aa-5733-840ab194d15a"),
    ("22222222-2222-2222-2222-222222222222", "33333333-3333-3333-3333-333333333333",
     "bf2359f9-c0dd-21fe-d1dc-cdb4a1ae30ba"),
]


@pytest.mark.parametrize("a,b,expected", VECTORS)
def test_conversation_id_helper_matches_vectors(lib, a, b, expected):
    assert lib.derive_conversation_id(a, b) == expected
    assert lib.derive_conversation_id(b, a) == expected
    assert lib.derive_conversation_id(a.upper(), b) == expected


def test_health(client):
    status, body, headers = client.call("GET", "/health")
    assert status == 200, body
    assert isinstance(body, dict) and body.get("status") == "ok", body
    assert headers.get("content-type", "").startswith("application/json"), headers


def test_root(client):
    status, body, headers = client.call("GET", "/")
    assert status == 200, body
    assert body.get("name") == "messenger", body
    assert "version" in body and isinstance(body["version"], str) and body["version"], body
    assert headers.get("content-type", "").startswith("application/json"), headers


# Every route of the contract, with its methods (path parameter names normalised).
ROUTES = {
    "/api/users": {"post", "get"},
    "/api/users/{}": {"get"},
    "/api/messages/": {"post"},
    "/api/messages": {"post"},
    "/api/messages/send": {"post"},
    "/api/messages/conversation/{}": {"get"},
    "/api/messages/conversation/{}/before": {"get"},
    "/api/conversations/user/{}": {"get"},
    "/api/conversations/{}": {"get"},
    "/health": {"get"},
    "/": {"get"},
}


def test_openapi_document(client):
    status, body, headers = client.call("GET", "/openapi.json")
    assert status == 200
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert isinstance(body, dict), client.last_raw[:200]
    assert isinstance(body.get("openapi"), str) and body["openapi"].startswith("3."), body.get("openapi")
    assert isinstance(body.get("paths"), dict), "no paths object"
    paths = {}
    for p, ops in body["paths"].items():
        paths.setdefault(re.sub(r"\{[^}]*\}", "{}", p), set()).update(k.lower() for k in ops)
    missing = {p: sorted(m) for p, m in ROUTES.items() if not m <= paths.get(p, set())}
    assert not missing, f"routes missing from /openapi.json (path: methods): {missing}"


@pytest.mark.parametrize("path", [
    "/nope",
    "/api",
    "/api/unknown",
    "/api/users/00000000-0000-0000-0000-000000000000/extra",
    "/api/messages/conversation",
    "/api/conversations",
    "/healthz",
])
def test_unknown_route_is_404_not_found(client, path):
    status, body, headers = client.call("GET", path)
    assert status == 404, (path, status, body)
    assert body == {"detail": "Not Found"}, body
    assert headers.get("content-type", "").startswith("application/json"), headers


U = "00000000-0000-0000-0000-000000000001"


@pytest.mark.parametrize("method,path", [
    ("DELETE", "/api/users"),
    ("PUT", "/api/users"),
    ("POST", f"/api/users/{U}"),
    ("DELETE", f"/api/users/{U}"),
    ("GET", "/api/messages/"),
    ("GET", "/api/messages/send"),
    ("PUT", "/api/messages"),
    ("POST", f"/api/messages/conversation/{U}"),
    ("POST", f"/api/messages/conversation/{U}/before"),
    ("POST", f"/api/conversations/user/{U}"),
    ("PATCH", f"/api/conversations/{U}"),
    ("POST", "/health"),
    ("POST", "/"),
    ("POST", "/openapi.json"),
])
def test_wrong_method_is_405(client, method, path):
    body = {} if method in ("POST", "PUT", "PATCH") else None
    status, resp, headers = client.call(method, path, body)
    assert status == 405, (method, path, status, resp)
    assert isinstance(resp, dict) and isinstance(resp.get("detail"), str), resp
    assert headers.get("content-type", "").startswith("application/json"), headers


def test_content_type_is_json_everywhere(client):
    """Success and error responses of every kind carry application/json."""
    a = client.create_user()
    b = client.create_user()
    m = client.send(a["user_id"], b["user_id"], "hi")
    cid = m["conversation_id"]
    requests = [
        ("GET", "/health", None, 200),
        ("GET", "/", None, 200),
        ("GET", "/openapi.json", None, 200),
        ("POST", "/api/users", {"username": f"ct-{uuid.uuid4().hex[:8]}"}, 201),
        ("POST", "/api/users", {"username": a["username"]}, 409),
        ("POST", "/api/users", {"username": ""}, 422),
        ("POST", "/api/users", None, 400),
        ("GET", f"/api/users/{a['user_id']}", None, 200),
        ("GET", f"/api/users/{uuid.uuid4()}", None, 404),
        ("GET", "/api/users/xyz", None, 422),
        ("GET", f"/api/users?username={a['username']}", None, 200),
        ("POST", "/api/messages/", {"sender_id": a["user_id"], "receiver_id": b["user_id"], "content": "x"}, 201),
        ("GET", f"/api/messages/conversation/{cid}", None, 200),
        ("GET", f"/api/messages/conversation/{cid}?limit=0", None, 422),
        ("GET", f"/api/conversations/user/{a['user_id']}", None, 200),
        ("GET", f"/api/conversations/{cid}", None, 200),
        ("GET", "/no/such/route", None, 404),
        ("DELETE", "/api/users", None, 405),
    ]
    for method, path, body, expected in requests:
        status, resp, headers = client.call(method, path, body)
        assert status == expected, (method, path, status, resp)
        ct = headers.get("content-type", "")
        assert ct.split(";")[0].strip().lower() == "application/json", (method, path, ct)
        assert resp is not None, (method, path, client.last_raw[:200])
