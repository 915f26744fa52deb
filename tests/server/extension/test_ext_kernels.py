"""A notebook's whole kernel on a GPU, through the Jupyter server's own /api/kernels and /api/sessions:
the burstlab kernelspecs, the provisioner, and the server's workspace (declared GPUs: H100:2, A100:1)."""

import asyncio
import json
import os
import time
import uuid

import pytest

from burstlab.remote_kernel import _kernelspecs


@pytest.fixture
def jp_server_config(jp_server_config, request):
    # The server's restarter notices a dead kernel within a second (default 3 s), to keep these tests short;
    # a test may add settings of its own (its ``server_config`` attribute).
    return {**jp_server_config, "KernelRestarter": {"time_to_dead": 1.0},
            **getattr(request.function, "server_config", {})}


@pytest.fixture
def kernelspecs(jp_environ):
    """burstlab's kernelspecs in the test's Jupyter data folder (`kernelspecs install --user`)."""
    _kernelspecs.install(["H100", "A100"], user=True)


async def _execute(jp_ws_fetch, kernel_id, code, timeout=30.0):
    """Run ``code`` over the kernel's websocket, as JupyterLab does: (execute_reply content, stdout)."""
    ws = await jp_ws_fetch("api", "kernels", kernel_id, "channels")
    try:
        msg_id = uuid.uuid4().hex
        ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                       "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
            "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False},
        }))
        out, reply, idle = [], None, False
        deadline = time.monotonic() + timeout
        while reply is None or not idle:  # the reply (shell) and the outputs (iopub) come in either order
            raw = await asyncio.wait_for(ws.read_message(), max(0.01, deadline - time.monotonic()))
            assert raw is not None, "the kernel's websocket closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
            if msg["channel"] == "shell" and msg["msg_type"] == "execute_reply":
                reply = msg["content"]
        return reply, "".join(out)
    finally:
        ws.close()


async def _wait_for(condition, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await condition()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _open_intervals(jp_serverapp, notebook):
    ws = jp_serverapp.web_app.settings["burstlab_manager"].ws
    return [r for r in ws.usage(kind="session", notebook=notebook) if r.stop_ns is None]


async def test_notebook_on_a_gpu_kernel(kernelspecs, jp_fetch, jp_ws_fetch, api, jp_serverapp):
    r = await jp_fetch("api", "kernelspecs")
    specs = json.loads(r.body)["kernelspecs"]
    assert specs["burstlab-h100"]["spec"]["display_name"] == "Python 3 (burstlab · H100)"
    assert specs["burstlab-h100"]["spec"]["interrupt_mode"] == "message"

    r = await jp_fetch("api", "sessions", method="POST", body=json.dumps(
        {"path": "gpu.ipynb", "type": "notebook", "name": "gpu.ipynb", "kernel": {"name": "burstlab-h100"}}), request_timeout=90)
    assert r.code == 201
    jsession = json.loads(r.body)
    kernel_id = jsession["kernel"]["id"]

    # The burstlab side: a session like a %%gpu one, attributed to the notebook, on the panel's list.
    code, listing = await api("GET", "sessions")
    (gpu_session,) = [s for s in listing["sessions"] if s["gpu_type"] == "H100"]
    notebook = gpu_session["notebook"]
    assert notebook.endswith("gpu.ipynb")
    assert [r.resource for r in _open_intervals(jp_serverapp, notebook)] == ["H100"]

    reply, out = await _execute(jp_ws_fetch, kernel_id, "import os; x = 6; print(os.environ['BURSTLAB_GPU_TYPE'])")
    assert reply["status"] == "ok" and out == "H100\n"

    # Restart through the server: the same burstlab session (lease, interval), a fresh kernel.
    r = await jp_fetch("api", "kernels", kernel_id, "restart", method="POST", body=b"", request_timeout=90)
    assert r.code == 200
    reply, out = await _execute(jp_ws_fetch, kernel_id, "print('x' in dir())")
    assert reply["status"] == "ok" and out == "False\n"
    code, listing = await api("GET", "sessions")
    assert [s["id"] for s in listing["sessions"]] == [gpu_session["id"]]
    assert len(_open_intervals(jp_serverapp, notebook)) == 1

    # Shutting the notebook's session down releases the GPU and closes the interval.
    r = await jp_fetch("api", "sessions", jsession["id"], method="DELETE", request_timeout=90)
    assert r.code == 204
    code, listing = await api("GET", "sessions")
    assert listing["sessions"] == []
    assert _open_intervals(jp_serverapp, notebook) == []
    code, hosts = await api("GET", "hosts")
    assert {h["type"]: h["free"] for h in hosts["hosts"]}["H100"] == 2


async def test_what_burstlab_stops_the_server_shuts_down(kernelspecs, jp_fetch, jp_ws_fetch, api, jp_serverapp):
    """The panel's Stop, a budget, burstlab's idle timeout and the server stopping: the kernel is shut down (not
    restarted on another GPU), the GPU released, the interval closed."""
    from burstlab.billing import open_ledger

    ws = jp_serverapp.web_app.settings["burstlab_manager"].ws

    async def start(name):
        r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": name}), request_timeout=90)
        return json.loads(r.body)["id"]

    def kernel_gone(kernel_id):
        async def gone():
            r = await jp_fetch("api", "kernels", kernel_id, raise_error=False)
            return r.code == 404
        return gone

    def record(kernel_id):
        (rec,) = ws.usage(kind="session", notebook=f"kernel-{kernel_id}")
        return rec

    # 1. The panel's Stop (DELETE burstlab/api/sessions/{id}).
    kernel_id = await start("burstlab-a100")
    code, listing = await api("GET", "sessions")
    (gpu_session,) = listing["sessions"]
    # No second A100: starting another such kernel fails with the capacity message, which JupyterLab shows.
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "burstlab-a100"}), raise_error=False,
                       request_timeout=90)
    assert r.code == 409 and json.loads(r.body)["message"].startswith("No A100 is free (1 A100 declared")
    # jupyter_client leaves a kernel whose start failed among its pending ones, and the server's shutdown then
    # stumbled on it (404, and a server that hung on SIGTERM): the provisioner drops it from there itself.
    assert not jp_serverapp.kernel_manager._pending_kernels
    code, _ = await api("DELETE", "sessions", gpu_session["id"])
    assert code == 200
    # The server's restarter sees the kernel dead; the provisioner has the server shut it down.
    await _wait_for(kernel_gone(kernel_id), timeout=15, what="the server to shut the stopped kernel down")
    assert record(kernel_id).stop_ns is not None

    # 2. A budget's hard stop (set below what the notebook has spent: it stops at once).
    kernel_id = await start("burstlab-a100")
    ws.set_budget("notebook", f"kernel-{kernel_id}", 0.000001)
    try:
        await _wait_for(kernel_gone(kernel_id), timeout=15, what="the server to shut the over-budget kernel down")
    finally:
        ws.remove_budget("notebook", f"kernel-{kernel_id}")
    assert record(kernel_id).stop_ns is not None

    # 3. burstlab's idle timeout, fed by the server's record of the kernel's last activity.
    saved = ws.config.idle_timeout
    kernel_id = await start("burstlab-h100")
    reply, out = await _execute(jp_ws_fetch, kernel_id, "print(1 + 1)")
    assert reply["status"] == "ok" and out == "2\n"
    ws.set_idle_timeout(3.0)
    try:
        await _wait_for(kernel_gone(kernel_id), timeout=20, what="the idle GPU kernel to be shut down")
    finally:
        ws.set_idle_timeout(saved)
    assert record(kernel_id).stop_ns is not None
    code, listing = await api("GET", "sessions")
    assert listing["sessions"] == []

    # 4. The server stopping releases every GPU kernel.
    kernel_ids = [await start("burstlab-h100"), await start("burstlab-a100")]
    sessions = [jp_serverapp.kernel_manager.get_kernel(k).provisioner.session_id for k in kernel_ids]
    pids = [ws.get_session(s).lease.kernel_pid for s in sessions]
    home, url = ws.config.home, ws.config.ledger_url
    # What ServerApp._cleanup does first (the test's teardown does all of it, again): extensions, then kernels.
    await jp_serverapp.cleanup_extensions()
    await jp_serverapp.cleanup_kernels()
    assert jp_serverapp.kernel_manager.list_kernel_ids() == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    ledger = open_ledger(url, home)
    try:
        records = [r for r in ledger.usage(kind="session") if r.notebook in {f"kernel-{k}" for k in kernel_ids}]
    finally:
        ledger.close()
    assert len(records) == 2 and all(r.stop_ns is not None for r in records)


async def test_the_servers_culler_releases_the_gpu(kernelspecs, jp_fetch, jp_ws_fetch, api, jp_serverapp):
    ws = jp_serverapp.web_app.settings["burstlab_manager"].ws
    r = await jp_fetch("api", "kernels", method="POST", body=json.dumps({"name": "burstlab-h100"}), request_timeout=90)
    kernel_id = json.loads(r.body)["id"]
    reply, _ = await _execute(jp_ws_fetch, kernel_id, "1")
    assert reply["status"] == "ok"

    async def kernel_gone():
        r = await jp_fetch("api", "kernels", kernel_id, raise_error=False)
        return r.code == 404

    await _wait_for(kernel_gone, timeout=20, what="the server's culler to shut the idle kernel down")
    (record,) = ws.usage(kind="session", notebook=f"kernel-{kernel_id}")
    assert record.stop_ns is not None
    code, hosts = await api("GET", "hosts")
    assert {h["type"]: h["free"] for h in hosts["hosts"]}["H100"] == 2


test_the_servers_culler_releases_the_gpu.server_config = {
    "MappingKernelManager": {"cull_idle_timeout": 2, "cull_interval": 1},
}


def test_kernelspecs_install_follows_the_inventory(tmp_path, capsys):
    """`jupyter burstlab kernelspecs install` writes one kernelspec per GPU type and drops gone types."""
    from burstlab.jupyter_ext.app import main

    def install(declared):
        main(["kernelspecs", "install", "--prefix", str(tmp_path), "--declared-gpus", declared])
        return capsys.readouterr().out

    out = install("H100:2,A100:1")
    assert "Installed burstlab-h100: Python 3 (burstlab · H100)" in out and "burstlab-a100" in out
    kernels = tmp_path / "share" / "jupyter" / "kernels"
    assert sorted(p.name for p in kernels.iterdir()) == ["burstlab-a100", "burstlab-h100"]
    out = install("H100:1")
    assert "Removed burstlab-a100" in out
    assert sorted(p.name for p in kernels.iterdir()) == ["burstlab-h100"]
