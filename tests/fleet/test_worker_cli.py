"""`burstlab worker` on loopback, no root: an existing plain-TCP cluster keeps working, a SIGTERM stops it
cleanly, and host labels stay unique. (The TLS, multi-host and reconnect cases are on the fleet.)"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

import burstlab
from burstlab.examples.fleet import wait_for
from burstlab.remote_kernel.worker import host_label


def test_host_label_is_the_host_name_unless_another_machine_has_it():
    assert host_label("gpu1", "10.0.0.5", {}) == "gpu1"
    assert host_label("gpu1", "10.0.0.5", {"gpu1": {"10.0.0.5"}}) == "gpu1"  # ourselves, rejoining
    assert host_label("gpu1", "10.0.0.6", {"gpu1": {"10.0.0.5"}}) == "gpu1@10.0.0.6"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_worker_serves_a_plain_dask_scheduler_and_stops_on_sigterm(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DASK_", "BURSTLAB_SCHEDULER"))}
    env["BURSTLAB_HOME"] = str(tmp_path / "worker-home")
    log = open(tmp_path / "procs.log", "wb")
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                              "--port", str(port), "--no-dashboard"], env=env, stdout=log, stderr=log,
                             start_new_session=True)
    worker = subprocess.Popen([sys.executable, "-m", "burstlab", "worker", f"tcp://127.0.0.1:{port}",
                               "--declare", "H100:1", "--give-up", "30"], env=env, stdout=log, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    ws = burstlab.Workspace(scheduler=f"tcp://127.0.0.1:{port}", home=str(tmp_path / "nb"), notebook="cli.ipynb")
    try:
        wait_for("the worker's H100", lambda: [e.type for e in ws.hosts()] == ["H100"], 60, interval=0.2)
        session = ws.session("H100")
        assert session.lease.connection["ip"] == "127.0.0.1"  # the address it reaches the scheduler from
        assert session.execute_sync("6 * 7").text == "42"
        session.stop()
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.stderr.read()[-2000:]
        wait_for("the worker gone from the scheduler", lambda: not ws.hosts(), 30, interval=0.2)
    finally:
        ws.close()
        for proc in (worker, sched):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        if worker.stderr:
            worker.stderr.close()
        log.close()
