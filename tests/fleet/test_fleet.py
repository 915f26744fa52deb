"""The happy path across a real network: a notebook in the root namespace, a TLS scheduler in `sched`,
GPU hosts `gpuA` (H100) and `gpuB` (A100) in their own namespaces, each a `burstlab worker`."""

from __future__ import annotations

import subprocess
import time

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import burstlab
from burstlab.examples.fleet import ADDRS, NOTEBOOK_ADDR


@pytest.fixture(scope="module")
def shell(notebook):
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "burstlab")
    return sh


def run(shell, cell):
    with capture_output() as out:
        result = shell.run_cell(cell)
    return result, out


def test_hosts_lists_both_hosts(shell, notebook):
    assert {(e.type, e.host, e.count, e.free) for e in notebook.hosts()} == {("H100", "gpuA", 1, 1),
                                                                               ("A100", "gpuB", 1, 1)}
    _, out = run(shell, "%gpu hosts")
    lines = out.stdout.splitlines()
    assert any("H100" in ln and "gpuA" in ln for ln in lines), out.stdout
    assert any("A100" in ln and "gpuB" in ln for ln in lines), out.stdout


def test_gpu_cell_runs_on_host_a(shell, notebook):
    code = ("%%gpu H100 --quiet\nimport os, socket\n"
            "_s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); _s.connect(({nb!r}, 9))\n"
            "where = (socket.gethostname(), _s.getsockname()[0], os.environ['CUDA_VISIBLE_DEVICES'])\n"
            "x = 41\nwhere").format(nb=NOTEBOOK_ADDR)
    result, out = run(shell, code)
    assert result.success, out.stderr
    assert result.result.data["text/plain"] == repr(("gpuA", ADDRS["gpuA"], "0"))
    result, _ = run(shell, "%%gpu H100 --quiet\nx + 1")  # state persists
    assert result.result.data["text/plain"] == "42"
    session = notebook.find("H100")
    assert session.host == "gpuA"
    assert notebook.ledger.get(session.interval_id).detail["host"] == "gpuA"  # the ledger names the host


def test_the_kernel_is_handed_no_cluster_certificate(notebook):
    session = notebook.session("H100")
    assert session.execute_sync("import os; sorted(k for k in os.environ if k.startswith('DASK_'))").text == "[]"


def test_push_and_pull_cross_the_link(notebook):
    import numpy as np

    session = notebook.session("H100")
    data = np.arange(2_000_000, dtype=np.float64)  # 16 MB
    session.push_sync({"data": data})
    assert session.execute_sync("float(data.sum())").text == repr(float(data.sum()))
    session.execute_sync("doubled = data * 2")
    assert np.array_equal(session.pull_sync(["doubled"])["doubled"], data * 2)


def test_kernel_binds_the_fleet_address_not_any(notebook):
    session = notebook.session("H100")
    assert session.lease.connection["ip"] == ADDRS["gpuA"]
    listening = subprocess.run(["ip", "netns", "exec", "gpuA", "ss", "-ltnpH"], capture_output=True, text=True,
                               timeout=20).stdout
    ports = {str(session.lease.connection[k]) for k in ("shell_port", "iopub_port", "control_port")}
    mine = [ln for ln in listening.splitlines() if any(f":{p} " in ln for p in ports)]
    assert len(mine) == 3, listening
    assert all(f"{ADDRS['gpuA']}:" in ln.split()[3] for ln in mine), mine


def test_stdout_streams_and_remote_traceback(shell, notebook):
    session = notebook.session("H100")
    arrivals = []
    ex = session.execute_sync("import time\nfor i in range(3):\n    print('step', i, flush=True); time.sleep(0.4)",
                              on_output=lambda o: arrivals.append(time.monotonic()))
    done = time.monotonic()
    assert ex.stdout == "step 0\nstep 1\nstep 2\n"
    assert done - arrivals[0] > 0.6, "the first line arrived only when the cell finished"
    result, out = run(shell, "%%gpu H100 --quiet\ndef boom():\n    raise ValueError('far away')\nboom()")
    assert not result.success
    assert "far away" in out.stdout + out.stderr and "boom" in out.stdout + out.stderr


def test_map_on_a100_lands_on_host_b(notebook):
    def where(i):
        import socket
        return socket.gethostname(), i * i

    assert burstlab.map(where, range(4), gpu="A100") == [("gpuB", i * i) for i in range(4)]


ATTACKER = r"""
import json, socket, ssl, sys
from distributed import Client
from burstlab.remote_kernel._tls import make_certificates, security_from
addr, ca, other = sys.argv[1:4]
host, port = addr.split("://")[1].split(":")
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "connected"
    except Exception as exc:
        out[name] = type(exc).__name__
def raw():  # TLS without a client certificate: the scheduler must refuse before any Dask message
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False
    with socket.create_connection((host, int(port)), 5) as s, ctx.wrap_socket(s) as t:
        t.settimeout(5)
        t.sendall(b"\0" * 16)
        if t.recv(1) == b"":
            raise ConnectionResetError("closed")
attempt("raw_tls_no_cert", raw)
attempt("other_ca", lambda: Client(addr, security=security_from(make_certificates(other)), timeout="3s").close())
attempt("plain_tcp", lambda: Client(addr.replace("tls://", "tcp://"), timeout="3s").close())
print(json.dumps(out))
"""


def test_a_client_without_a_certificate_cannot_talk_to_the_scheduler(fleet, notebook, tmp_path):
    import json
    import os
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", ATTACKER, fleet.scheduler, str(fleet.tls / "ca.pem"),
                           str(tmp_path / "other-ca")], env=env, capture_output=True, text=True, timeout=90)
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(results) == {"raw_tls_no_cert", "other_ca", "plain_tcp"}, proc.stderr[-2000:]
    assert "connected" not in results.values(), results
    assert time.monotonic() - started < 60
    assert notebook.hosts()  # the scheduler is still serving the notebook, which has the certificate


def test_ctrl_c_interrupts_the_remote_cell_and_keeps_state(notebook):
    import _thread
    import threading

    session = notebook.session("H100")
    session.execute_sync("kept = 'yes'")
    timer = threading.Timer(1.0, _thread.interrupt_main)  # Ctrl-C in the cell's (this) thread
    timer.start()
    started = time.monotonic()
    try:
        ex = session.execute_sync("import time\nfor _ in range(300): time.sleep(0.1)")
    finally:
        timer.join()
    assert ex.error is not None and ex.error.ename == "KeyboardInterrupt"
    assert time.monotonic() - started < 10
    assert session.execute_sync("kept").text == "'yes'"
