"""Service routes, routing errors, response headers, id derivation vectors."""

import re
import uuid
from pathlib import Path

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
def route_table():
    """The router's table (src/api/routes.c's ROUTES, the one list of
    routes) as {path with {} for each parameter: {methods}}."""
    src = (Path(__file__).resolve().parents[2] / "src" / "api" / "routes.c").read_text()
    table = src[src.index("ROUTES[] = {"):]
    table = table[:table.index("};")]
    routes = {}
    for method, path in re.findall(r'\{"([A-Z]+)", "([^"]+)", \w+\}', table):
        routes.setdefault(path, set()).add(method.lower())
    assert len(routes) > 10, f"could not read the route table: {routes}"
    return routes


def test_openapi_document(client):
    status, body, headers = client.call("GET", "/openapi.json")
    assert status == 200
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert isinstance(body, dict), client.last_raw[:200]
    assert isinstance(body.get("openapi"), str) and body["openapi"].startswith("3."), body.get("openapi")
    assert isinstance(body.get("paths"), dict), "no paths object"


def resolve(doc, obj):
    """obj, or what its "$ref" (a local #/... pointer) names."""
    while "$ref" in obj:
        node = doc
        for part in obj["$ref"].lstrip("#/").split("/"):
            node = node[part]
        obj = node
    return obj


def test_openapi_and_the_router_agree(client):
    """Every route of the router is documented with its methods and path
    parameters, and the document names no route the router does not have."""
    status, body, _ = client.call("GET", "/openapi.json")
    assert status == 200
    documented = {}
    for p, ops in body["paths"].items():
        methods = {k for k in ops if k in ("get", "post", "put", "patch", "delete", "head", "options")}
        documented.setdefault(re.sub(r"\{[^}]*\}", "{}", p), set()).update(methods)
        names = re.findall(r"\{([^}]*)\}", p)
        for m in methods:
            params = [resolve(body, x) for x in ops[m].get("parameters", []) + ops.get("parameters", [])]
            in_path = {x.get("name") for x in params if x.get("in") == "path"}
            assert in_path == set(names), f"{m.upper()} {p}: path parameters {sorted(in_path)}, expected {names}"
    routes = route_table()
    assert documented == routes, (
        f"undocumented: { {k: sorted(v - documented.get(k, set())) for k, v in routes.items() if v - documented.get(k, set())} }; "
        f"documented but not routed: { {k: sorted(v - routes.get(k, set())) for k, v in documented.items() if v - routes.get(k, set())} }")


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
    """With the Allow header RFC 9110 requires: the methods the path has."""
    body = {} if method in ("POST", "PUT", "PATCH") else None
    status, resp, headers = client.call(method, path, body)
    assert status == 405, (method, path, status, resp)
    allow = [m.strip() for m in headers.get("allow", "").split(",")]
    assert allow and method not in allow, (method, path, headers)
    for m in allow:
        assert m in ("GET", "HEAD", "POST"), allow
        st, _, _ = client.call(m, path, {} if m == "POST" else None)
        assert st != 405, (m, path, st)
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


def test_liveness_and_readiness_probes(client, server_factory, tmp_path):
    """/health/live: the process answers. /health/ready: the store answers
    and takes writes, and the broker is connected when one is configured
    (--broker): 200 or 503, every check named."""
    status, body, headers = client.call("GET", "/health/live")
    assert (status, body) == (200, {"status": "live"}), (status, body)
    status, body, _ = client.call("GET", "/health/ready")
    assert status == 200, (status, body)
    assert body == {"status": "ready", "checks": {"store": "ok", "writes": "ok", "broker": "none"}}, body
    status, _, _ = client.call("HEAD", "/health/ready")
    assert status == 200
    # A broker nobody listens on: live, but not ready.
    srv = server_factory.start(tmp_path / "data", args=["--broker", "redis://127.0.0.1:1"])
    c = srv.client()
    status, body, _ = c.call("GET", "/health/live")
    assert status == 200, (status, body)
    status, body, _ = c.call("GET", "/health/ready")
    assert status == 503, (status, body)
    assert body["checks"] == {"store": "ok", "writes": "ok", "broker": "disconnected"}, body
    assert body["detail"] == "not ready: the broker is not connected", body
    c.close()
