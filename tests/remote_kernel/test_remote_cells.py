"""%%gpu end to end: a real IPython shell, a real Dask cluster, real ipykernels, declared GPUs."""

import os
import re
import signal
import threading
import time

import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import burstlab
from burstlab.errors import CapacityError, GpuSpecError, RemoteError, SessionLostError, TransferError
from waiting import wait_for


@pytest.fixture(scope="module")
def shell():
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "burstlab")
    yield sh
    burstlab.get_workspace().close()


@pytest.fixture(scope="module")
def ws(shell):
    return burstlab.get_workspace()


def run(shell, cell):
    """Run a cell; return (result, captured output)."""
    with capture_output() as out:
        result = shell.run_cell(cell)
    return result, out


def test_hosts_lists_declared_gpus(shell, ws):
    entries = {(e.type, e.count, e.source) for e in ws.hosts()}
    assert entries == {("H100", 2, "declared"), ("A100", 1, "declared")}
    _, out = run(shell, "%gpu hosts")
    assert "declared" in out.stdout and "H100" in out.stdout


def test_state_persists_and_value_displays_like_local(shell, ws):
    result, out = run(shell, "%%gpu H100\nimport os\nx = 41\nos.environ['CUDA_VISIBLE_DEVICES']")
    assert result.success, out.stderr
    session = ws.find("H100")
    assert result.result.data["text/plain"] == repr(session.lease.cuda_visible)  # pinned to the leased GPU
    assert "H100 (declared)" in out.stdout and "s held" in out.stdout  # the quiet footer
    result, _ = run(shell, "%%gpu h100\nx + 1")
    assert result.result.data["text/plain"] == "42"
    assert ws.find("H100") is session  # reused, not a new kernel


def test_output_streams_live(shell, ws):
    """Each line reaches the notebook when printed, not at the end of the cell."""
    session = ws.session("H100")
    arrivals = []
    ex = session.execute_sync(
        "import time\nfor i in range(3):\n    print('step', i, flush=True); time.sleep(0.6)",
        on_output=lambda o: arrivals.append((time.monotonic(), o.text)),
    )
    done = time.monotonic()
    assert ex.stdout == "step 0\nstep 1\nstep 2\n"
    first_at = arrivals[0][0]
    assert done - first_at > 1.0, "the first line arrived only when the cell finished"


def test_rich_output_and_stderr(shell):
    pytest.importorskip("matplotlib")
    result, out = run(
        shell,
        "%%gpu H100 --quiet\nimport sys, matplotlib.pyplot as plt\nprint('warn', file=sys.stderr)\n"
        "plt.plot([1, 2, 3]); plt.show()",
    )
    assert result.success
    assert "warn" in out.stderr
    assert any("image/png" in o.data for o in out.outputs)


def test_remote_error_fails_the_cell_with_remote_frames_only(shell):
    result, out = run(shell, "%%gpu H100\ndef f():\n    return 1 / 0\nf()")
    assert not result.success
    err = result.error_in_exec
    assert isinstance(err, RemoteError) and err.ename == "ZeroDivisionError"
    text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(err._render_traceback_()))
    assert "return 1 / 0" in text
    assert "burstlab" not in text and "site-packages" not in text


def test_interrupt_stops_the_remote_cell_and_keeps_state(shell, ws):
    run(shell, "%%gpu H100\nkept = 'yes'")
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    result, _ = run(shell, "%%gpu H100\nimport time\ntime.sleep(60)")
    elapsed = time.monotonic() - started
    assert not result.success and result.error_in_exec.ename == "KeyboardInterrupt"
    assert elapsed < 30
    result, _ = run(shell, "%%gpu H100\nkept")
    assert result.result.data["text/plain"] == "'yes'"


def test_push_and_pull_variables(shell, ws):
    shell.user_ns["arr"] = np.arange(1_000_000, dtype=np.float64)
    result, out = run(shell, "%%gpu H100 --push arr --pull total,doubled\ntotal = float(arr.sum())\ndoubled = arr[:5] * 2")
    assert result.success, out.stderr
    assert shell.user_ns["total"] == float(np.arange(1_000_000).sum())
    assert list(shell.user_ns["doubled"]) == [0, 2, 4, 6, 8]
    shell.user_ns["y"] = {"k": [1, 2]}
    run(shell, "%gpu push y H100")
    run(shell, "%%gpu H100\ny['k'].append(3)")
    run(shell, "%gpu pull y H100")
    assert shell.user_ns["y"] == {"k": [1, 2, 3]}


def test_transfer_errors_name_the_variable(shell):
    shell.user_ns["lock"] = threading.Lock()
    result, _ = run(shell, "%%gpu H100 --push lock\n1")
    assert isinstance(result.error_in_exec, TransferError) and "'lock'" in str(result.error_in_exec)
    result, _ = run(shell, "%%gpu H100 --push nosuchvar\n1")
    assert "nosuchvar" in str(result.error_in_exec)
    result, _ = run(shell, "%gpu pull never_defined H100")
    assert isinstance(result.error_in_exec, TransferError) and "never_defined" in str(result.error_in_exec)
    result, _ = run(shell, "%%gpu H100\nimport threading\nrlock = threading.RLock()")
    result, _ = run(shell, "%gpu pull rlock H100")
    assert isinstance(result.error_in_exec, TransferError) and "'rlock'" in str(result.error_in_exec)


def test_unknown_gpu_type_lists_what_exists(shell):
    result, _ = run(shell, "%%gpu B200\n1")
    err = result.error_in_exec
    assert isinstance(err, GpuSpecError) and "A100, H100" in str(err)
    result, _ = run(shell, "%%gpu H100:x\n1")
    assert isinstance(result.error_in_exec, GpuSpecError) and "Valid forms" in str(result.error_in_exec)


def test_fallback_list_takes_the_first_free(shell, ws):
    result, _ = run(shell, "%%gpu B200,A100\nimport os; os.environ['BURSTLAB_GPU_TYPE']")
    assert result.result.data["text/plain"] == "'A100'"
    run(shell, "%gpu stop B200,A100")


def test_capacity_conflict_between_two_notebooks(ws):
    """Two workspaces on one cluster race for the last A100: one lease, one CapacityError."""
    other = burstlab.Workspace(scheduler=ws.client.scheduler.address, notebook="other.ipynb")
    try:
        results = {}

        def take(name, w):
            try:
                results[name] = w.session("A100")
            except CapacityError as exc:
                results[name] = exc

        threads = [threading.Thread(target=take, args=(n, w)) for n, w in (("a", ws), ("b", other))]
        [t.start() for t in threads]
        [t.join(60) for t in threads]
        winners = [r for r in results.values() if not isinstance(r, Exception)]
        losers = [r for r in results.values() if isinstance(r, CapacityError)]
        assert len(winners) == 1 and len(losers) == 1, results
        assert "No A100 is free" in str(losers[0]) and "--wait" in str(losers[0])
        # --wait: the loser gets the GPU once the winner releases it.
        holder = ws if results["a"] is winners[0] else other
        waiter = other if holder is ws else ws
        threading.Timer(1.0, holder.stop, ("A100",)).start()
        session = waiter.session("A100", wait=30)
        assert session.execute_sync("1 + 1").text == "2"
        session.stop()
    finally:
        other.close()


def test_multi_gpu_session_holds_all_on_one_host(ws):
    ws.stop("all")
    session = ws.session("H100:2")
    try:
        assert session.execute_sync("import os; os.environ['CUDA_VISIBLE_DEVICES']").text == "'0,1'"
        assert {e.type: e.free for e in ws.hosts()}["H100"] == 0
    finally:
        ws.stop("H100:2")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie holds no GPU
    except OSError:
        return False


def _lease_tasks_running(ws) -> list[str]:
    """Lease tasks still executing on any worker (the worker's view, not the scheduler's books)."""
    def running(dask_worker=None):
        return [str(k) for k, ts in dask_worker.state.tasks.items()
                if str(k).startswith("burstlab-lease-") and ts.state in ("executing", "cancelled")]

    return [k for keys in ws.client.run(running).values() for k in keys]


def test_a_stopped_session_has_freed_its_gpu_on_the_worker_when_stop_returns(ws):
    """The cause of a flaky test_idle_session...: the scheduler frees a cancelled lease task's GPU at once,
    while the worker still runs it until the kernel is killed. stop() now returns after the worker is done,
    so the next session never waits behind it (and never loses its start race under load)."""
    ws.stop("all")
    for _ in range(3):
        session = ws.session("A100")
        assert _lease_tasks_running(ws)
        pid = session.lease.kernel_pid
        session.stop()
        assert pid and not _alive(pid)  # the kernel holding the GPU is gone when stop() returns
        # the worker's own books follow within a moment of the task's return (not a kernel's kill: that was the bug)
        wait_for(lambda: _lease_tasks_running(ws) == [], 1.0, "the worker to finish the lease task")
    again = ws.session("A100")  # at once, no race lost: the worker had nothing left to finish
    try:
        assert again.execute_sync("1").text == "1"
    finally:
        again.stop()


def test_idle_session_is_released_and_the_next_cell_says_so(shell, ws):
    run(shell, "%gpu stop all")
    result, out = run(shell, "%%gpu A100\nidle_state = 1")
    assert result.success, (result.error_in_exec, out.stderr)  # else find() below says only "no session"
    session = ws.find("A100")
    ws.set_idle_timeout(0.5)
    try:
        deadline = time.monotonic() + 20
        while session.state == "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert session.state == "stopped"
        record = ws.ledger.get(session.interval_id)
        assert record.stop_ns is not None
    finally:
        ws.set_idle_timeout(600)
    result, out = run(shell, "%%gpu A100\n'idle_state' in dir()")
    assert "released after 0.5 s idle" in out.stderr and "state is gone" in out.stderr
    assert result.result.data["text/plain"] == "False"
    run(shell, "%gpu stop A100")


def test_kernel_death_ends_the_session_and_the_meter(shell, ws):
    result, _ = run(shell, "%%gpu A100\nx = 1")
    assert result.success, result.error_in_exec
    session = ws.find("A100")
    result, _ = run(shell, "%%gpu A100\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert isinstance(result.error_in_exec, SessionLostError)
    assert "died" in str(result.error_in_exec)
    assert session.state == "lost"
    assert ws.ledger.get(session.interval_id).stop_ns is not None
    assert {e.type: e.free for e in ws.hosts()}["A100"] == 1  # the GPU is free again
    result, out = run(shell, "%%gpu A100\n'x' in dir()")
    assert "died" in out.stderr
    assert result.result.data["text/plain"] == "False"
    run(shell, "%gpu stop A100")


def test_ledger_rows_and_bill(shell, ws):
    run(shell, "%gpu stop all")
    before = len(ws.usage())
    run(shell, "%%gpu A100\nimport time; time.sleep(1.2)")
    run(shell, "%gpu stop A100")
    rows = ws.usage()[before:]
    assert len(rows) == 1
    [row] = rows
    assert row.kind == "session" and row.resource == "A100" and row.declared
    assert row.user == ws.user and row.notebook == "tests.ipynb"
    assert row.stop_ns is not None and row.billed_s >= 2  # 1.2 s + start-up, rounded up
    assert row.cost_microusd == -(-row.billed_s * row.rate_nusd_per_s // 1000)
    _, out = run(shell, "%gpu bill")
    assert "This notebook (tests.ipynb)" in out.stdout and "A100 (declared)" in out.stdout


def test_status_and_stop(shell, ws):
    run(shell, "%%gpu H100\n1")
    _, out = run(shell, "%gpu status")
    assert "H100" in out.stdout and "running" in out.stdout
    _, out = run(shell, "%gpu stop all")
    assert "Released" in out.stdout
    assert not [s for s in ws.sessions.values() if s.state == "running"]
    assert all(r.stop_ns is not None for r in ws.usage())


def test_second_session_comes_from_the_warm_pool(ws):
    ws.stop("all")
    first = ws.session("H100")
    worker = first.lease.slots[0].address
    first.stop()

    def ready_kernels(dask_worker=None) -> int:
        from burstlab.remote_kernel.pool import _pools

        return sum(len(p._ready) for p in list(_pools.values()))

    deadline = time.monotonic() + 30  # the pool refills in the background: wait for a ready kernel
    while ws.client.run(ready_kernels, workers=[worker])[worker] < 1:
        assert time.monotonic() < deadline, "the worker's kernel pool did not refill within 30 s"
        time.sleep(0.05)
    second = ws.session("H100")
    try:
        assert second.lease.warm
    finally:
        second.stop()


def test_no_gpu_says_how_to_declare_or_connect(tmp_path):
    empty = burstlab.Workspace(declared_gpus="", home=str(tmp_path), kernel_pool_size=0)
    try:
        if empty.hosts():
            pytest.skip("this machine has NVML GPUs")
        with pytest.raises(burstlab.NoGpuError, match="BURSTLAB_DECLARED_GPUS.*BURSTLAB_SCHEDULER"):
            empty.session("H100")
    finally:
        empty.close()
