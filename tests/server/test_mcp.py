"""The MCP server (`jupyter burstlab mcp`, stdio) driven by the `mcp` client library, as an agent would.

Two back ends: in-process sandboxes (no URL), and a running standalone service (BURSTLAB_URL), where
the sandbox the agent creates is the service's (listed over REST) and is closed when the agent leaves.
"""

from __future__ import annotations

import base64
import os
import sys
import time

import anyio
import pytest


pytest.importorskip("mcp")
from mcp import ClientSession, StdioServerParameters, stdio_client  # noqa: E402

TOOLS = {"create_sandbox", "run_cell", "read_file", "write_file", "list_files", "list_sandboxes", "close_sandbox"}


def _params(env: dict[str, str], *args: str, jupyter: bool = False) -> StdioServerParameters:
    # stdio_client passes on only a few variables (PATH, HOME...): give the server what burstlab needs.
    keep = {k: os.environ[k] for k in ("BURSTLAB_HOME", "BURSTLAB_DECLARED_GPUS", "BURSTLAB_NOTEBOOK", "TMPDIR")
            if k in os.environ}
    argv = ["-m", "jupyter", "burstlab", "mcp"] if jupyter else ["-m", "burstlab.jupyter_ext.mcp"]
    return StdioServerParameters(command=sys.executable, args=[*argv, *args], env={**keep, **env})


async def _agent(params: StdioServerParameters, body):
    with open(os.devnull, "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await body(session)


def _text(result) -> str:
    return "".join(c.text for c in result.content if getattr(c, "type", "") == "text")


async def _exercise(session: ClientSession) -> dict:
    """The whole agent loop: list tools, create, run (state persists), files both ways, limits, errors, close."""
    seen: dict = {}
    tools = await session.list_tools()
    seen["tools"] = {t.name for t in tools.tools}
    run_schema = next(t for t in tools.tools if t.name == "run_cell").input_schema
    assert {"sandbox_id", "code"} <= set(run_schema["required"])

    created = await session.call_tool("create_sandbox", {"timeout": 20, "memory": "256MiB"})
    assert not created.is_error, _text(created)
    sid = created.structured_content["sandbox_id"]
    assert sid in _text(created) and "256 MiB" in _text(created)
    seen["sid"] = sid

    r = await session.call_tool("run_cell", {"sandbox_id": sid, "code": "x = 21\nprint('hello')\nx * 2"})
    assert not r.is_error, _text(r)
    assert r.structured_content["error"] is None
    assert r.structured_content["outputs"][0] == {"kind": "stream", "name": "stdout", "text": "hello\n",
                                                  "data": {}, "metadata": {}}
    assert "hello" in _text(r) and "result:\n42" in _text(r)
    r = await session.call_tool("run_cell", {"sandbox_id": sid, "code": "x + 1"})
    assert "result:\n22" in _text(r)  # state persists

    w = await session.call_tool("write_file", {"sandbox_id": sid, "path": "in/data.csv", "content": "a,b\n1,2\n"})
    assert w.structured_content["size"] == 8, _text(w)
    r = await session.call_tool("run_cell", {"sandbox_id": sid, "code":
                                             "open('in/data.csv').read().count('\\n')"})
    assert "result:\n2" in _text(r)
    await session.call_tool("run_cell", {"sandbox_id": sid, "code": "open('out.bin','wb').write(bytes(range(256)))"})
    rb = await session.call_tool("read_file", {"sandbox_id": sid, "path": "out.bin"})
    assert rb.structured_content["encoding"] == "base64"
    assert base64.b64decode(rb.structured_content["content"]) == bytes(range(256))
    rt = await session.call_tool("read_file", {"sandbox_id": sid, "path": "in/data.csv"})
    assert _text(rt) == "a,b\n1,2\n"
    ls = await session.call_tool("list_files", {"sandbox_id": sid})
    names = {e["name"]: e["type"] for e in ls.structured_content["entries"]}
    assert names.get("in") == "dir" and names.get("out.bin") == "file", names

    # the user's error and a limit are data in a successful tool call; refusals are tool errors
    r = await session.call_tool("run_cell", {"sandbox_id": sid, "code": "1/0"})
    assert not r.is_error and r.structured_content["error"]["ename"] == "ZeroDivisionError"
    assert "error: ZeroDivisionError" in _text(r) and "\x1b[" not in _text(r)
    r = await session.call_tool("run_cell", {"sandbox_id": sid, "code": "import time; time.sleep(30)", "timeout": 0.5})
    assert r.structured_content["error"]["ename"] == "SandboxTimeout"
    bad = await session.call_tool("read_file", {"sandbox_id": sid, "path": "../../etc/passwd"})
    assert bad.is_error and ".." in _text(bad)
    bad = await session.call_tool("run_cell", {"sandbox_id": "sb-nope", "code": "1"})
    assert bad.is_error and "sb-nope" in _text(bad)

    listed = await session.call_tool("list_sandboxes", {})
    assert sid in {s["id"] for s in listed.structured_content["sandboxes"]}
    seen["second"] = (await session.call_tool("create_sandbox", {})).structured_content["sandbox_id"]
    closed = await session.call_tool("close_sandbox", {"sandbox_id": sid})
    assert not closed.is_error and closed.structured_content["state"] == "closed"
    again = await session.call_tool("run_cell", {"sandbox_id": sid, "code": "1"})
    assert again.is_error
    return seen


def _sandbox_pids() -> list[int]:
    """Host pids running under a sandbox uid (none should outlive the MCP server that made them)."""
    from burstlab.sandbox._sandbox import UID_BASE, UID_SPAN

    pids = []
    for p in os.listdir("/proc"):
        try:
            with open(f"/proc/{p}/status") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration, ValueError):
            continue
        if UID_BASE <= uid < UID_BASE + UID_SPAN:
            pids.append(int(p))
    return pids


@pytest.mark.slow
def test_mcp_in_process_sandboxes():
    before = set(_sandbox_pids())
    during: dict = {}

    async def body(session):
        seen = await _exercise(session)
        during["pids"] = set(_sandbox_pids()) - before
        return seen

    seen = anyio.run(_agent, _params({}), body)
    assert TOOLS <= seen["tools"]
    assert during["pids"], "the second sandbox should be running while the agent is connected"
    deadline = time.monotonic() + 10
    while set(_sandbox_pids()) & during["pids"]:
        assert time.monotonic() < deadline, "sandboxes outlived the MCP server"
        time.sleep(0.1)


@pytest.mark.slow
def test_mcp_against_a_running_service(service):
    """`jupyter burstlab mcp` with BURSTLAB_URL/TOKEN: the agent's sandboxes are the service's, as that user.

    ``service`` (tests/server/conftest.py) is a `jupyter burstlab` process with alice's and bob's tokens."""
    from burstlab.client import RemoteWorkspace

    with RemoteWorkspace(service.url, service.tokens["alice"]) as alice:
        during: dict = {}

        async def body(session):
            seen = await _exercise(session)
            during["listed"] = {s.id: s.info["notebook"] for s in alice.sandboxes()}
            return seen

        env = {"BURSTLAB_URL": service.url, "BURSTLAB_TOKEN": service.tokens["alice"]}
        seen = anyio.run(_agent, _params(env, jupyter=True), body)
        assert TOOLS <= seen["tools"]
        # the agent's second sandbox was on the service, attributed to alice's "mcp" notebook...
        assert during["listed"] == {seen["second"]: "mcp"}
        # ...and closed when the agent went away
        assert alice.sandboxes() == []

        async def refused(session):
            r = await session.call_tool("create_sandbox", {})
            return r.is_error, _text(r)

        # a bad token is a tool error that names the fix, not a crash
        env = {"BURSTLAB_URL": service.url, "BURSTLAB_TOKEN": "wrong-token-xyz"}
        is_error, text = anyio.run(_agent, _params(env), refused)
        assert is_error and "token rejected" in text and "BURSTLAB_TOKEN" in text
