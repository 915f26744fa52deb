"""One id per sandbox everywhere: the id a front door gives (REST's manager, MCP's local backend, %%sandbox's
workspace) is the one Workspace.sandboxes() lists, and the one the panel (GET sandboxes) shows."""

from __future__ import annotations

import asyncio

import burstlab
from burstlab.jupyter_ext.manager import Manager
from burstlab.jupyter_ext.mcp import LocalBackend


def _ids(ws, user=None):
    return {r.id for r in ws.sandboxes(user)}


def test_ids_are_the_workspaces_from_every_door():
    ws = burstlab.get_workspace()
    # MCP's local backend
    backend = LocalBackend()
    mcp_id, mcp_sb = backend.create(10, None, False)
    # the REST manager (what POST sandboxes and GET sandboxes answer, without HTTP)
    manager = Manager(ws)
    loop = asyncio.new_event_loop()
    try:
        rest = loop.run_until_complete(manager.create_sandbox("alice", {"timeout": 10}))
        listed = manager.list_sandboxes("alice")["sandboxes"]
        # a plain sandbox and the notebook's %%sandbox take theirs from the same workspace
        with burstlab.Sandbox(timeout=10) as plain:
            plain_id = ws.sandbox_id(plain)
            assert [s["id"] for s in listed] == [rest["id"]]  # the panel shows the id REST returned
            assert {mcp_id, rest["id"], plain_id} <= _ids(ws)
            assert len({mcp_id, rest["id"], plain_id}) == 3
            assert _ids(ws, "alice") == {rest["id"]}
            assert ws.get_sandbox(rest["id"]) is manager._entry("alice", rest["id"]).sandbox
            assert ws.get_sandbox(mcp_id) is mcp_sb.sandbox and backend.describe(mcp_sb)["id"] == mcp_id
            record = next(r for r in ws.sandboxes() if r.id == rest["id"])
            assert record.to_json() | {"usage": None} == rest | {"usage": None}  # the same record, by either door
        assert plain_id not in _ids(ws)
        loop.run_until_complete(manager.close_sandbox("alice", rest["id"]))
        assert rest["id"] not in _ids(ws) and ws.get_sandbox(rest["id"]) is None
    finally:
        backend.close_all()
        for pool in (manager._api_pool, manager._wait_pool, manager._ledger_pool):
            pool.shutdown(wait=True)
        loop.close()
    assert mcp_id not in _ids(ws)


def test_the_notebooks_sandbox_is_listed_under_its_id():
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    ws = burstlab.get_workspace()
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "burstlab")
    before = _ids(ws)
    with capture_output():
        assert shell.run_cell("%%sandbox\n1 + 1").success
    new = _ids(ws) - before
    magics = shell.magics_manager.registry["SandboxMagics"]
    try:
        assert new == {ws.sandbox_id(magics.sandbox_obj)}  # %%sandbox's sandbox, as Workspace.sandboxes() lists it
    finally:
        shell.run_line_magic("sandbox_close", "")
    assert not _ids(ws) & new
