"""Enter the jail: runs in a process just forked from the template, as root, and never returns.

Order matters, and each step is one layer of docs/sandbox.md:

1. close every inherited descriptor (the template's control pipe above all), join the cgroup;
2. ``unshare`` new mount, pid, ipc, uts, cgroup and net namespaces (or join the network namespace the
   supervisor wired for a network policy), then fork: the
   child is pid 1 of the new pid namespace, the parent ("outer") stays behind only to wait for it;
3. build a fresh root on a tmpfs: read-only binds of the system and Python directories, the work
   dir and the kernel's socket dir read-write, a size-limited /tmp, a new /proc, a minimal /dev;
   ``pivot_root`` into it and detach the host's tree;
4. drop privileges: empty the capability bounding set, switch to the sandbox's own unprivileged
   uid/gid, enter a new user namespace (uid 1000 inside), clear every capability there, set
   no_new_privs, rlimits, and load the seccomp filter;
5. pid 1 forks the kernel (a new session, so it owns no terminal) and reaps orphans until the
   kernel exits, then exits with its status, which takes the whole namespace down.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import resource
import signal
import socket
import struct
import sys
import traceback

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE = 1, 24, 38, 4
_SYS = {"x86_64": {"pivot_root": 155, "capset": 126}, "aarch64": {"pivot_root": 41, "capset": 91}}

INSIDE_UID = 1000


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def mount(src: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), f"mount {src} on {target}")


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(path: str, nstype: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, nstype), f"setns {path}")
    finally:
        os.close(fd)


def prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def _syscall(name: str, *args) -> int:
    nr = _SYS[platform.machine()][name]
    return _libc.syscall(nr, *args)


def _write_file(path: str, data: str | bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data.encode() if isinstance(data, str) else data)
    finally:
        os.close(fd)


def _bind(src: str, dst: str, *, readonly: bool, root: str, dev: bool = False) -> None:
    target = root + dst
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.exists(target):
            _write_file(target, b"")
    mount(src, target, None, MS_BIND | MS_REC)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | (0 if dev else MS_NODEV) | (MS_RDONLY if readonly else 0)
    mount(None, target, None, flags)


def build_root(spec: dict) -> None:
    """Steps 3: the new root, then pivot into it. Runs as root in the new mount and pid namespaces."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    root = spec["root_dir"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=755")
    # /tmp and /dev/shm first: size-limited tmpfs owned by the sandbox's user. Mounted before the binds
    # so that a Python environment living under /tmp (a CI checkout's venv) is bound on top, not hidden.
    uid, gid = spec["uid"], spec["gid"]
    for d, size in (("/tmp", spec["tmp_size"]), ("/dev/shm", spec["shm_size"])):
        os.makedirs(root + d, exist_ok=True)
        mount("tmpfs", root + d, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=1777")
    for src, dst in spec["ro_binds"]:
        if os.path.exists(src):
            _bind(src, dst, readonly=True, root=root)
    for src, dst in spec["rw_binds"]:
        _bind(src, dst, readonly=False, root=root)
    for dst, text in spec["files"]:
        os.makedirs(os.path.dirname(root + dst), exist_ok=True)
        _write_file(root + dst, text)
    for src, dst in spec["symlinks"]:
        os.makedirs(os.path.dirname(root + dst), exist_ok=True)
        os.symlink(src, root + dst)
    # a minimal /dev: the harmless character devices, bound from the host (plus GPU nodes when asked)
    for name in ("null", "zero", "full", "random", "urandom"):
        if os.path.exists("/dev/" + name):
            _bind("/dev/" + name, "/dev/" + name, readonly=False, root=root, dev=True)
    for path in spec["devices"]:
        _bind(path, path, readonly=False, root=root, dev=True)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/proc", exist_ok=True)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    # the root itself becomes read-only; the writable places are the mounts above
    os.chdir(root)
    _check(_syscall("pivot_root", b".", b"."), "pivot_root")
    umount(".", MNT_DETACH)
    os.chdir("/")
    mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.chown("/tmp", uid, gid)


def _loopback_up() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH14x", b"lo", 0x1 | 0x8 | 0x40)  # IFF_UP | IFF_LOOPBACK | IFF_RUNNING
        fcntl.ioctl(s.fileno(), 0x8914, ifr)  # SIOCSIFFLAGS
    finally:
        s.close()


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_bounding_set() -> None:
    cap = 0
    while True:
        rc = _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
        if rc != 0:
            if ctypes.get_errno() == errno.EINVAL:
                return
            _check(rc, f"PR_CAPBSET_DROP {cap}")
        cap += 1


def _clear_caps() -> None:
    hdr = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    _check(_syscall("capset", ctypes.byref(hdr), data), "capset")


def drop_privileges(spec: dict) -> None:
    """Step 4."""
    uid, gid = spec["uid"], spec["gid"]
    _drop_bounding_set()
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)  # all ids non-zero: the kernel clears every capability
    prctl(PR_SET_DUMPABLE, 1)  # the uid change made /proc/self root's; the user namespace maps need it ours
    unshare(CLONE_NEWUSER)
    _write_file("/proc/self/setgroups", "deny")
    _write_file("/proc/self/uid_map", f"{INSIDE_UID} {uid} 1\n")
    _write_file("/proc/self/gid_map", f"{INSIDE_UID} {gid} 1\n")
    _drop_bounding_set()
    _clear_caps()
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    for name, (soft, hard) in spec["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (soft, hard))


def _reap_until(kernel_pid: int) -> None:
    """pid 1's job: reap everything; exit with the kernel's status when it exits."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # pid 1 of a namespace gets only the signals it has a handler for: without this one, a SIGTERM
    # from the host (or from the sandbox's own code) would be ignored. Its exit ends the namespace.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(128 + signal.SIGTERM))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        except InterruptedError:
            continue
        if pid == kernel_pid:
            if os.WIFSIGNALED(status):
                os._exit(128 + os.WTERMSIG(status))
            os._exit(os.WEXITSTATUS(status))


def _parent_gone(pipe_r: int) -> bool:
    """Whether the write end of ``pipe_r`` (held by the parent alone) is closed: the parent died."""
    os.set_blocking(pipe_r, False)
    try:
        return os.read(pipe_r, 1) == b""
    except BlockingIOError:
        return False


def enter(spec: dict, seccomp_filter, log_fd: int, start_kernel, parent: int | None = None) -> None:
    """Run steps 1-5 in the current (just forked) process. Never returns.

    Lifetime: each process of the chain template -> outer -> pid 1 has a parent-death SIGKILL, and
    checks after setting it that its parent is still there (it may have died just before). pid 1
    sets it again after changing uid, which clears it, and checks through a pipe from the outer
    process. The kernel and everything else die with pid 1 (the pid namespace ends with it)."""
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.closerange(3, 65536)
        sys.stdout = sys.stderr = open(2, "w", buffering=1, closefd=False)
        signal.set_wakeup_fd(-1)  # the template's wake-up pipe is closed above
        os.setsid()
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if parent is not None and os.getppid() != parent:
            os._exit(0)  # the template died before the death signal was armed
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for procs in spec["cgroup_procs"]:
            _write_file(procs, str(os.getpid()))
        flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP
        if spec.get("netns"):
            setns(spec["netns"], CLONE_NEWNET)  # its own namespace, wired by the supervisor (_net)
        else:
            flags |= CLONE_NEWNET
        unshare(flags)
        alive_r, alive_w = os.pipe()
        child = os.fork()
        if child:
            # the outer process: wait, and pass the status on (the supervisor watches this pid)
            os.close(alive_r)
            _, status = os.waitpid(child, 0)
            os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
        os.close(alive_w)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if _parent_gone(alive_r):
            os._exit(0)
        build_root(spec)
        host = spec["hostname"].encode()
        _check(_libc.sethostname(host, len(host)), "sethostname")
        if not spec.get("netns"):
            _loopback_up()
        drop_privileges(spec)
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the uid change cleared it
        if _parent_gone(alive_r):
            os._exit(0)
        os.close(alive_r)
        seccomp_filter.load()
        kernel = os.fork()
        if kernel:
            _reap_until(kernel)
        os.setsid()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        start_kernel(spec)
        os._exit(0)
    except BaseException:
        try:
            traceback.print_exc()
            sys.stderr.flush()
        finally:
            os._exit(121)


__all__ = ["INSIDE_UID", "enter"]
