"""Sandbox.exec: commands in the sandbox's own jail (issue 18), against real namespaces, cgroups and seccomp."""

from __future__ import annotations

import os

import pytest

from burstlab.errors import SandboxError
from waiting import wait_for


def test_exit_codes_stdout_stderr(sb):
    r = sb.exec(["ls", "-la"])
    assert r.exit_code == 0 and r.ok and r.error is None
    assert "total" in r.stdout and r.duration_s > 0
    r = sb.exec("echo out; echo err >&2; exit 7", shell=True)
    assert (r.exit_code, r.stdout, r.stderr, r.ok) == (7, "out\n", "err\n", False)
    r = sb.exec(["no-such-command"])
    assert r.exit_code == 127 and "No such file" in r.stderr
    r = sb.exec("kill -TERM $$", shell=True)
    assert r.exit_code == 128 + 15


def test_same_jail_as_the_kernel(sb):
    r = sb.exec("id -u; pwd; hostname; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status", shell=True)
    lines = r.stdout.split("\n")
    assert lines[:3] == ["1000", "/home/user", "sandbox"]
    status = dict(line.split(":\t") for line in lines[3:] if line)
    assert status == {"CapEff": "0000000000000000", "CapBnd": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"}
    # the kernel's pid namespace: pid 1 is the sandbox's, and the kernel is visible; host processes are not
    kernel_pid_inside = sb.run("import os; os.getpid()").text
    r = sb.exec(["ls", "/proc"])
    pids = {int(p) for p in r.stdout.split() if p.isdigit()}
    assert 1 in pids and int(kernel_pid_inside) in pids and len(pids) < 20
    # seccomp is on: unshare is refused
    assert sb.exec(["unshare", "-U", "true"]).exit_code != 0


def test_files_shared_with_run(sb):
    sb.exec("echo from-exec > exec.txt", shell=True)
    assert sb.run("open('exec.txt').read()").text == "'from-exec\\n'"
    sb.run("open('run.txt', 'w').write('from-run')")
    assert sb.exec(["cat", "run.txt"]).stdout == "from-run"
    assert sb.files.read("exec.txt") == b"from-exec\n"


def test_cannot_see_host_files(sb, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    for path in ("/etc/shadow", os.path.abspath(__file__), str(secret)):
        r = sb.exec(["cat", path])
        assert r.exit_code != 0 and "host secret" not in r.stdout and "No such file" in r.stderr, (path, r)
    assert sb.exec("echo x > /usr/x", shell=True).exit_code != 0


def test_timeout_kills_the_command_and_its_children(sb):
    before = set(sb._cgroup.pids())
    r = sb.exec("sleep 60 & sleep 60", shell=True, timeout=1)
    assert r.timed_out and r.exit_code == 137 and r.error.startswith("SandboxTimeout")
    assert 0.9 < r.duration_s < 10
    # SIGKILLed with the command; under load the last of them may still be listed for a moment
    wait_for(lambda: set(sb._cgroup.pids()) <= before, 5, "the command's children to be gone")
    assert sb.run("1 + 1").text == "2"  # the kernel is untouched


def test_memory_limit(sb):
    r = sb.exec(["python", "-c", "x = b'x' * (400 << 20)"])
    assert r.exit_code == 137 and r.error and r.error.startswith("SandboxMemoryLimit")
    assert sb.run("2 + 2").text == "4"


def test_output_streams_and_is_capped(sb):
    seen = []
    r = sb.exec("echo one; echo two >&2", shell=True, on_output=seen.append)
    assert {(o.name, o.text) for o in seen} == {("stdout", "one\n"), ("stderr", "two\n")}
    r = sb.exec("head -c 1000000 /dev/zero | tr '\\0' a", shell=True)
    assert r.exit_code == 0 and len(r.stdout) == sb.limits.output and r.dropped_bytes == 1_000_000 - sb.limits.output
    assert "dropped" in r.stderr


def test_bad_arguments(sb):
    with pytest.raises(SandboxError, match="shell=True"):
        sb.exec("ls -la")
    with pytest.raises(SandboxError, match="one str"):
        sb.exec(["ls"], shell=True)
    with pytest.raises(SandboxError):
        sb.exec([])


def test_stdin_input(sb):
    r = sb.exec(["python", "-c", "import sys; print(sys.stdin.read().upper())"], input=b"hello")
    assert r.stdout == "HELLO\n"
    assert sb.exec(["cat"]).stdout == ""  # no input: /dev/null
