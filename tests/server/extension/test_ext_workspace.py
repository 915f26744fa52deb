"""workspace, hosts, openapi.json, auth (403), and the environment kernels get."""

import os

import pytest
from tornado.httpclient import HTTPClientError

from burstlab import __version__

ENDPOINTS = [("GET", "workspace"), ("GET", "hosts"), ("GET", "sessions"), ("POST", "sessions"),
             ("GET", "sessions/x"), ("DELETE", "sessions/x"), ("POST", "sessions/x/execute"),
             ("GET", "sandboxes"), ("POST", "sandboxes"), ("GET", "sandboxes/x"), ("DELETE", "sandboxes/x"),
             ("POST", "sandboxes/x/execute"), ("POST", "sandboxes/x/interrupt"), ("GET", "sandboxes/x/files/a"), ("PUT", "sandboxes/x/files/a"),
             ("DELETE", "sandboxes/x/files/a"), ("GET", "maps"), ("DELETE", "maps/x"), ("GET", "usage"),
             ("GET", "budgets"), ("PUT", "budgets/user/x"), ("DELETE", "budgets/user/x"), ("GET", "openapi.json")]


async def test_hosts_lists_declared_gpus(api):
    code, data = await api("GET", "hosts")
    assert code == 200, data
    by_type = {h["type"]: h for h in data["hosts"]}
    assert by_type["H100"]["count"] == 2 and by_type["A100"]["count"] == 1
    assert all(h["declared"] and h["source"] == "declared" for h in data["hosts"])
    assert by_type["H100"]["free"] == 2


async def test_workspace_gives_scheduler_and_user(api, jp_serverapp):
    code, data = await api("GET", "workspace")
    assert code == 200, data
    assert data["scheduler"].startswith(("tcp://", "tls://", "inproc://"))  # the operator sees it
    assert data["version"] == __version__ and data["ledger"] == "sqlite"
    ext = jp_serverapp.extension_manager.extension_points["burstlab"].app
    assert data["user"] == ext.manager.owner


async def test_kernel_environment_points_at_this_server(api, jp_serverapp, jp_base_url, jp_fetch):
    assert os.environ["BURSTLAB_URL"] == f"http://127.0.0.1:{jp_serverapp.port}{jp_base_url}"
    token = os.environ["BURSTLAB_TOKEN"]
    assert token and token != jp_serverapp.identity_provider.token
    r = await jp_fetch("burstlab", "api", "sandboxes", headers={"Authorization": f"token {token}"})
    assert r.code == 200
    # The kernels' token opens burstlab's API only, not the rest of the server.
    with pytest.raises(HTTPClientError) as e:
        await jp_fetch("api", "contents", headers={"Authorization": f"token {token}"})
    assert e.value.code == 403


@pytest.mark.parametrize("method,path", ENDPOINTS)
async def test_every_endpoint_needs_a_token(api, method, path):
    for auth in ("", "token not-a-real-token-0123456789"):
        code, data = await api(method, *path.split("/"), headers={"Authorization": auth})
        assert code == 403, (method, path, auth, data)


async def test_openapi_document(api, jp_base_url):
    code, doc = await api("GET", "openapi.json")
    assert code == 200
    assert doc["openapi"].startswith("3.1")
    assert doc["servers"][0]["url"] == jp_base_url.rstrip("/") + "/burstlab/api"
    documented = {(m.upper(), p.strip("/")) for p, item in doc["paths"].items() for m in item if m != "parameters"}
    for method, path in ENDPOINTS:
        template = "/".join("{id}" if seg == "x" else seg for seg in path.split("/"))
        template = template.replace("files/a", "files/{path}").replace("budgets/user/{id}", "budgets/{scope}/{name}")
        assert (method, template) in documented, (method, template)


def test_api_md_and_the_document_agree():
    """docs/api.md names every method and path the OpenAPI document has, and no other."""
    import re
    from pathlib import Path

    from burstlab.jupyter_ext.openapi import document

    text = (Path(__file__).resolve().parents[3] / "docs" / "api.md").read_text()
    documented = {(m.upper(), p.strip("/")) for p, item in document()["paths"].items() for m in item if m != "parameters"}
    for method, path in documented:
        assert f"{method} {path}" in text, f"docs/api.md does not name {method} {path}"
    named = set(re.findall(r"\b(GET|POST|PUT|DELETE) ((?:workspace|hosts|sessions|sandboxes|maps|usage|budgets)[\w/{}]*)", text))
    for method, path in named:
        assert (method, path.rstrip("/")) in documented, (method, path)
