"""One workspace per server: a notebook kernel that the server started runs %%gpu and burstlab.map on the
server's cluster, the REST API (so the lab) lists its session, a stop through the API ends it in the
notebook, and the notebook's next %%gpu cell says why and starts a new one."""

import asyncio
import contextlib

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture
def jp_server_config(jp_server_config):
    """Settings given to the server only (as c.BurstLab.* in jupyter_server_config.py): the kernels' sessions
    must follow them too."""
    return {**jp_server_config, "BurstLab": {**jp_server_config.get("BurstLab", {}), "rates": {"A100": 0.002},
                                             "idle_timeout": 123.0, "user": "carol"}}


async def _run(kc, code, timeout=90):
    """Execute in the kernel without blocking the server's loop (the kernel calls the server)."""
    out = {"stdout": "", "stderr": "", "result": None}

    def hook(msg):
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out[content["name"]] += content["text"]
        elif kind == "execute_result":
            out["result"] = content["data"].get("text/plain")
        elif kind == "error":
            out["stderr"] += "\n".join(content["traceback"])

    reply = await kc.execute_interactive(code, timeout=timeout, output_hook=hook)
    out["status"] = reply["content"]["status"]
    return out


@contextlib.asynccontextmanager
async def notebook_kernel(jp_serverapp, api):
    """A kernel the server starts for notebook "nb/analysis.ipynb", as the lab does."""
    code, _ = await api("GET", "workspace")  # the server's cluster is up before the kernel asks
    assert code == 200
    sm = jp_serverapp.session_manager
    model = await sm.create_session(path="nb/analysis.ipynb", kernel_name="python3", type="notebook")
    km = jp_serverapp.kernel_manager.get_kernel(model["kernel"]["id"])
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)
    yield kc
    try:
        await _run(kc, "import burstlab.workspace.workspace as w\nw._workspace and w._workspace.close()", timeout=30)
    finally:
        kc.stop_channels()
        await sm.delete_session(model["id"])


async def test_a_notebooks_session_is_the_servers(api, jp_serverapp):
    async with notebook_kernel(jp_serverapp, api) as kc:
        await _check(api, kc)


async def _check(api, kc):
    first = await _run(kc, "%load_ext burstlab\n")
    assert first["status"] == "ok", first
    cell = await _run(kc, "%%gpu A100\nimport os\nprint(os.environ['BURSTLAB_GPU_TYPE'])\n6 * 7")
    assert cell["status"] == "ok", cell
    assert cell["stdout"].startswith("A100") and cell["result"] == "42"

    # The kernel joined the server's scheduler: the server lists the session, with its notebook.
    joined = await _run(kc, "from burstlab.workspace import get_workspace\n"
                            "get_workspace().client.scheduler.address")
    code, ws = await api("GET", "workspace")
    assert joined["result"].strip("'") == ws["scheduler"]
    code, data = await api("GET", "sessions")
    assert code == 200, data
    mine = [s for s in data["sessions"] if s["notebook"] == "nb/analysis.ipynb"]
    assert len(mine) == 1, data
    session = mine[0]
    assert (session["gpu_type"], session["origin"], session["state"]) == ("A100", "kernel", "running")
    code, hosts = await api("GET", "hosts")
    assert {h["type"]: h["free"] for h in hosts["hosts"]}["A100"] == 0

    # Stop it through the API (the lab's panel): the GPU is free when the call returns ...
    code, stopped = await api("DELETE", "sessions", session["id"])
    assert code == 200, stopped
    code, hosts = await api("GET", "hosts")
    assert {h["type"]: h["free"] for h in hosts["hosts"]}["A100"] == 1
    code, data = await api("GET", "sessions")
    assert session["id"] not in {s["id"] for s in data["sessions"]}

    # ... and the notebook's next %%gpu cell says why its state is gone, then starts a new session.
    await asyncio.sleep(0.5)
    again = await _run(kc, "%%gpu A100\n'x' in globals()")
    assert again["status"] == "ok", again
    assert "ended (stopped through the REST API" in again["stderr"], again
    assert again["result"] == "False"
    code, data = await api("GET", "sessions")
    assert [s["id"] for s in data["sessions"] if s["notebook"] == "nb/analysis.ipynb"] != [session["id"]]

    # The notebook's usage is in the server's ledger, attributed to the notebook and the server's user,
    # priced with the server's rate card; the server's idle timeout applies to it.
    code, usage = await api("GET", "usage", params={"notebook": "nb/analysis.ipynb"})
    assert code == 200 and usage["records"], usage
    assert {r["kind"] for r in usage["records"]} == {"session"}
    assert {r["user"] for r in usage["records"]} == {"carol"}
    assert {r["rate_nusd_per_s"] for r in usage["records"]} == {2_000_000}
    idle = await _run(kc, "get_workspace().config.idle_timeout")
    assert idle["result"] == "123.0"
