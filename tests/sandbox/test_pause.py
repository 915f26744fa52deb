"""pause / resume, by hand and by the idle timeout (issue 18): the memory and processes are freed, the state
comes back on the next use, in the same Sandbox object."""

from __future__ import annotations

import time

import pytest

from burstlab.errors import SandboxError
from burstlab.sandbox import Sandbox, list_snapshots


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BURSTLAB_HOME", str(tmp_path))
    return tmp_path


def _status(pid: int) -> str:
    """/proc/PID/status, or "" if the process exited since it was listed (other sandboxes come and go meanwhile)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def test_pause_frees_everything_and_the_next_use_resumes(home, leftovers):
    procs, _ = leftovers
    with Sandbox(timeout=10, memory="256MiB", meter=None, user="carol") as sb:
        sb.run("f = lambda: 'back'\nx = list(range(5))")
        sb.files.write("keep.txt", b"kept")
        old_uid, old_dir = sb.uid, sb.state_dir
        sb.pause()
        assert sb.paused and not sb.started and sb.paused_snapshot.captured == ("f", "x")
        assert not [p for p in procs() if f"\t{old_uid}\t" in _status(p)]
        assert sb.usage()["memory_bytes"] == 0 and len(list_snapshots("carol")) == 1
        assert sb.run("f(), x[-1]").text == "('back', 4)"  # resumed by the run, as the same object
        assert not sb.paused and sb.uid != old_uid and sb.state_dir != old_dir
        assert sb.files.read("keep.txt") == b"kept"
        assert list_snapshots("carol") == []  # the pause's snapshot is gone once resumed
        sb.pause()
        sb.resume()
        assert sb.exec(["cat", "keep.txt"]).stdout == "kept" and sb.run("x").text == "[0, 1, 2, 3, 4]"
        sb.pause()
    assert list_snapshots("carol") == []  # closing a paused sandbox deletes its snapshot
    with pytest.raises(SandboxError, match="closed"):
        sb.run("1")


def test_idle_timeout_pauses_instead_of_closing(home):
    with Sandbox(timeout=10, memory="256MiB", meter=None, user="carol", sandbox_idle_timeout=0.5,
                 idle_action="pause") as sb:
        sb.run("y = 42")
        deadline = time.monotonic() + 15
        while not sb.paused:
            assert time.monotonic() < deadline, "the idle sandbox was not paused"
            time.sleep(0.05)
        assert not sb._closed
        assert sb.run("y").text == "42"
    with pytest.raises(SandboxError, match="idle_action"):
        Sandbox(idle_action="sleep")


def test_an_idle_pause_that_fails_closes_with_the_reason(home, monkeypatch):
    monkeypatch.setenv("BURSTLAB_SNAPSHOT_MAX", "1KiB")
    with Sandbox(timeout=10, memory="256MiB", meter=None, user="carol", sandbox_idle_timeout=0.5,
                 idle_action="pause") as sb:
        sb.run("big = 'x' * 100_000")
        deadline = time.monotonic() + 15
        while not sb._closed:
            assert time.monotonic() < deadline, "the sandbox was neither paused nor closed"
            time.sleep(0.05)
        with pytest.raises(SandboxError, match="pausing it failed: The snapshot passed BURSTLAB_SNAPSHOT_MAX"):
            sb.run("big")
