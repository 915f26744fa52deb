"""The kernel provisioner, driven by jupyter_client's own KernelManager (no Jupyter server): a notebook's
kernel that is a leased GPU kernel. Declared GPUs (the suite's H100:2, A100:1), real ipykernels."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from jupyter_client import KernelManager

from burstlab.errors import CapacityError, GpuSpecError
from burstlab.remote_kernel import _kernelspecs
from waiting import wait_for as _wait_for  # tests/waiting.py




@pytest.fixture(scope="module")
def kernelspecs(tmp_path_factory):
    """burstlab's kernelspecs installed into a prefix on JUPYTER_PATH (as `kernelspecs install --prefix` does)."""
    prefix = tmp_path_factory.mktemp("prefix")
    _kernelspecs.install(["H100", "A100"], prefix=str(prefix))
    saved = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
    yield prefix
    if saved is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = saved


@pytest.fixture(scope="module")
def ws(kernelspecs):
    from burstlab.workspace import get_workspace

    w = get_workspace()
    yield w
    w.close()


def _run(kc, code, timeout=30):
    """Execute ``code``; (reply content, stdout text)."""
    out = []
    reply = kc.execute_interactive(
        code, timeout=timeout,
        output_hook=lambda m: out.append(m["content"]["text"]) if m["msg_type"] == "stream" else None,
    )
    return reply["content"], "".join(out)


def _open(ws, notebook):
    return [r for r in ws.usage(kind="session", notebook=notebook) if r.stop_ns is None]


def test_kernelspecs_name_the_provisioner_and_message_interrupts(kernelspecs):
    with open(kernelspecs / "share" / "jupyter" / "kernels" / "burstlab-h100" / "kernel.json") as f:
        spec = json.load(f)
    assert spec["display_name"] == "Python 3 (burstlab · H100)"
    assert spec["interrupt_mode"] == "message"
    assert spec["metadata"]["kernel_provisioner"] == {"provisioner_name": "burstlab-provisioner", "config": {"gpu": "H100"}}
    found = _kernelspecs.installed()
    assert {n: g for n, (g, _) in found.items()} == {"burstlab-h100": "H100", "burstlab-a100": "A100"}
    # Installing again for the inventory there is now drops the type that is gone.
    installed, removed = _kernelspecs.install(["H100"], prefix=str(kernelspecs))
    assert (installed, removed) == (["burstlab-h100"], ["burstlab-a100"])
    assert set(_kernelspecs.installed()) == {"burstlab-h100"}
    _kernelspecs.install(["H100", "A100"], prefix=str(kernelspecs))


def test_kernel_lifecycle_maps_one_to_one(ws):
    """start, execute, interrupt, restart (same lease, fresh kernel, meter running), shutdown."""
    km = KernelManager(kernel_name="burstlab-h100")
    km.start_kernel(env={**os.environ, "JPY_SESSION_NAME": "whole.ipynb"})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        session_id = km.provisioner.session_id
        session = ws.get_session(session_id)
        assert session is not None and session.gpu_type == "H100"
        listed = _listed(ws)
        assert listed[session_id]["notebook"] == "whole.ipynb" and listed[session_id]["gpu_type"] == "H100"
        assert [r.resource for r in _open(ws, "whole.ipynb")] == ["H100"]

        content, out = _run(kc, "import os; x = 41; print(os.environ['BURSTLAB_GPU_TYPE'], os.getpid())")
        assert content["status"] == "ok" and content["execution_count"] == 1  # the notebook's first cell is [1]
        gpu_type, pid = out.split()
        assert gpu_type == "H100" and int(pid) == session.lease.kernel_pid

        # Interrupt: message mode, over the control channel.
        msg_id = kc.execute("import time; time.sleep(30)")
        _wait_for(lambda: _busy(kc, msg_id), what="the cell to start")
        t0 = time.monotonic()
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=10)
        assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
        assert time.monotonic() - t0 < 5
        # ipykernel aborts requests that arrive just after an error (stop_on_error); the state survived.
        assert _wait_for(lambda: _run(kc, "x + 1")[0]["status"] != "aborted", what="the kernel to take cells again")
        assert _run(kc, "x + 1")[0]["status"] == "ok"

        # Restart: the same lease and meter interval, a fresh kernel (x is gone).
        interval = session.interval_id
        km.restart_kernel()
        # The fresh kernel has its own ports (as with any remote provisioner): clients reconnect, as
        # jupyter_server's do when it sees the ports changed.
        kc.stop_channels()
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        assert km.provisioner.session_id == session_id and session.state == "running"
        assert [r.id for r in _open(ws, "whole.ipynb")] == [interval]
        content, out = _run(kc, "import os; print(os.getpid(), os.environ['CUDA_VISIBLE_DEVICES']); x")
        assert content["status"] == "error" and content["ename"] == "NameError"
        new_pid = int(out.split()[0])
        assert new_pid != int(pid) and new_pid == session.lease.kernel_pid
        _wait_for(lambda: not _pid_alive(int(pid)), what="the old kernel to be gone")
        # The session's host watch follows the new kernel's heartbeat (the old one's would say "host lost").
        assert session.watch.address.endswith(f":{session.lease.connection['hb_port']}")
        seen = session.watch.last_seen_ns
        _wait_for(lambda: session.watch.last_seen_ns > seen, what="the new kernel's heartbeat")

        # A forced restart (the restarter's kind: kill, no shutdown_request) keeps the lease too.
        km.restart_kernel(now=True)
        kc.stop_channels()
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        assert km.provisioner.session_id == session_id and [r.id for r in _open(ws, "whole.ipynb")] == [interval]
        assert _run(kc, "1")[0]["status"] == "ok"
        _wait_for(lambda: not _pid_alive(new_pid), what="the killed kernel to be gone")
        new_pid = session.lease.kernel_pid
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    # Shut down: kernel gone, lease released, interval closed.
    assert not _pid_alive(new_pid)
    assert session.state == "stopped"
    assert not _open(ws, "whole.ipynb")
    assert session_id not in _listed(ws)
    assert {e.type: e.free for e in ws.hosts()}["H100"] == 2


def test_killed_kernel_is_dead_and_its_meter_closed(ws):
    km = KernelManager(kernel_name="burstlab-a100", autorestart=False)
    km.start_kernel(env={**os.environ, "JPY_SESSION_NAME": "killed.ipynb"})
    try:
        session = ws.get_session(km.provisioner.session_id)
        assert km.is_alive() and _open(ws, "killed.ipynb")
        os.kill(session.lease.kernel_pid, signal.SIGKILL)
        _wait_for(lambda: not km.is_alive(), what="the manager to see the kernel dead")
        assert km.provisioner._exit == -signal.SIGKILL
        _wait_for(lambda: not _open(ws, "killed.ipynb"), what="the meter to close")
        _wait_for(lambda: session.state == "lost", what="the session to end")  # it flips once its end is complete
        assert "died" in session.end_reason
        _wait_for(lambda: {e.type: e.free for e in ws.hosts()}["A100"] == 1, what="the A100 to be free")
    finally:
        km.shutdown_kernel(now=True)


def test_killed_host_is_a_dead_kernel(ws):
    """kill -9 of the GPU worker (the host's side of the lease): the manager sees the kernel dead, the meter closes."""
    km = KernelManager(kernel_name="burstlab-a100", autorestart=False)
    km.start_kernel(env={**os.environ, "JPY_SESSION_NAME": "host.ipynb"})
    try:
        session = ws.get_session(km.provisioner.session_id)
        address = km.provisioner._worker
        worker_pid = ws.client.run(os.getpid, workers=[address])[address]
        os.kill(worker_pid, signal.SIGKILL)
        _wait_for(lambda: not km.is_alive(), what="the manager to see the kernel dead")
        _wait_for(lambda: not _open(ws, "host.ipynb"), what="the meter to close")
        _wait_for(lambda: session.state == "lost", what="the session to end")
        _wait_for(lambda: not _pid_alive(session.lease.kernel_pid), what="the kernel to follow its worker")
    finally:
        km.shutdown_kernel(now=True)


def test_no_free_gpu_is_the_capacity_error(ws):
    held = ws.session("A100", notebook="other.ipynb", reuse=False)
    try:
        km = KernelManager(kernel_name="burstlab-a100")
        with pytest.raises(CapacityError, match="No A100 is free"):
            km.start_kernel()
        assert not km.has_kernel
    finally:
        held.stop()


def _listed(ws):
    """GET sessions' records by id, as plain JSON objects."""
    records = (r if isinstance(r, dict) else r.to_json() for r in ws.list_sessions())
    return {r["id"]: r for r in records}


def test_a_kernelspec_for_a_gone_gpu_type_says_to_refresh(ws, kernelspecs):
    _kernelspecs.install(["H100", "A100", "B200"], prefix=str(kernelspecs))
    try:
        km = KernelManager(kernel_name="burstlab-b200")
        with pytest.raises(GpuSpecError, match=r"B200.*kernelspecs install"):
            km.start_kernel()
    finally:
        _kernelspecs.install(["H100", "A100"], prefix=str(kernelspecs))


def _busy(kc, msg_id):
    try:
        msg = kc.get_iopub_msg(timeout=0.2)
    except Exception:
        return False
    return msg["msg_type"] == "execute_input" and msg["parent_header"].get("msg_id") == msg_id


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of this process counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
