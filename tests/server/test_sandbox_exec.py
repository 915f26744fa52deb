"""``POST sandboxes/{id}/exec``, ``RemoteSandbox.exec`` and the MCP ``sandbox_exec`` tool, against a real service."""

from __future__ import annotations

import os
import time

import anyio
import pytest
import requests

from test_mcp import _agent, _params, _text

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")]


def call(svc, user, method, path, **kwargs):
    r = requests.request(method, f"{svc.url}/{path}", headers=svc.headers(user), timeout=60, **kwargs)
    return r.status_code, r.json()


def test_exec_over_rest_and_the_client(service):
    code, sb = call(service, "alice", "POST", "sandboxes", json={})
    assert code == 201
    sid = sb["id"]
    try:
        code, r = call(service, "alice", "POST", f"sandboxes/{sid}/exec", json={"cmd": ["sh", "-c", "echo hi; exit 3"]})
        assert code == 200 and (r["exit_code"], r["stdout"], r["error"]) == (3, "hi\n", None)
        code, r = call(service, "alice", "POST", f"sandboxes/{sid}/exec",
                       json={"cmd": "echo $HOME >&2; sleep 30", "shell": True, "timeout": 0.5})
        assert code == 200 and r["timed_out"] and r["exit_code"] == 137 and r["stderr"] == "/home/user\n"
        assert r["error"].startswith("SandboxTimeout")
        # a string without shell, a bad field, another user's sandbox
        assert call(service, "alice", "POST", f"sandboxes/{sid}/exec", json={"cmd": "ls -la"})[0] == 400
        assert call(service, "alice", "POST", f"sandboxes/{sid}/exec", json={"cmd": ["ls"], "env": {}})[0] == 400
        assert call(service, "bob", "POST", f"sandboxes/{sid}/exec", json={"cmd": ["ls"]})[0] == 404

        from burstlab.client import RemoteWorkspace

        with RemoteWorkspace(service.url, service.tokens["alice"]) as ws:
            remote = ws.get_sandbox(sid)
            remote.run("open('made-by-run.txt', 'w').write('x')")
            r = remote.exec(["ls"])
            assert r.ok and r.stdout == "made-by-run.txt\n"
    finally:
        call(service, "alice", "DELETE", f"sandboxes/{sid}")


def test_mcp_sandbox_exec_on_the_service(service):
    async def body(session):
        created = await session.call_tool("create_sandbox", {})
        sid = created.structured_content["sandbox_id"]
        r = await session.call_tool("sandbox_exec", {"sandbox_id": sid, "command": "echo made > f.txt; cat f.txt; exit 2"})
        r2 = await session.call_tool("sandbox_exec", {"sandbox_id": sid, "command": ["cat", "f.txt"]})
        await session.call_tool("close_sandbox", {"sandbox_id": sid})
        return r, r2

    env = {"BURSTLAB_URL": service.url, "BURSTLAB_TOKEN": service.tokens["alice"]}
    r, r2 = anyio.run(_agent, _params(env, jupyter=True), body)
    assert not r.is_error, _text(r)
    assert r.structured_content["exit_code"] == 2 and r.structured_content["stdout"] == "made\n"
    assert "exit code 2" in _text(r) and "made" in _text(r)
    assert r2.structured_content["exit_code"] == 0 and r2.structured_content["stdout"] == "made\n"


def test_lifetime_and_metrics_over_rest(service):
    code, sb = call(service, "alice", "POST", "sandboxes", json={"lifetime": 2})
    assert code == 201 and sb["limits"]["lifetime"] == 2 and 0 < sb["limits"]["expires_in"] <= 2
    sid = sb["id"]
    code, m = call(service, "alice", "GET", f"sandboxes/{sid}/metrics")
    assert code == 200 and m["samples"] and m["samples"][-1]["pids"] >= 2 and m["samples"][-1]["memory_bytes"] > 0
    assert call(service, "bob", "GET", f"sandboxes/{sid}/metrics")[0] == 404
    deadline = time.monotonic() + 15
    while True:
        code, err = call(service, "alice", "POST", f"sandboxes/{sid}/execute", json={"code": "1"})
        if code == 404:
            break
        assert code == 200 and time.monotonic() < deadline, (code, err)
        time.sleep(0.2)
    assert "reached its lifetime of 2 s" in err["message"]
    assert sid not in {s["id"] for s in call(service, "alice", "GET", "sandboxes")[1]["sandboxes"]}


def test_snapshots_over_rest(service):
    code, sb = call(service, "alice", "POST", "sandboxes", json={})
    sid = sb["id"]
    try:
        call(service, "alice", "POST", f"sandboxes/{sid}/execute", json={"code": "f = lambda x: x + 1\ng = (i for i in [])"})
        call(service, "alice", "POST", f"sandboxes/{sid}/exec", json={"cmd": "echo kept > w.txt", "shell": True})
        code, err = call(service, "alice", "POST", f"sandboxes/{sid}/snapshot", json={})
        assert code == 409 and 'mode="namespace"' in err["message"]
        code, snap = call(service, "alice", "POST", f"sandboxes/{sid}/snapshot", json={"mode": "namespace"})
        assert code == 201 and snap["user"] == "alice" and "f" in snap["captured"] and "g" in snap["not_captured"]
        assert [s["id"] for s in call(service, "alice", "GET", "snapshots")[1]["snapshots"]] == [snap["id"]]
        assert call(service, "bob", "GET", "snapshots")[1] == {"snapshots": []}
        assert call(service, "bob", "POST", f"sandboxes?from={snap['id']}", json={})[0] == 404
        assert call(service, "bob", "DELETE", f"snapshots/{snap['id']}")[0] == 404
        code, r = call(service, "alice", "POST", f"sandboxes?from={snap['id']}", json={})
        assert code == 201, r
        code, ex = call(service, "alice", "POST", f"sandboxes/{r['id']}/execute",
                        json={"code": "f(1), open('w.txt').read()"})
        assert ex["outputs"][-1]["data"]["text/plain"] == "(2, 'kept\\n')"
        call(service, "alice", "DELETE", f"sandboxes/{r['id']}")
        assert call(service, "alice", "DELETE", f"snapshots/{snap['id']}")[0] == 200
        assert call(service, "alice", "GET", "snapshots")[1] == {"snapshots": []}
    finally:
        call(service, "alice", "DELETE", f"sandboxes/{sid}")


async def _snapshot_round_trip(session):
    created = await session.call_tool("create_sandbox", {})
    sid = created.structured_content["sandbox_id"]
    await session.call_tool("run_cell", {"sandbox_id": sid, "code": "plan = ['a']\nit = (i for i in range(3))"})
    snap = await session.call_tool("snapshot_sandbox", {"sandbox_id": sid})
    assert not snap.is_error, _text(snap)
    snap_id = snap.structured_content["snapshot_id"]
    restored = await session.call_tool("restore_snapshot", {"snapshot_id": snap_id})
    assert not restored.is_error, _text(restored)
    rid = restored.structured_content["sandbox_id"]
    await session.call_tool("run_cell", {"sandbox_id": rid, "code": "plan.append('b')"})
    out = {"restored": (await session.call_tool("run_cell", {"sandbox_id": rid, "code": "plan"})).structured_content,
           "source": (await session.call_tool("run_cell", {"sandbox_id": sid, "code": "plan"})).structured_content,
           "snap_text": _text(snap),
           "bad": await session.call_tool("restore_snapshot", {"snapshot_id": "snap-0000000000000000"})}
    for s in (sid, rid):
        await session.call_tool("close_sandbox", {"sandbox_id": s})
    return out


def _check_round_trip(out):
    assert out["restored"]["outputs"][-1]["data"]["text/plain"] == "['a', 'b']"
    assert out["source"]["outputs"][-1]["data"]["text/plain"] == "['a']"
    assert "plan" in out["snap_text"] and "it (" in out["snap_text"]  # the iterator is named as not captured
    assert out["bad"].is_error and "snap-0000000000000000" in _text(out["bad"])


def test_mcp_snapshots_on_the_service(service):
    env = {"BURSTLAB_URL": service.url, "BURSTLAB_TOKEN": service.tokens["alice"]}
    _check_round_trip(anyio.run(_agent, _params(env, jupyter=True), _snapshot_round_trip))


def test_mcp_snapshots_in_process(tmp_path):
    _check_round_trip(anyio.run(_agent, _params({"BURSTLAB_HOME": str(tmp_path)}), _snapshot_round_trip))
