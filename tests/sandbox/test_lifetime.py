"""Nothing outlives its owner: real owner processes, real kill -9, real reapers (issue 12)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from burstlab.errors import SandboxError
from burstlab.sandbox import Sandbox, SandboxPool
from burstlab.sandbox._reaper import read_record

# A creator process: starts a sandbox, runs a cell, prints what the sandbox holds, then waits for a line
# on stdin and returns (leaving the sandbox to the exit path), or is killed meanwhile.
CREATOR = """
import json, sys, time
import burstlab
from burstlab.sandbox._reaper import read_record
sb = burstlab.Sandbox()
assert sb.run("1").outputs[0].data["text/plain"] == "1"
print(json.dumps({"state_dir": sb.state_dir, "uid": sb.uid, "outer": sb.kernel_pid,
                  "cgroups": read_record(sb.state_dir)["cgroups"]}), flush=True)
sys.stdin.readline()
"""


def _live_pids_of_uid(uid: int) -> list[int]:
    """Pids of processes running (not zombies) as ``uid`` on the host."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/status") as f:
                st = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if int(st["Uid"].split()[0]) == uid and not st["State"].strip().startswith(("Z", "X")):
            out.append(int(p))
    return out


def _leftovers(info: dict) -> list[str]:
    """What a sandbox still holds on the host: processes, cgroups, mounts, its state dir."""
    left = [f"pid {p}" for p in _live_pids_of_uid(info["uid"])]
    left += [f"cgroup {d}" for d in info["cgroups"] if os.path.exists(d)]
    with open("/proc/self/mounts") as f:
        left += [f"mount {line.split()[1]}" for line in f if line.split()[1].startswith(info["state_dir"] + "/")]
    if os.path.exists(info["state_dir"]):
        left.append(f"dir {info['state_dir']}")
    return left


def _wait_gone(info: dict, within: float) -> list[str]:
    deadline = time.monotonic() + within
    while (left := _leftovers(info)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def _children(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as f:
            out += [int(x) for x in f.read().split()]
    return out


def _creator() -> tuple[subprocess.Popen, dict]:
    p = subprocess.Popen([sys.executable, "-c", CREATOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line, "the creator process did not start its sandbox"
    info = json.loads(line)
    assert _live_pids_of_uid(info["uid"]) and info["cgroups"]
    return p, info


def test_a_script_that_exits_leaves_no_sandbox_behind():
    # `python -c 'import burstlab; burstlab.Sandbox().run("1")'`, never closed
    p, info = _creator()
    p.stdin.close()  # the script ends without closing its sandbox
    assert p.wait(60) == 0
    p.stdout.close()
    assert _leftovers(info) == []  # cleaned up at exit, before the process ended


def test_kill_9_of_the_creator_ends_its_sandbox_within_seconds():
    p, info = _creator()
    p.kill()
    p.wait(10)
    p.stdin.close()
    p.stdout.close()
    assert _wait_gone(info, 10) == []  # the fork server saw its owner die and removed everything


def test_orphans_of_a_dead_owner_are_reaped_when_the_next_process_starts():
    p, info = _creator()
    # kill the owner and its fork server at once, so that nobody is left to clean up: the sandbox's
    # processes die with their parents, but cgroups, mounts, network and state dir stay behind
    template = _children(p.pid)[0]  # the fork server (a child of burstlab's loop thread)
    os.kill(template, signal.SIGSTOP)
    p.kill()
    p.wait(10)
    p.stdin.close()
    p.stdout.close()
    os.kill(template, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _live_pids_of_uid(info["uid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _leftovers(info)
    assert left and not any(x.startswith("pid") for x in left), left
    assert read_record(info["state_dir"])["pid"] == p.pid
    # the next process that starts a sandbox reaps them first
    q = subprocess.run([sys.executable, "-c", CREATOR], input="\n", capture_output=True, text=True, timeout=60)
    assert q.returncode == 0, q.stderr[-2000:]
    assert _leftovers(info) == []




@pytest.mark.parametrize("which", ["outer", "pid1", "kernel"])
def test_sigterm_to_any_sandbox_process_ends_the_sandbox(which):
    with Sandbox(timeout=10) as sb:
        sb.run("x = 1")
        outer = sb.kernel_pid
        pid1 = _children(outer)[0]
        kernel = _children(pid1)[0]
        os.kill({"outer": outer, "pid1": pid1, "kernel": kernel}[which], signal.SIGTERM)
        deadline = time.monotonic() + 10
        while _live_pids_of_uid(sb.uid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _live_pids_of_uid(sb.uid) == []
        r = sb.run("print('back')")  # a fresh kernel, and a note that the old one went away
        assert "back" in "".join(o.text for o in r.outputs) and sb.restarts == 1


def test_idle_sandbox_is_closed_after_its_idle_timeout_and_a_busy_one_is_not():
    sb = Sandbox(timeout=10, sandbox_idle_timeout=0.6).start()
    try:
        info = {"uid": sb.uid, "state_dir": sb.state_dir, "cgroups": read_record(sb.state_dir)["cgroups"]}
        r = sb.run("import time; time.sleep(1.5); print('done')")  # longer than the idle timeout: not idle
        assert r.error is None and "done" in r.outputs[0].text
        assert _wait_gone(info, 10) == []
        with pytest.raises(SandboxError, match="sandbox_idle_timeout"):
            sb.run("1")
    finally:
        sb.close()


def test_pool_applies_the_idle_timeout_to_sandboxes_it_hands_out_only():
    with SandboxPool(size=1, sandbox_idle_timeout=0.5) as pool:
        time.sleep(1.0)  # stock waiting in the pool is not idle-reaped
        sb = pool.acquire()
        assert sb.run("1").error is None
        deadline = time.monotonic() + 10
        while not sb._closed and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sb._closed


def test_idle_timeout_is_validated():
    for bad in (0, -1, float("nan"), float("inf"), "1h", True):
        with pytest.raises(SandboxError, match="sandbox_idle_timeout"):
            Sandbox(sandbox_idle_timeout=bad)


def test_an_owner_is_its_pid_and_start_time_not_a_recycled_pid():
    from burstlab.sandbox._reaper import owner_alive, owner_id

    me = owner_id()
    assert owner_alive(me)
    assert not owner_alive(dict(me, start=me["start"] + 1))  # same pid, another process: the owner is gone
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(30)
    assert not owner_alive({"pid": p.pid, "start": 0}) and not owner_alive({}) and not owner_alive({"pid": "1"})
