"""Ctrl-C on a map in a real notebook kernel: the cell ends with KeyboardInterrupt, no input starts
after it, the GPUs are free again and the ledger holds the map's closed intervals."""

import ast
import json
import os
import textwrap
import time

import pytest
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.slow


def _run(kc, code, timeout=60):
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=lambda msg: None)
    return reply["content"]


def _value(kc, expr, timeout=60):
    out = []

    def hook(msg):
        if msg["msg_type"] == "execute_result":
            out.append(msg["content"]["data"]["text/plain"])

    reply = kc.execute_interactive(expr, timeout=timeout, output_hook=hook)
    assert reply["content"]["status"] == "ok", reply["content"]
    return out[-1] if out else None


def test_ctrl_c_on_a_map_stops_it_and_frees_the_gpus(tmp_path):
    started = tmp_path / "started"
    started.mkdir()
    env = {**os.environ, "BURSTLAB_HOME": str(tmp_path / "home"), "BURSTLAB_NOTEBOOK": "interrupt.ipynb"}
    km, kc = start_new_kernel(env=env)
    try:
        assert _run(kc, textwrap.dedent(f"""
            import time, pathlib, burstlab
            ws = burstlab.Workspace(worker_idle_timeout=30, kernel_pool_size=0)
            def slow(i):
                pathlib.Path({str(started)!r}, str(i)).touch()
                time.sleep(1.0)
                return i
        """))["status"] == "ok"
        msg_id = kc.execute("burstlab.map(slow, range(60), gpu='H100', workspace=ws, progress=False)")
        deadline = time.monotonic() + 60
        while len(os.listdir(started)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(os.listdir(started)) >= 2, "the map never started"
        km.interrupt_kernel()
        interrupted_at = time.monotonic()
        while True:
            reply = kc.get_shell_msg(timeout=30)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        took = time.monotonic() - interrupted_at
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert took < 5, f"the cell took {took:.1f} s to give up after Ctrl-C"

        n_at_interrupt = len(os.listdir(started))
        # The GPUs are free again (workers still running a cancelled input are restarted) ...
        deadline = time.monotonic() + 20
        free = None
        while time.monotonic() < deadline:
            free = _value(kc, "sum(e.free for e in ws.hosts() if e.type == 'H100')")
            if free == "2":
                break
            time.sleep(0.2)
        assert free == "2"
        time.sleep(1.5)  # ... and nothing of the cancelled map starts later
        assert len(os.listdir(started)) == n_at_interrupt
        assert n_at_interrupt < 60

        # The ledger has the map's GPU time, every interval closed.
        rows = json.loads(ast.literal_eval(_value(kc, "import json; json.dumps([r.to_json() for r in ws.usage(kind='map')])")))
        assert rows and all(r["stop_ns"] is not None for r in rows)
        assert {r["resource"] for r in rows} == {"H100"}
        # The kernel is still usable, and so is the cluster.
        assert _value(kc, "burstlab.map(lambda x: x * 2, [1, 2, 3], gpu='H100', workspace=ws, progress=False)") \
            == "[2, 4, 6]"
    finally:
        try:
            _run(kc, "ws.close()", timeout=30)
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
