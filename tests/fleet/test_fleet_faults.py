"""Faults on the fleet end in bounded, clear errors: a GPU host killed or cut off mid-cell, the scheduler
dying mid-session, no worker at all; hosts come back, and nothing that ended comes back with them."""

from __future__ import annotations

import threading
import time

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from burstlab.errors import NoGpuError, SessionLostError
from burstlab.examples.fleet import ADDRS, wait_for

from fleet_helpers import wait_workers

pytestmark = pytest.mark.slow

LOST_AFTER = 2.0  # the tests' host_lost_timeout (the default, 10 s, is checked below)


@pytest.fixture
def ws(fleet, notebook):
    """The notebook's workspace on a whole fleet (both hosts up, links up, nothing held)."""
    fleet.restore()
    notebook.config.host_lost_timeout = LOST_AFTER
    wait_workers(notebook.client, {"gpuA", "gpuB"})
    yield notebook
    notebook.stop("all")


def _free(ws, gpu_type: str, host: str) -> int | None:
    return next((e.free for e in ws.hosts() if (e.type, e.host) == (gpu_type, host)), None)


def _run_until_lost(session, fault, after: float = 1.0) -> tuple[SessionLostError, float]:
    """Run a long cell, apply ``fault`` ``after`` seconds in; return the error and when it came (s after the fault)."""
    at = {}

    def strike():
        at["t"] = time.monotonic()
        at["ns"] = time.time_ns()
        fault()

    timer = threading.Timer(after, strike)
    timer.start()
    try:
        with pytest.raises(SessionLostError) as info:
            session.execute_sync("import time\nfor _ in range(600): time.sleep(0.1)")
    finally:
        timer.join()
    return info.value, time.monotonic() - at["t"], at["ns"]


def test_default_host_lost_timeout_is_within_15_s():
    from burstlab.config import BurstLab

    assert 0 < BurstLab().host_lost_timeout <= 15


def test_host_killed_mid_cell(fleet, ws):
    session = ws.session("H100")
    assert session.host == "gpuA"
    error, took, killed_ns = _run_until_lost(session, lambda: fleet.kill("gpuA"))
    assert "gpuA" in str(error) and ADDRS["gpuA"] in str(error), error
    assert took < LOST_AFTER + 5, f"the cell learned of the dead host after {took:.1f} s"
    assert session.state == "lost"
    record = ws.ledger.get(session.interval_id)
    assert record.stop_ns is not None and record.detail.get("lost")
    assert record.stop_ns <= killed_ns + 1_500_000_000  # closed at the last heartbeat, not when we gave up
    # The host comes back: its GPU is free (the old lease stays ended), and the next cell starts a new session.
    fleet.start_worker("gpuA")
    wait_workers(ws.client, {"gpuA"})
    assert wait_for("gpuA's H100 listed", lambda: _free(ws, "H100", "gpuA") is not None, 20)
    assert _free(ws, "H100", "gpuA") == 1, "the ended lease came back with its host"
    again = ws.session("H100")  # the only H100: taken by a resurrected lease, this would fail
    assert again.id != session.id and again.execute_sync("6 * 7").text == "42"


def test_link_cut_mid_cell_then_back(fleet, ws):
    session = ws.session("H100")
    try:
        error, took, _ = _run_until_lost(session, lambda: fleet.link("gpuA", False))
    finally:
        fleet.link("gpuA", True)
    assert "gpuA" in str(error) and took < LOST_AFTER + 5, (took, error)
    assert ws.ledger.get(session.interval_id).stop_ns is not None
    # Link back: the released lease reaches the host (or the host rejoins): its GPU is free again, once.
    wait_for("gpuA's H100 free again", lambda: _free(ws, "H100", "gpuA") == 1, 60, interval=0.2)
    again = ws.session("H100")
    assert again.execute_sync("1 + 1").text == "2"


def test_scheduler_dies_mid_session_and_the_workspace_recovers(fleet, ws):
    session = ws.session("H100")
    error, took, _ = _run_until_lost(session, lambda: fleet.kill("sched"))
    assert "scheduler" in str(error) and "another client" not in str(error), error
    assert took < 15
    fleet.start_scheduler()
    # The `burstlab worker`s rejoin the new scheduler by themselves, and so does this workspace.
    again = ws.session("H100", wait=60)
    assert again.host == "gpuA" and again.execute_sync("2 + 2").text == "4"
    assert "back in" in fleet.log("gpuA")


def test_no_worker_waits_then_says_so_and_a_joining_worker_is_taken(fleet, ws, notebook):
    fleet.kill("gpuA")
    fleet.kill("gpuB")
    wait_for("no worker left", lambda: not [e for e in ws.hosts()], 30, interval=0.2)
    started = time.monotonic()
    with pytest.raises(NoGpuError) as info:
        ws.session("H100", wait=2)
    assert time.monotonic() - started >= 2
    message = str(info.value)
    assert "No GPU worker has joined" in message and fleet.scheduler in message and "NVML" not in message
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "burstlab")
    with capture_output() as out:
        shell.run_line_magic("gpu", "hosts")
    assert "No GPU worker has joined" in out.stdout and "NVML" not in out.stdout, out.stdout
    # A worker that joins during the wait is taken.
    threading.Timer(1.0, fleet.start_worker, ["gpuA"]).start()
    session = ws.session("H100", wait=60)
    assert session.host == "gpuA"


def test_same_hostname_twice_and_two_simultaneous_requests(fleet, ws):
    fleet.start_worker("gpuB", declare="H100:1", hostname="gpuA", key="gpuB-second")
    try:
        wait_workers(ws.client, {"gpuA", f"gpuA@{ADDRS['gpuB']}"})
        results, errors = [], []

        def take():
            try:
                results.append(ws.session("H100", reuse=False))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=take) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert sorted(s.host for s in results) == ["gpuA", f"gpuA@{ADDRS['gpuB']}"]
        for s in results:
            s.stop()
    finally:
        fleet.stop("gpuB-second")


def test_worker_gives_up_on_an_unreachable_scheduler_with_a_clear_error(fleet):
    import subprocess
    import sys

    started = time.monotonic()
    proc = subprocess.run(["ip", "netns", "exec", "gpuB", sys.executable, "-m", "burstlab", "worker",
                           "tls://10.250.13.99:8786", "--declare", "H100:1", "--give-up", "2"],
                          env=fleet.env("gpuB"), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "cannot reach the scheduler at tls://10.250.13.99:8786" in proc.stderr, proc.stderr[-2000:]
    assert time.monotonic() - started < 40
