"""The adversarial suite: each case tries an escape from inside a sandbox and asserts that it fails.

Cases that only probe print ``BLOCKED`` when the attempt failed the way it must; cases that wreck
the kernel (bombs, kill -9, loops that ignore SIGINT) check the structured error and that the
sandbox, its neighbour and the host carry on. See docs/sandbox.md for which layer stops which.
"""

from __future__ import annotations

import os
import platform
import socket
import textwrap

import pytest

# Syscall numbers for the calls libc has no wrapper for (or whose wrapper hides the errno).
_NR = {
    "x86_64": {"bpf": 321, "keyctl": 250, "add_key": 248, "userfaultfd": 323, "perf_event_open": 298,
               "kexec_load": 246, "init_module": 175, "finit_module": 313, "io_uring_setup": 425,
               "pivot_root": 155, "clone": 56, "process_vm_readv": 310, "open_by_handle_at": 304,
               "fsopen": 430, "clone3": 435},
    "aarch64": {"bpf": 280, "keyctl": 219, "add_key": 217, "userfaultfd": 282, "perf_event_open": 241,
                "kexec_load": 104, "init_module": 105, "finit_module": 273, "io_uring_setup": 425,
                "pivot_root": 41, "clone": 220, "process_vm_readv": 270, "open_by_handle_at": 265,
                "fsopen": 430, "clone3": 435},
}[platform.machine()]

PRELUDE = """
import ctypes, errno, os
_libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *args):
    ctypes.set_errno(0)
    r = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return r, ctypes.get_errno()
def expect_errno(r_err, *codes):
    r, err = r_err
    print("BLOCKED" if r == -1 and err in codes else f"ALLOWED r={r} errno={err}")
"""


def run_probe(sb, code: str, timeout: float = 10):
    ex = sb.run(PRELUDE + textwrap.dedent(code), timeout=timeout)
    assert ex.error is None, (ex.error.ename, ex.error.evalue, ex.error.traceback[-3:])
    return ex.stdout.strip().splitlines()[-1] if ex.stdout.strip() else ""


EPERM = "errno.EPERM"
SYSCALL_CASES = {
    "ptrace_traceme": f"expect_errno((_libc.ptrace(0, 0, 0, 0), ctypes.get_errno()), {EPERM})",
    "ptrace_attach_pid1": f"expect_errno((_libc.ptrace(16, 1, 0, 0), ctypes.get_errno()), {EPERM})",
    "process_vm_readv": f"expect_errno(sc({_NR['process_vm_readv']}, 1, 0, 0, 0, 0, 0), {EPERM})",
    "unshare_user": f"expect_errno((_libc.unshare(0x10000000), ctypes.get_errno()), {EPERM})",
    "unshare_mount": f"expect_errno((_libc.unshare(0x00020000), ctypes.get_errno()), {EPERM})",
    "clone_newuser": f"expect_errno(sc({_NR['clone']}, 0x10000000 | 17, 0, 0, 0, 0), {EPERM})",
    "clone3": f"expect_errno(sc({_NR['clone3']}, 0, 0), errno.ENOSYS)",
    "setns_net": f"fd = os.open('/proc/1/ns/net', os.O_RDONLY)\nexpect_errno((_libc.setns(fd, 0), ctypes.get_errno()), {EPERM})",
    "mount_tmpfs": f"expect_errno((_libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno()), {EPERM})",
    "umount_proc": f"expect_errno((_libc.umount2(b'/proc', 2), ctypes.get_errno()), {EPERM})",
    "fsopen": f"expect_errno(sc({_NR['fsopen']}, 0, 0), {EPERM})",
    "pivot_root": f"expect_errno(sc({_NR['pivot_root']}, 0, 0), {EPERM})",
    "chroot": f"expect_errno((_libc.chroot(b'/tmp'), ctypes.get_errno()), {EPERM})",
    "bpf": f"expect_errno(sc({_NR['bpf']}, 0, 0, 0), {EPERM})",
    "keyctl": f"expect_errno(sc({_NR['keyctl']}, 0, 0, 0, 0, 0), {EPERM})",
    "add_key": f"expect_errno(sc({_NR['add_key']}, 0, 0, 0, 0, 0), {EPERM})",
    "userfaultfd": f"expect_errno(sc({_NR['userfaultfd']}, 0), {EPERM})",
    "perf_event_open": f"expect_errno(sc({_NR['perf_event_open']}, 0, 0, -1, -1, 0), {EPERM})",
    "io_uring_setup": f"expect_errno(sc({_NR['io_uring_setup']}, 1, 0), {EPERM})",
    "kexec_load": f"expect_errno(sc({_NR['kexec_load']}, 0, 0, 0, 0), {EPERM})",
    "init_module": f"expect_errno(sc({_NR['init_module']}, 0, 0, 0), {EPERM})",
    "finit_module": f"expect_errno(sc({_NR['finit_module']}, 0, 0, 0), {EPERM})",
    "open_by_handle_at": f"expect_errno(sc({_NR['open_by_handle_at']}, 0, 0, 0), {EPERM})",
    "sethostname": f"expect_errno((_libc.sethostname(b'evil', 4), ctypes.get_errno()), {EPERM})",
    "setuid_root": "try:\n    os.setuid(0); print('ALLOWED')\nexcept OSError:  # EINVAL: uid 0 is not even mapped\n    print('BLOCKED')",
    "mknod_device": "try:\n    os.mknod('/tmp/mem', 0o600 | 0o020000, os.makedev(1, 1)); print('ALLOWED')\nexcept OSError:\n    print('BLOCKED')",
}


@pytest.mark.parametrize("name", sorted(SYSCALL_CASES))
def test_kernel_surface_is_refused(sb, name):
    assert run_probe(sb, SYSCALL_CASES[name]) == "BLOCKED"


def test_no_capabilities_and_no_new_privs(sb):
    out = run_probe(sb, """
        st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
        caps = [int(st[k].strip(), 16) for k in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb')]
        ok = caps == [0] * 5 and st['NoNewPrivs'].strip() == '1' and st['Seccomp'].strip() == '2'
        print('BLOCKED' if ok else f'ALLOWED {caps} {st["NoNewPrivs"]} {st["Seccomp"]}')
    """)
    assert out == "BLOCKED"


def test_setuid_binaries_do_not_elevate(sb):
    out = run_probe(sb, """
        import subprocess
        p = subprocess.run(['/usr/bin/su', '-c', 'id -u'], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=5)
        print('BLOCKED' if p.returncode != 0 and '0' != p.stdout.strip() else 'ALLOWED ' + p.stdout)
    """) if os.path.exists("/usr/bin/su") else "BLOCKED"
    assert out == "BLOCKED"


def test_host_secret_files_are_absent(sb):
    out = run_probe(sb, """
        gone = all(not os.path.exists(p) for p in ('/etc/shadow', '/etc/sudoers', '/root/.ssh', '/root/.bash_history',
                                                    '/etc/ssh', '/var', '/sys', '/boot', '/home/user/../../etc/shadow'))
        print('BLOCKED' if gone and os.listdir('/root') == ['.pyenv'] or gone and os.listdir('/root') == [] else 'ALLOWED')
    """)
    assert out == "BLOCKED"


def test_host_repo_and_home_are_absent(sb):
    here = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    out = run_probe(sb, f"""
        print('BLOCKED' if not os.path.exists({os.path.join(here, 'pyproject.toml')!r}) and
              not os.path.exists({os.path.join(here, '.git')!r}) else 'ALLOWED')
    """)
    assert out == "BLOCKED"


def test_host_environment_is_not_visible(sb, monkeypatch):
    monkeypatch.setenv("BURSTLAB_TEST_SECRET", "s3cr3t-value")
    out = run_probe(sb, """
        seen = str(dict(os.environ))
        for p in os.listdir('/proc'):
            if p.isdigit():
                try: seen += open(f'/proc/{p}/environ', 'rb').read().decode('latin-1')
                except OSError: pass
        print('BLOCKED' if 's3cr3t' not in seen and 'JPY_PARENT_PID' not in seen and 'AWS_' not in seen else 'ALLOWED')
    """)
    assert out == "BLOCKED"


def test_proc_shows_only_the_sandbox(sb):
    out = run_probe(sb, f"""
        pids = [int(p) for p in os.listdir('/proc') if p.isdigit()]
        host_pid_visible = {os.getpid()} in pids and 'pytest' in open(f'/proc/{os.getpid()}/cmdline').read()
        print('BLOCKED' if len(pids) < 10 and not host_pid_visible and max(pids) < 1000 else f'ALLOWED {{pids}}')
    """)
    assert out == "BLOCKED"


def test_signals_cannot_reach_host_processes(sb):
    out = run_probe(sb, f"""
        import signal
        try:
            os.kill({os.getpid()}, signal.SIGKILL); print('ALLOWED')
        except ProcessLookupError:
            print('BLOCKED')
    """)
    assert out == "BLOCKED"


@pytest.mark.parametrize("path", ["/usr/evil", "/etc/evil", "/evil", "/root/.pyenv/evil", "/proc/sys/kernel/hostname"])
def test_writes_outside_the_work_dir_fail(sb, path):
    out = run_probe(sb, f"""
        try:
            open({path!r}, 'w').write('x'); print('ALLOWED')
        except OSError as e:
            print('BLOCKED' if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT) else f'ALLOWED {{e}}')
    """)
    assert out == "BLOCKED"


def test_python_environment_is_read_only(sb):
    out = run_probe(sb, """
        import numpy
        try:
            open(os.path.join(os.path.dirname(numpy.__file__), 'evil.py'), 'w'); print('ALLOWED')
        except OSError as e:
            print('BLOCKED' if e.errno == errno.EROFS else f'ALLOWED {e}')
    """)
    assert out == "BLOCKED"


def test_disk_bomb_in_tmp_stops_at_its_size(sb):
    out = run_probe(sb, """
        try:
            with open('/tmp/bomb', 'wb') as f:
                for _ in range(64): f.write(b'x' * (1 << 20))
            print('ALLOWED')
        except OSError as e:
            print('BLOCKED' if e.errno == errno.ENOSPC else f'ALLOWED {e}')
        finally:
            os.remove('/tmp/bomb')
    """)
    assert out == "BLOCKED"


def test_disk_bomb_in_work_dir_stops_at_its_size(sb):
    out = run_probe(sb, """
        try:
            with open('bomb', 'wb') as f:
                for _ in range(128): f.write(b'x' * (1 << 20))
            print('ALLOWED')
        except OSError as e:
            print('BLOCKED' if e.errno in (errno.ENOSPC, errno.EFBIG) else f'ALLOWED {e}')
        finally:
            os.remove('bomb')
    """)
    assert out == "BLOCKED"


def test_tcp_egress_fails(sb):
    out = run_probe(sb, """
        import socket
        try:
            socket.create_connection(('1.1.1.1', 443), timeout=2); print('ALLOWED')
        except OSError as e:
            print('BLOCKED' if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH) else f'ALLOWED {e}')
    """)
    assert out == "BLOCKED"


def test_udp_egress_fails(sb):
    out = run_probe(sb, """
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(b'x', ('8.8.8.8', 53)); print('ALLOWED')
        except OSError as e:
            print('BLOCKED' if e.errno == errno.ENETUNREACH else f'ALLOWED {e}')
    """)
    assert out == "BLOCKED"


def test_dns_fails(sb):
    out = run_probe(sb, """
        import socket
        try:
            socket.getaddrinfo('example.com', 80); print('ALLOWED')
        except socket.gaierror:
            print('BLOCKED')
    """)
    assert out == "BLOCKED"


def test_host_loopback_services_are_unreachable(sb):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        port = srv.getsockname()[1]
        out = run_probe(sb, f"""
            import socket
            try:
                socket.create_connection(('127.0.0.1', {port}), timeout=2); print('ALLOWED')
            except OSError as e:
                print('BLOCKED' if e.errno == errno.ECONNREFUSED else f'ALLOWED {{e}}')
        """)
    finally:
        srv.close()
    assert out == "BLOCKED"


def test_host_unix_sockets_are_unreachable(sb, tmp_path):
    path = str(tmp_path / "host.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0burstlab-test-host-service")
    srv.listen(1)
    abstract.listen(1)
    try:
        out = run_probe(sb, f"""
            import socket
            results = []
            for addr in ({path!r}, '\\0burstlab-test-host-service', '/run/systemd/private', '/var/run/docker.sock'):
                s = socket.socket(socket.AF_UNIX)
                try:
                    s.connect(addr); results.append('connected')
                except OSError as e:
                    results.append(e.errno)
            print('BLOCKED' if 'connected' not in results else f'ALLOWED {{results}}')
        """)
    finally:
        srv.close()
        abstract.close()
    assert out == "BLOCKED"


def test_symlink_and_hard_link_tricks_in_files(sb):
    from burstlab.errors import SandboxError

    sb.run("import os\nos.symlink('/etc/hostname', 'link')\nos.symlink('/etc', 'etcdir')\n"
           "open('real', 'w').write('r')\nos.link('real', 'hard')\nos.mkfifo('fifo')\n"
           "os.symlink('/dev/zero', 'zero')")
    for bad in ("link", "etcdir/passwd", "hard", "fifo", "zero", ".", "/etc/passwd", "../x", "nested/../../x"):
        with pytest.raises(SandboxError):
            sb.files.read(bad)
    with pytest.raises(SandboxError):
        sb.files.write("etcdir/evil", b"x")  # would follow the symlinked directory
    with pytest.raises(SandboxError):
        sb.files.write("/tmp/evil", b"x")
    sb.files.write("link", b"replaced")  # replaces the link itself; never writes through it
    assert sb.run("import os; os.path.islink('link'), open('link').read()").text == "(False, 'replaced')"
    assert sb.run("open('/etc/hostname').read()").text == "'sandbox\\n'"
    sb.run("import os\nfor n in ('link', 'etcdir', 'real', 'hard', 'fifo', 'zero'): os.remove(n)")


def test_hard_link_to_a_file_outside_fails(sb):
    out = run_probe(sb, """
        try:
            os.link('/etc/hostname', 'h'); print('ALLOWED')
        except OSError as e:
            print('BLOCKED' if e.errno in (errno.EXDEV, errno.EPERM, errno.EROFS) else f'ALLOWED {e}')
    """)
    assert out == "BLOCKED"


def test_other_sandboxes_are_invisible(sb, neighbour):
    neighbour.files.write("neighbour-secret.txt", b"nope")
    neighbour.run("open('/tmp/neighbour-tmp.txt', 'w').write('nope')")
    out = run_probe(sb, """
        found = []
        for top in ('/home', '/tmp', '/run', '/dev/shm', '/root', '/etc'):
            for d, _, files in os.walk(top):
                found += [f for f in files if f.startswith('neighbour-')]
        print('BLOCKED' if not found else f'ALLOWED {found}')
    """)
    assert out == "BLOCKED"


def test_no_terminal_to_inject_into(sb):
    out = run_probe(sb, """
        try:
            open('/dev/tty'); print('ALLOWED')
        except OSError:
            print('BLOCKED' if sorted(os.listdir('/dev')) == sorted(['fd', 'full', 'null', 'random', 'shm', 'stderr', 'stdin', 'stdout', 'urandom', 'zero']) else 'ALLOWED ' + str(os.listdir('/dev')))
    """)
    assert out == "BLOCKED"


def test_invalid_utf8_and_nul_bytes_in_output(sb):
    ex = sb.run("import sys, os, time\nos.write(1, b'bad \\xff\\xfe utf8\\n')\nos.write(2, b'raw \\xc3\\x28\\n')\n"
                "print('nul\\x00byte')\nsys.stderr.write('\\udcff surrogate\\n')\ntime.sleep(0.2)")
    assert ex.error is None, ex.error
    assert "nul\x00byte" in ex.stdout
    assert sb.run("'still fine'").text == "'still fine'"


def test_output_bomb_is_capped(sb):
    ex = sb.run("import sys\nfor i in range(200_000): sys.stdout.write('spam ' * 20 + '\\n')", timeout=30)
    assert len(ex.stdout) <= 256 * 1024 and "more bytes were dropped" in ex.stderr


# -- the ones that wreck the kernel: structured errors, and the sandbox survives ----------------------------

def test_infinite_loop_ignoring_sigint_is_killed_and_restarted(sb):
    sb.run("before = 1")
    ex = sb.run("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass", timeout=1)
    assert ex.error.ename == "SandboxTimeout" and "state" in ex.error.evalue and "lost" in ex.error.evalue
    assert sb.run("before").error.ename == "NameError"  # state lost, as reported
    assert sb.run("1 + 1").text == "2"


def test_kill_9_of_the_kernel(sb):
    ex = sb.run("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert ex.error.ename == "SandboxKernelDied" and "state" in ex.error.evalue
    assert sb.run("'back'").text == "'back'"


def test_kill_everything_in_the_sandbox(sb, neighbour):
    # kill(-1) reaches only the sandbox's own pid namespace; its pid 1 ignores signals from inside
    ex = sb.run("import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept ProcessLookupError:\n    pass\n"
                "os.kill(1, signal.SIGKILL)\n'still here'")
    assert ex.error is None and ex.text == "'still here'"
    assert neighbour.run("'neighbour fine'").text == "'neighbour fine'"


def test_memory_bomb_is_oom_killed_inside_its_cgroup(sb, neighbour):
    neighbour.run("kept = 'neighbour state'")
    ex = sb.run("chunks = []\nwhile True: chunks.append(bytearray(16 * 1024 * 1024))", timeout=30)
    assert ex.error.ename == "SandboxMemoryLimit", ex.error
    assert "256 MiB" in ex.error.evalue and "memory=" in ex.error.evalue
    assert sb.run("'survived'").text == "'survived'"
    assert neighbour.run("kept").text == "'neighbour state'"  # untouched


def test_tmpfs_memory_bomb_counts_against_memory(sb):
    # /dev/shm pages are memory: they are charged to the sandbox's cgroup and capped by its size
    out = run_probe(sb, """
        try:
            with open('/dev/shm/bomb', 'wb') as f:
                for _ in range(512): f.write(b'x' * (1 << 20))
            print('ALLOWED')
        except OSError as e:
            print('BLOCKED' if e.errno == errno.ENOSPC else f'ALLOWED {e}')
        finally:
            os.remove('/dev/shm/bomb')
    """)
    assert out == "BLOCKED"


def test_fork_bomb_is_contained(sb, neighbour):
    ex = sb.run("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass", timeout=20)
    assert ex.error.ename == "SandboxPidsLimit", ex.error
    assert sb.run("'survived'").text == "'survived'"
    assert neighbour.run("'fine'").text == "'fine'"


def test_thread_bomb_is_contained(sb):
    ex = sb.run("import threading, time\nwhile True:\n    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()",
                timeout=20)
    assert ex.error is not None and ex.error.ename in ("SandboxPidsLimit", "RuntimeError"), ex.error
    assert sb.run("'survived'").text == "'survived'"


def test_subprocess_fork_bomb_is_contained(sb):
    ex = sb.run("import subprocess\nsubprocess.run(['/bin/sh', '-c', 'b(){ b|b& }; b'], capture_output=True, timeout=15)",
                timeout=20)
    # stopped by the pids cgroup (the run ends in SandboxPidsLimit) or, first, by RLIMIT_NPROC ("Cannot fork")
    assert (ex.error is not None and ex.error.ename in ("SandboxPidsLimit", "SandboxTimeout")) or "fork" in ex.text, ex
    assert len(sb._cgroup.pids()) <= sb.limits.pids
    assert sb.run("'survived'").text == "'survived'"


def test_supervisor_stays_responsive_while_the_sandbox_is_busy(sb, neighbour):
    import threading
    import time

    done = threading.Event()
    t = threading.Thread(target=lambda: (sb.run("while True: pass", timeout=3), done.set()))
    t.start()
    try:
        start = time.monotonic()
        for _ in range(5):
            assert neighbour.run("1").text == "1"
        assert time.monotonic() - start < 20  # generous: only that it was not blocked behind the busy sandbox
        assert not done.is_set() or True
    finally:
        t.join(30)
