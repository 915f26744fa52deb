"""Resumable maps: results appended to a SQLite checkpoint as they arrive; a rerun computes only what is
missing, after kill -9 of the notebook's process, a cancel (whose exception carries the finished results),
or anything else; spawn_map's results collected by id from another process."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from burstlab import fanout
from burstlab.errors import FanoutError
from burstlab.fanout._checkpoint import Checkpoint
from burstlab.remote_kernel import registry

NOTEBOOK = textwrap.dedent("""\
    import sys, time, burstlab
    LOG = sys.argv[1]
    def work(x):
        with open(LOG, "a") as f:
            f.write(f"{x}\\n")
        time.sleep(0.02)
        return x * x
    out = burstlab.map(work, range(150), gpu="H100", checkpoint=sys.argv[2], progress=False)
    print("RESULT", out == [x * x for x in range(150)], flush=True)
""")


def _runs(log):
    counts = {}
    for line in log.read_text().split():
        counts[int(line)] = counts.get(int(line), 0) + 1
    return counts


def test_kill_9_mid_map_then_rerun_computes_only_what_is_missing(tmp_path):
    script, log, ckpt = tmp_path / "nb.py", tmp_path / "ran.log", tmp_path / "runs" / "eval-7"
    script.write_text(NOTEBOOK)
    env = {**os.environ, "BURSTLAB_DECLARED_GPUS": "H100:1", "BURSTLAB_HOME": str(tmp_path / "home")}
    env.pop("BURSTLAB_URL", None)
    proc = subprocess.Popen([sys.executable, str(script), str(log), str(ckpt)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (log.exists() and len(log.read_text().split()) >= 50):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the notebook's process and everything it started, at once
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    store = Checkpoint(ckpt, b"", readonly=True)
    stored = {i for _, indices, _ in store.rows() for i in indices}
    store.close()
    before = _runs(log)
    assert stored and len(before) < 150, "the kill came too late to test anything"
    done = subprocess.run([sys.executable, str(script), str(log), str(ckpt)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RESULT True" in done.stdout
    runs = _runs(log)
    assert set(runs) == set(range(150))
    assert all(runs[i] == 1 for i in stored)  # a stored result is never computed again
    twice = [i for i, n in runs.items() if n > 1]
    assert all(runs[i] <= 2 for i in runs)  # at most twice: the inputs in flight at the kill
    assert set(twice) <= set(before) - stored


def test_a_cancelled_map_carries_its_finished_results_and_a_rerun_resumes(fws, tmp_path):
    log, ckpt = tmp_path / "ran.log", tmp_path / "ckpt.sqlite"

    def slow(x):
        with open(log, "a") as f:
            f.write(f"{x}\n")
        time.sleep(0.03)
        return -x

    def cancel_after_some():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for m in registry.listing(fws.client, "map"):
                if m["name"].endswith("slow") and m["state"] == "running" and m["done"] >= 10:
                    registry.request_stop(fws.client, "map", m["id"], "cancelled from the panel by the test")
                    return
            time.sleep(0.05)

    t = threading.Thread(target=cancel_after_some)
    t.start()
    with pytest.raises(FanoutError, match="cancelled from the panel") as info:
        fanout.map(slow, range(200), gpu="H100", checkpoint=ckpt, workspace=fws, progress=False)
    t.join()
    partial = info.value.partial
    assert len(partial) >= 10 and all(v == -i for i, v in partial.items())
    assert str(ckpt) in str(info.value)
    first = _runs(log)
    out = fanout.map(slow, range(200), gpu="H100", checkpoint=ckpt, workspace=fws, progress=False)
    assert out == [-x for x in range(200)]
    runs = _runs(log)
    assert all(runs[i] == 1 for i in partial)  # what the exception carried was stored, not recomputed
    assert sum(runs.values()) - sum(first.values()) <= 200 - len(partial)
    # keep_results=False: nothing new runs, and the results come from the store in order
    again = fanout.map(slow, range(200), gpu="H100", checkpoint=ckpt, keep_results=False, workspace=fws,
                       progress=False)
    assert list(again) == [-x for x in range(200)] and _runs(log) == runs


def test_a_changed_function_or_input_is_computed_again(fws, tmp_path):
    ckpt = tmp_path / "c"
    assert fanout.map(lambda x: x + 1, range(30), gpu="H100", checkpoint=ckpt, workspace=fws,
                      progress=False) == list(range(1, 31))
    assert fanout.map(lambda x: x + 2, range(30), gpu="H100", checkpoint=ckpt, workspace=fws,
                      progress=False) == list(range(2, 32))
    inputs = list(range(30))
    inputs[7] = 100
    assert fanout.map(lambda x: x + 2, inputs, gpu="H100", checkpoint=ckpt, workspace=fws,
                      progress=False) == [x + 2 for x in inputs]


COLLECT = textwrap.dedent("""\
    import sys
    from burstlab.fanout import MapHandle
    print("GOT", sum(MapHandle.from_id(sys.argv[1]).result(timeout=60)), flush=True)
""")


def test_spawn_map_returns_at_once_and_is_collected_from_another_process(fws, tmp_path):
    def slowish(x):
        time.sleep(0.01)
        return x * 3

    t = time.monotonic()
    handle = fanout.spawn_map(slowish, range(200), gpu="H100", workspace=fws)
    assert time.monotonic() - t < 2.0 and len(handle.id) == 12
    script = tmp_path / "collect.py"
    script.write_text(COLLECT)
    env = {**os.environ, "BURSTLAB_HOME": fws.config.home}
    other = subprocess.run([sys.executable, str(script), handle.id], env=env, capture_output=True, text=True,
                           timeout=90)
    assert other.returncode == 0, other.stderr[-2000:]
    assert f"GOT {sum(x * 3 for x in range(200))}" in other.stdout
    assert handle.result(timeout=30) == [x * 3 for x in range(200)] and handle.done()


def test_collecting_a_spawned_map_whose_process_died_says_so_at_once(tmp_path):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = Checkpoint(tmp_path / "m", b"f" * 16)
    store.set_meta(id="abc", name="score", state="running", total=10, pid=dead.pid, host=socket.gethostname())
    store.close()
    t = time.monotonic()
    with pytest.raises(FanoutError, match=r"the process that ran it \(pid \d+\) is gone.*checkpoint="):
        fanout.MapHandle.from_id("abc", checkpoint=tmp_path / "m").result(timeout=30)
    assert time.monotonic() - t < 5
