"""template.yaml is the one source of truth for routes: the local gateway serves exactly what it declares."""

from pathlib import Path

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from recommender.local.gateway import Gateway, read_routes
from tests.conftest import ROOT

TEMPLATE = ROOT / "template.yaml"


def app_routes(app) -> set[tuple[str, str]]:
    return {(m, r.path) for r in app.routes if isinstance(r, APIRoute) for m in r.methods}


def test_template_routes_are_exactly_the_functions_routes():
    from functions.auth.app import app as auth
    from functions.recommend.app import app as recommend

    routes = read_routes(TEMPLATE)
    declared = {(r.method, r.path) for r in routes}
    assert declared == app_routes(auth) | app_routes(recommend)
    by_function = {r.function: r.code_uri for r in routes}
    assert by_function == {"AuthFunction": "functions/auth/", "RecommendFunction": "functions/recommend/"}
    assert {(r.method, r.path) for r in routes if r.function == "AuthFunction"} == app_routes(auth)


def test_gateway_dispatches_and_reports_unknown_routes(trained_storage):
    client = TestClient(Gateway(read_routes(TEMPLATE), ROOT))
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/users/me").status_code == 401  # routed to the auth function
    assert client.get("/nowhere").status_code == 404
    assert client.get("/send_data").status_code == 405
    spec = client.get("/openapi.json").json()
    assert {"/token", "/users/me", "/send_data", "/recommendations", "/items", "/health"} <= set(spec["paths"])
    assert "OAuth2PasswordBearer" in spec["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200


def test_read_routes_ignores_cloudformation_tags(tmp_path: Path):
    template = tmp_path / "t.yaml"
    template.write_text("""
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/x/
      Handler: app.handler
      MemorySize: !Ref Memory
      Events:
        A: {Type: HttpApi, Properties: {ApiId: !Ref Api, Method: get, Path: /a}}
        B: {Type: Schedule, Properties: {Schedule: rate(1 hour)}}
""")
    assert [(r.method, r.path, r.handler) for r in read_routes(template)] == [("GET", "/a", "app.handler")]
