"""Policy and parsing, without processes."""

from __future__ import annotations

import json
import os

import pytest

from burstlab.errors import SandboxError
from burstlab.sandbox import Limits, parse_size
from burstlab.sandbox._files import split_path
from burstlab.sandbox._kernel import OutputCap
from burstlab.sandbox._limits import format_size, make_limits
from burstlab.sandbox._jailspec import WORK_DIR, jail_spec, scrubbed_env
from burstlab.sandbox._seccomp import DENIED, Filter


@pytest.mark.parametrize("text,n", [("512MiB", 512 * 2**20), ("1G", 2**30), ("2 GB", 2 * 10**9), ("64m", 64 * 2**20),
                                    (4096, 4096), ("1.5GiB", 3 * 2**29), ("100", 100)])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["", "lots", "-1M", "1 parsec", 0, -5, True, None, 1.5])
def test_parse_size_refuses_with_the_valid_forms(bad):
    with pytest.raises(SandboxError, match="512MiB"):
        parse_size(bad)


def test_format_size():
    assert format_size(512 * 2**20) == "512 MiB"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(3) == "3 B"


def test_make_limits_validates_and_names_the_fix():
    lim = make_limits(timeout=5, memory="1GiB", pids=32, cpus=0.5)
    assert (lim.timeout, lim.memory, lim.pids, lim.cpus) == (5.0, 2**30, 32, 0.5)
    with pytest.raises(SandboxError, match="timeout=30"):
        make_limits(timeout=-1)
    with pytest.raises(SandboxError, match="64MiB"):
        make_limits(memory="1MiB")
    with pytest.raises(SandboxError, match="at least 16"):
        make_limits(pids=2)
    for cpus in (0.001, 0, float("nan"), True):  # at 0.001 cores a kernel would take minutes to start
        with pytest.raises(SandboxError, match="at least 0.1"):
            make_limits(cpus=cpus)
    assert make_limits() == Limits()


@pytest.mark.parametrize("bad", ["/etc/passwd", "../x", "a/../../x", "a/..", "", "a\x00b"])
def test_split_path_refuses_paths_that_leave_the_work_dir(bad):
    with pytest.raises(SandboxError):
        split_path(bad)


def test_split_path_normalises():
    assert split_path("./a//b/c.txt") == ["a", "b", "c.txt"]


def test_jail_spec_shows_nothing_of_the_host_home_or_secrets():
    spec = jail_spec(uid=1_234_567, gid=1_234_567, limits=Limits(), network=False, state_dir="/tmp/x",
                     cgroup_procs=["/sys/fs/cgroup/pids/x/cgroup.procs"])
    sources = [src for src, _ in spec["ro_binds"] + spec["rw_binds"]]
    assert "/" not in sources and "/etc" not in sources and "/root" not in sources and "/home" not in sources
    assert not any(s.startswith(("/etc/shadow", "/etc/ssh", "/root/.ssh", "/var", "/proc", "/sys")) for s in sources)
    assert "/etc/resolv.conf" not in sources  # no network, no resolver
    assert spec["rw_binds"] == [("/tmp/x/fs/home", WORK_DIR), ("/tmp/x/fs/run", "/run/burstlab")]
    assert spec["uid"] != 0 and spec["rlimits"]["RLIMIT_CORE"] == (0, 0)


def test_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "hunter2")
    env = scrubbed_env(network=False)
    assert "AWS_SECRET_ACCESS_KEY" not in env and "hunter2" not in "".join(env.values())
    assert env["HOME"] == WORK_DIR and "JPY_PARENT_PID" not in env


def test_output_cap_cuts_streams_and_drops_rich_output_then_marks_it():
    cap = OutputCap(10)
    assert cap.admit("stream", {"name": "stdout", "text": "12345"}, "m1") == ({"name": "stdout", "text": "12345"}, None)
    kept, _ = cap.admit("stream", {"name": "stdout", "text": "6789abcdef"}, "m1")
    assert kept == {"name": "stdout", "text": "6789a"}
    rich = {"data": {"text/plain": "x"}}
    assert cap.admit("display_data", rich, "m1") == (None, None)
    _, note = cap.admit("status", {"execution_state": "idle"}, "m1")
    assert f"{5 + len(json.dumps(rich))} more bytes were dropped" in note  # a rich output counts its whole content
    # a new execution starts with a fresh budget
    assert cap.admit("stream", {"name": "stdout", "text": "0123456789"}, "m2")[0]["text"] == "0123456789"


def test_output_cap_counts_metadata_transient_non_str_values_and_comms():
    cap = OutputCap(1000)
    assert cap.admit("display_data", {"data": {"text/plain": "x"}, "metadata": {"p": "A" * 2000}}, "m1")[0] is None
    assert cap.admit("display_data", {"data": {"application/json": {"k": ["B" * 2000]}}}, "m2")[0] is None
    assert cap.admit("display_data", {"data": {}, "transient": {"display_id": "C" * 2000}}, "m3")[0] is None
    assert cap.admit("comm_msg", {"comm_id": "c", "data": {"v": "D" * 2000}}, "m4")[0] is None
    small = {"data": {"text/plain": "x"}, "metadata": {"p": 1}}
    assert cap.admit("display_data", small, "m5") == (small, None)
    err = {"status": "error", "ename": "E", "evalue": "F" * 5000, "traceback": ["G" * 100] * 50}
    trimmed, _ = cap.admit("execute_reply", err, "m6")
    assert len(trimmed["evalue"]) + sum(map(len, trimmed["traceback"])) < 1100


def test_seccomp_filter_compiles_and_covers_the_dangerous_calls():
    f = Filter()
    for name in ("ptrace", "mount", "bpf", "keyctl", "userfaultfd", "perf_event_open", "unshare", "setns",
                 "kexec_load", "init_module", "finit_module"):
        assert name in f.denied, name
    assert set(f.denied) <= set(DENIED)
    r, w = os.pipe()
    try:
        f.export_bpf(w)
        os.close(w)
        assert len(os.read(r, 65536)) > 8 * len(f.denied)  # a BPF program, 8 bytes per instruction
    finally:
        os.close(r)
