"""``POST sandboxes`` with env and secrets, against a real service: the kernel has them, no answer holds a
secret's value, and bad names and values are 400s that never quote a secret."""

from __future__ import annotations

import os

import pytest
import requests

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")]

SECRET = "rest-secret-value-9c2b"


def call(svc, user, method, path, **kwargs):
    r = requests.request(method, f"{svc.url}/{path}", headers=svc.headers(user), timeout=60, **kwargs)
    return r.status_code, r.text


def test_env_and_secrets_over_rest(service):
    code, text = call(service, "alice", "POST", "sandboxes",
                      json={"env": {"WANDB_MODE": "offline"}, "secrets": {"API_KEY": SECRET}})
    assert code == 201, text
    assert SECRET not in text
    sid = requests.models.complexjson.loads(text)["id"]
    try:
        code, text = call(service, "alice", "POST", f"sandboxes/{sid}/execute",
                          json={"code": "import os\nprint(os.environ['API_KEY'] == 'rest-secret-' + 'value-9c2b')\n"
                                        "print(os.environ['API_KEY'])\nos.environ['WANDB_MODE']"})
        assert code == 200 and SECRET not in text
        ex = requests.models.complexjson.loads(text)
        assert [o["text"] for o in ex["outputs"] if o["kind"] == "stream"] == ["True\n[redacted]\n"]
        assert ex["outputs"][-1]["data"]["text/plain"] == "'offline'"
        for path in (f"sandboxes/{sid}", "sandboxes"):
            code, text = call(service, "alice", "GET", path)
            assert code == 200 and SECRET not in text
    finally:
        call(service, "alice", "DELETE", f"sandboxes/{sid}")


@pytest.mark.parametrize("body, needle", [
    ({"env": {"HOME": "/root"}}, "set by the sandbox itself"),
    ({"env": {"BURSTLAB_TOKEN": "x"}}, "set by burstlab itself"),
    ({"env": {"A": "x\u0000y"}}, "NUL"),
    ({"env": {"1A": "x"}}, "env"),
    ({"secrets": {"K": 987654321}}, "the value is not shown"),
    ({"secrets": {"K": "v" * 40000}}, "at most 32768"),
])
def test_bad_env_is_a_400_that_quotes_no_secret(service, body, needle):
    code, text = call(service, "alice", "POST", "sandboxes", json=body)
    assert code == 400 and needle in text, text
    assert "987654321" not in text and "v" * 100 not in text


def test_mcp_create_sandbox_with_env_and_secrets_from_the_file_only(service, tmp_path):
    import anyio

    from test_mcp import _agent, _params, _text

    (tmp_path / "secrets.env").write_text("MCP_KEY=from-file-secret-1\n")
    os.chmod(tmp_path / "secrets.env", 0o600)

    async def body(session):
        created = await session.call_tool("create_sandbox", {"env": {"MODE": "x"}, "secrets": ["MCP_KEY"]})
        sid = created.structured_content["sandbox_id"]
        ran = await session.call_tool("run_cell", {"sandbox_id": sid, "code": (
            "import os\nprint(os.environ['MCP_KEY'])\n"
            "(os.environ['MODE'], os.environ['MCP_KEY'] == 'from-file-' + 'secret-1')")})
        refused = await session.call_tool("create_sandbox", {"secrets": ["ONLY_IN_ENV"]})
        await session.call_tool("close_sandbox", {"sandbox_id": sid})
        return ran, refused

    env = {"BURSTLAB_HOME": str(tmp_path), "ONLY_IN_ENV": "an-mcp-process-credential",
           "BURSTLAB_URL": service.url, "BURSTLAB_TOKEN": service.tokens["alice"]}
    ran, refused = anyio.run(_agent, _params(env, jupyter=True), body)
    assert not ran.is_error, _text(ran)
    assert "from-file-secret-1" not in _text(ran) + repr(ran.structured_content)
    assert "[redacted]" in _text(ran) and "('x', True)" in _text(ran)
    assert refused.is_error and "The secret ONLY_IN_ENV is not set" in _text(refused)  # never the process's env
