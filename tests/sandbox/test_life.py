"""Lifetimes and live metrics of a sandbox (issue 18): real cgroups, real closes."""

from __future__ import annotations

import os
import time

import pytest

from burstlab.errors import SandboxError
from burstlab.sandbox import Sandbox


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_lifetime_closes_the_sandbox_and_says_why(leftovers):
    procs, _ = leftovers
    with Sandbox(timeout=10, memory="256MiB", lifetime=1.5, meter=None) as sb:
        assert sb.lifetime == 1.5 and 0 < sb.expires_in <= 1.5
        assert sb.run("x = 1; x").text == "1"
        uid = sb.uid
        _wait(lambda: sb._closed, 10, "the sandbox outlived its lifetime")
        with pytest.raises(SandboxError, match="reached its lifetime of 1.5 s"):
            sb.run("x")
        with pytest.raises(SandboxError, match="lifetime"):
            sb.exec(["true"])
    assert not [p for p in procs() if _uid_of(p) == uid]


def _uid_of(pid: int) -> int | None:
    """The owner of a listed process, or None if it exited since (other sandboxes come and go meanwhile)."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def test_set_lifetime_extends_and_removes():
    with Sandbox(timeout=10, memory="256MiB", lifetime=1, meter=None) as sb:
        sb.start()
        sb.set_lifetime(30)
        assert 29 < sb.expires_in <= 30 and sb.lifetime == 30
        time.sleep(1.5)
        assert sb.run("1").text == "1"  # past its first lifetime, still running
        sb.set_lifetime(None)
        assert sb.lifetime is None and sb.expires_in is None
        with pytest.raises(SandboxError, match="positive number"):
            sb.set_lifetime(0)
    with pytest.raises(SandboxError, match="lifetime=-1"):
        Sandbox(lifetime=-1)


def test_metrics_time_series_from_the_cgroup():
    with Sandbox(timeout=10, memory="256MiB", meter=None) as sb:
        sb.run("import time\nx = bytearray(64 << 20)\nx[::4096] = b'1' * (16 << 10)\n"
               "t = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint('y' * 5000)")
        sb.exec("head -c 7000 /dev/zero", shell=True)
        _wait(lambda: len(sb.metrics()["samples"]) >= 3, 10, "no samples")
        m = sb.metrics()
        assert m["interval_s"] > 0
        last = m["samples"][-1]
        assert set(last) == {"t", "cpu_s", "memory_bytes", "pids", "output_bytes"}
        assert last["memory_bytes"] > 64 << 20 and last["cpu_s"] >= 0.3 and last["pids"] >= 2
        assert last["output_bytes"] >= 12_000
        ts = [s["t"] for s in m["samples"]]
        assert ts == sorted(ts) and abs(ts[-1] - time.time()) < 5
        assert [s["cpu_s"] for s in m["samples"]] == sorted(s["cpu_s"] for s in m["samples"])
    assert sb.metrics()["samples"]  # the history outlives the sandbox
