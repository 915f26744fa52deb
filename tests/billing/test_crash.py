"""Crash safety with real kill -9: a workspace process dies mid-session or mid-map; the next
workspace opened on its ledger closes every interval it left open at the last heartbeat, marked
recovered. And idempotency: a retried stop or open never bills twice."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

import burstlab
from burstlab.billing import Meter, RateCard, open_ledger


def _start(code: str, home, ledger_url: str = "") -> subprocess.Popen:
    env = {**os.environ, "BURSTLAB_HOME": str(home), "BURSTLAB_NOTEBOOK": "crash.ipynb", "BURSTLAB_LEDGER_URL": ledger_url}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True, env=env)


def _kill_tree(proc: subprocess.Popen) -> None:
    """kill -9 the process and everything it started, at once (a crash, not a shutdown)."""
    try:
        family = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        family = [proc.pid]
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(10)
    for pid in family[1:]:  # reap-free wait until they are gone
        deadline = time.monotonic() + 10
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            try:
                if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)


def _read_until(proc, word: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(word):
            return line.strip()
    raise AssertionError(f"the child never printed {word!r}")


def test_kill_9_mid_session_loses_no_interval(tmp_path, ledger_url):
    """On SQLite and PostgreSQL (BURSTLAB_LEDGER_URL), through a real Workspace and %%gpu-style session."""
    proc = _start("""
        import sys, time
        if __name__ == "__main__":
            import burstlab
            ws = burstlab.Workspace(heartbeat_interval=0.2, kernel_pool_size=0)
            s = ws.session("H100")
            s.execute_sync("x = 1")
            print("interval", s.interval_id, flush=True)
            while True:  # until the session's own interval has heartbeaten for a while
                r = ws.ledger.get(s.interval_id)
                if r.heartbeat_ns - r.start_ns >= 8e8:
                    break
                time.sleep(0.05)
            print("beating", flush=True)
            s.execute_sync("import time; time.sleep(60)")
    """, tmp_path, ledger_url)
    try:
        interval = _read_until(proc, "interval").split()[1]
        _read_until(proc, "beating")
        time.sleep(0.3)  # inside the long cell
    finally:
        _kill_tree(proc)
    ledger = open_ledger(ledger_url, tmp_path)
    before = ledger.get(interval)
    assert before.stop_ns is None and before.heartbeat_ns - before.start_ns >= 0.8e9  # beaten every 0.2 s
    ledger.close()
    ws = burstlab.Workspace(home=str(tmp_path), notebook="after-crash.ipynb", ledger_url=ledger_url)  # opening recovers
    try:
        after = ws.ledger.get(interval)
        assert after.recovered and after.stop_ns == before.heartbeat_ns
        assert after.billed_s == -(-(before.heartbeat_ns - before.start_ns) // 10**9)  # billed to the last beat
        leftovers = [r for r in ws.usage(include_provisioned=True) if r.stop_ns is None]
        assert leftovers == []  # the crashed process's provisioned GPU time was closed too
        assert all(r.recovered for r in ws.usage(include_provisioned=True))
        assert ws.ledger.recover() == []  # nothing left; recovering again changes nothing
    finally:
        ws.close()


def test_kill_9_mid_map_recovers_the_workers_intervals(tmp_path):
    proc = _start("""
        import time
        def slow(x):
            import time
            time.sleep(0.5)
            return x
        if __name__ == "__main__":
            import threading
            import burstlab
            ws = burstlab.Workspace(heartbeat_interval=0.2, kernel_pool_size=0)
            def watch():
                while True:
                    rows = [r for r in ws.usage(kind="map") if r.stop_ns is None and r.heartbeat_ns - r.start_ns > 6e8]
                    if len(rows) == 2:
                        print("mapping", flush=True)
                        return
                    time.sleep(0.05)
            threading.Thread(target=watch, daemon=True).start()
            burstlab.map(slow, range(1000), gpu="H100", workspace=ws, progress=False)
    """, tmp_path)
    try:
        _read_until(proc, "mapping")
    finally:
        _kill_tree(proc)
    ledger = open_ledger("", tmp_path)
    open_before = {r.id: r for r in ledger.usage(kind="map") if r.stop_ns is None}
    assert len(open_before) == 2  # one per H100 worker, open when the process died
    assert ledger.recover() and not ledger.recover()
    for r in ledger.usage(kind="map"):
        assert r.recovered and r.stop_ns == open_before[r.id].heartbeat_ns and r.resource == "H100"
    ledger.close()


def test_retried_stops_and_opens_never_double_bill(tmp_path):
    ledger = open_ledger("", tmp_path)
    meter = Meter(ledger, RateCard.from_config(), heartbeat_s=0)
    interval = meter.start(kind="session", user="u", notebook="n", resource="H100", id="fixed-id")
    time.sleep(0.01)
    first = meter.stop(interval)
    again = meter.stop(interval)  # a retry, later: the interval is not extended
    assert again == first
    assert meter.start(kind="session", user="u", notebook="n", resource="H100", id="fixed-id") == "fixed-id"
    [row] = ledger.usage()
    assert row.stop_ns == first.stop_ns  # the retried open did not reopen it
    ledger.close()


def test_a_session_stopped_twice_is_billed_once(tmp_path):
    ws = burstlab.Workspace(home=str(tmp_path), notebook="twice.ipynb", kernel_pool_size=0)
    try:
        s = ws.session("A100")
        s.stop("first")
        record = ws.ledger.get(s.interval_id)
        time.sleep(1.1)
        s.stop("second")
        ws.stop("all")
        assert ws.ledger.get(s.interval_id) == record
        assert len(ws.usage(notebook="twice.ipynb")) == 1
    finally:
        ws.close()
    ws.close()  # closing twice is fine too
    assert open_ledger("", tmp_path).get(s.interval_id) == record
