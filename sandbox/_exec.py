"""``Sandbox.exec``: a command (not a cell) inside a running sandbox's jail.

The fork server forks a *waiter* for each command (``enter_exec``, single-threaded, root). The waiter
joins the sandbox's cgroup, then the network, ipc, uts, cgroup, pid and mount namespaces of the
sandbox's pid 1 (so: the same files, the same ``/proc``, the same network policy), and forks the
command's process, which is in the sandbox's pid namespace. That process empties its capability
bounding set, becomes the sandbox's own host uid, joins pid 1's user namespace (uid 1000 inside),
empties the bounding set and every capability again (joining a user namespace grants them all inside it),
sets ``no_new_privs`` and the sandbox's rlimits, loads the same seccomp filter, changes to the work dir,
and ``execve``s the command with the scrubbed environment. The waiter exits with the command's status
(``128 + n`` for signal ``n``).

stdout and stderr travel through two FIFOs in the root-only state dir (the fork server speaks JSON over a
pipe and cannot pass descriptors); the command blocks when the supervisor reads slowly, and the supervisor
keeps at most the sandbox's output limit (``limits.output``, both streams together) and says how much it
dropped. A timeout kills the command's process tree and its session (``setsid``); a process that starts a
session of its own survives the timeout, in the sandbox, until the sandbox closes or restarts.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import signal
import sys
import time
from typing import Callable

from burstlab.errors import SandboxError
from burstlab.wire import ExecResult, Output  # ExecResult: the record is the wire's, one per concept

from . import _jail
from ._jailspec import WORK_DIR, scrubbed_env

_NS_ROOT = ("net", "ipc", "uts", "cgroup", "pid", "mnt")  # joined as root, in this order; then "user"
_NS_FLAGS = {"net": _jail.CLONE_NEWNET, "ipc": _jail.CLONE_NEWIPC, "uts": _jail.CLONE_NEWUTS,
             "cgroup": _jail.CLONE_NEWCGROUP, "pid": _jail.CLONE_NEWPID, "mnt": _jail.CLONE_NEWNS,
             "user": _jail.CLONE_NEWUSER}


def make_argv(cmd, shell: bool) -> list[str]:
    if shell:
        if not isinstance(cmd, str):
            raise SandboxError("exec(cmd, shell=True) takes the command line as one str, e.g. exec(\"pip list\", shell=True).")
        return ["/bin/sh", "-c", cmd]
    if isinstance(cmd, str):
        raise SandboxError(f"exec() takes a list of arguments, e.g. exec([\"ls\", \"-la\"]); for a command line "
                           f"such as {cmd!r} use exec({cmd!r}, shell=True).")
    argv = list(cmd) if isinstance(cmd, (list, tuple)) else None
    if not argv or not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise SandboxError("exec() takes a non-empty list of str arguments (no NUL bytes), e.g. exec([\"ls\", \"-la\"]).")
    return argv


# -- in the fork server's child -------------------------------------------------------------------
def enter_exec(spec: dict, seccomp_filter, parent: int) -> None:
    """The waiter (see the module's doc). Never returns."""
    try:
        out = os.open(spec["out"], os.O_WRONLY | os.O_CLOEXEC)
        err = os.open(spec["err"], os.O_WRONLY | os.O_CLOEXEC)
        os.dup2(out, 1)
        os.dup2(err, 2)
        # stdin: a root-only host file the supervisor names (opened here, before leaving the host's mounts)
        inp = os.open(spec.get("stdin") or "/dev/null", os.O_RDONLY | os.O_NOFOLLOW)
        os.dup2(inp, 0)
        os.closerange(3, 65536)
        sys.stdout = sys.stderr = open(2, "w", buffering=1, closefd=False)
        signal.set_wakeup_fd(-1)
        os.setsid()
        _jail.prctl(_jail.PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(0)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        target = spec["target"]
        fds = {ns: os.open(f"/proc/{target}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC) for ns in _NS_ROOT + ("user",)}
        with open(f"/proc/{target}/status") as f:  # the pid is still the sandbox's pid 1 (not a recycled one)
            uid_line = next(line for line in f if line.startswith("Uid:"))
        if int(uid_line.split()[1]) != spec["uid"]:
            raise SandboxError(f"pid {target} is no longer the sandbox's pid 1")
        for procs in spec["cgroup_procs"]:
            _jail._write_file(procs, str(os.getpid()))
        for ns in _NS_ROOT:
            _jail._check(_jail._libc.setns(fds[ns], _NS_FLAGS[ns]), f"setns {ns}")
        child = os.fork()
        if child:
            for fd in fds.values():
                os.close(fd)
            os.close(1)
            os.close(2)
            _, status = os.waitpid(child, 0)
            os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
        os.setsid()
        _jail.prctl(_jail.PR_SET_PDEATHSIG, signal.SIGKILL)
        uid, gid = spec["uid"], spec["gid"]
        _jail._drop_bounding_set()
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
        _jail._check(_jail._libc.setns(fds["user"], _NS_FLAGS["user"]), "setns user")
        for fd in fds.values():
            os.close(fd)
        _jail._drop_bounding_set()
        _jail._clear_caps()
        _jail.prctl(_jail.PR_SET_NO_NEW_PRIVS, 1)
        import resource

        for name, (soft, hard) in spec["rlimits"].items():
            resource.setrlimit(getattr(resource, name), (soft, hard))
        os.chdir(spec["cwd"])
        seccomp_filter.load()
        argv = spec["argv"]
        try:
            os.execvpe(argv[0], argv, spec["env"])
        except OSError as exc:
            os.write(2, f"burstlab exec: {argv[0]}: {exc.strerror}\n".encode())
            os._exit(127 if isinstance(exc, FileNotFoundError) else 126)
    except BaseException as exc:  # noqa: BLE001 - report and end; never return into the fork server
        try:
            os.write(2, f"burstlab exec: could not enter the sandbox: {exc}\n".encode())
        finally:
            os._exit(125)


# -- in the supervisor ---------------------------------------------------------------------------
def pid1_of(outer: int) -> int:
    """The sandbox's pid 1 (host pid): the one child of its outer process."""
    try:
        with open(f"/proc/{outer}/task/{outer}/children") as f:
            kids = f.read().split()
    except OSError:
        kids = []
    if not kids:
        raise SandboxError("The sandbox's kernel is not running (its pid 1 is gone); run() restarts it.")
    return int(kids[0])


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _session(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[4])
    except (OSError, IndexError, ValueError):
        return None


def kill_command(waiter: int, cgroup_pids: list[int]) -> None:
    """SIGKILL the command's tree under ``waiter`` and every process of its session (the sandbox's
    kernel and pid 1 are in other sessions)."""
    leaders = _children(waiter)
    doomed, todo = set(), list(leaders)
    while todo:
        p = todo.pop()
        if p not in doomed:
            doomed.add(p)
            todo.extend(_children(p))
    doomed.update(p for p in cgroup_pids if _session(p) in leaders)
    for p in doomed:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


class _Reader:
    """Both FIFOs' read ends on the loop: decode, cap, stream."""

    def __init__(self, limit: int, on_output: Callable[[Output], None] | None, keep: bool = True) -> None:
        self.limit, self.on_output, self.keep = limit, on_output, keep
        self.kept = 0
        self.dropped = 0
        self.text = {"stdout": [], "stderr": []}
        self.dec = {n: codecs.getincrementaldecoder("utf-8")("replace") for n in self.text}
        self.open: set[str] = set()
        self.eof = asyncio.Event()

    def feed(self, name: str, data: bytes) -> None:
        room = max(0, self.limit - self.kept)
        keep, self.dropped = data[:room], self.dropped + max(0, len(data) - room)
        self.kept += len(keep)
        text = self.dec[name].decode(keep, final=False) if keep else ""
        if text:
            if self.keep or (name == "stderr" and sum(map(len, self.text[name])) < 65536):
                self.text[name].append(text)
            if self.on_output is not None:
                self.on_output(Output(kind="stream", name=name, text=text))

    def watch(self, loop: asyncio.AbstractEventLoop, name: str, fd: int) -> None:
        self.open.add(name)

        def ready() -> None:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            if data:
                self.feed(name, data)
                return
            loop.remove_reader(fd)
            self.open.discard(name)
            if not self.open:
                self.eof.set()

        loop.add_reader(fd, ready)


async def run_command(sb, template, argv: list[str], timeout: float,
                      on_output: Callable[[Output], None] | None, stdin: str | None = None, *,
                      stop: asyncio.Event | None = None, limit: int | None = None, keep: bool = True) -> ExecResult:
    """Start ``argv`` in ``sb``'s jail through the fork server ``template`` (the caller holds no lock) and wait."""
    loop = asyncio.get_running_loop()
    async with sb._get_lock():
        await sb._ensure_kernel()
        k, cg = sb._kernel, sb._cgroup
        target = pid1_of(k.pid)
        fifo_dir = os.path.join(sb.state_dir, "exec")
        os.makedirs(fifo_dir, mode=0o700, exist_ok=True)
        tag = f"{os.getpid()}-{time.monotonic_ns()}"
        paths = {n: os.path.join(fifo_dir, f"{tag}.{n}") for n in ("stdout", "stderr")}
        fds: dict[str, int] = {}
        holders: list[int] = []
        for n, p in paths.items():
            os.mkfifo(p, 0o600)
            fds[n] = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            holders.append(os.open(p, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC))  # no EOF before the command opens it
        spec = {"target": target, "uid": sb.uid, "gid": sb.uid, "cgroup_procs": cg.procs_files,
                "rlimits": _rlimits(sb.limits), "env": {**scrubbed_env(sb._policy.kind != "none", sb._gpu_env), **getattr(sb, "_env", {})},
                "cwd": WORK_DIR, "argv": argv, "out": paths["stdout"], "err": paths["stderr"], "stdin": stdin}
        oom0 = cg.oom_kills()
        reader = _Reader(sb.limits.output if limit is None else limit, on_output, keep)
        for n, fd in fds.items():
            reader.watch(loop, n, fd)
        t0 = time.monotonic()
        try:
            pid, exited = await template.spawn_exec(spec)
        except BaseException:
            _close(loop, fds, holders, paths)
            raise
    timed_out = False
    stopped = asyncio.ensure_future(stop.wait()) if stop is not None else None
    try:
        try:
            done, _ = await asyncio.wait({exited} | ({stopped} if stopped else set()), timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if exited not in done:
                raise asyncio.TimeoutError
            status = exited.result()
        except asyncio.TimeoutError:
            timed_out = stopped is None or not stopped.done()
            await loop.run_in_executor(None, kill_command, pid, cg.pids())
            try:
                status = await asyncio.wait_for(asyncio.shield(exited), 10)
            except asyncio.TimeoutError:
                status = 137
        for h in holders:
            os.close(h)
        holders.clear()
        try:  # a background process the command started may hold the pipes: stop reading after a moment
            await asyncio.wait_for(reader.eof.wait(), 1.0)
        except asyncio.TimeoutError:
            pass
    finally:
        if stopped is not None:
            stopped.cancel()
        template.forget(pid)
        _close(loop, fds, holders, paths)
    for n in reader.text:
        tail = reader.dec[n].decode(b"", final=True)
        if tail:
            reader.text[n].append(tail)
    error = None
    if timed_out:
        error = (f"SandboxTimeout: the command passed its timeout of {timeout:g} s and was killed (with every "
                 "process of its session). Give more time with exec(cmd, timeout=...).")
    elif cg.oom_kills() > oom0:
        error = (f"SandboxMemoryLimit: a process was killed at the sandbox's memory limit of {sb.limits.memory} bytes "
                 "(the command, or the kernel: then the next run() restarts it and says so). Use less memory, or "
                 "create the sandbox with a larger memory=.")
    sb.output_bytes += reader.kept + reader.dropped
    stderr = "".join(reader.text["stderr"])
    if reader.dropped:
        stderr += (f"\n[burstlab: output passed the sandbox's limit of {sb.limits.output} bytes; "
                   f"{reader.dropped} bytes were dropped]\n")
    return ExecResult(tuple(argv), int(status if status is not None else 137), "".join(reader.text["stdout"]), stderr,
                      time.monotonic() - t0, timed_out, error, reader.dropped)


def _rlimits(lim) -> dict:
    return {"RLIMIT_NOFILE": (lim.open_files, lim.open_files), "RLIMIT_CORE": (0, 0),
            "RLIMIT_FSIZE": (lim.work_size, lim.work_size), "RLIMIT_NPROC": (lim.pids, lim.pids)}


def _close(loop, fds: dict[str, int], holders: list[int], paths: dict[str, str]) -> None:
    for fd in fds.values():
        loop.remove_reader(fd)
        os.close(fd)
    fds.clear()
    for h in holders:
        os.close(h)
    holders.clear()
    for p in paths.values():
        try:
            os.unlink(p)
        except OSError:
            pass


__all__ = ["ExecResult", "enter_exec", "make_argv", "run_command"]
