"""The fork server: a process that imported ipykernel (and numpy) once, and forks a jailed kernel per request.

Started by :class:`Template`. It speaks JSON lines on its
stdin/stdout and nothing else: ``{"op": "spawn", "id": n, "spec": {...}, "log": path}`` answers
``{"op": "spawned", "id": n, "pid": p}``; when a child exits it says ``{"op": "exit", "pid": p,
"status": s}``. Forked children close the pipes before anything else (``_jail.enter``), so no
sandbox can talk to the template. Pages the template touched stay shared (copy-on-write) between
all its sandboxes, which is what keeps an idle sandbox small; ``gc.freeze()`` keeps the
collector from writing to them. When its owner dies (parent-death SIGTERM, or its stdin closing)
it kills every sandbox it started and removes their cgroups, mounts and networks (``_reaper``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys

from burstlab.errors import SandboxError


def _preimport() -> None:
    import IPython  # noqa: F401
    import ipykernel.ipkernel  # noqa: F401
    import ipykernel.kernelapp  # noqa: F401
    import ipykernel.zmqshell  # noqa: F401
    import jupyter_client.session  # noqa: F401
    import zmq  # noqa: F401

    # not matplotlib: it reads its backend and config dirs from the environment at import time
    for optional in ("ipykernel.debugger", "numpy", "IPython.core.completerlib", "IPython.core.debugger",
                     "IPython.core.oinspect", "IPython.extensions.storemagic", "tornado.platform.asyncio", "pdb"):
        try:
            __import__(optional)
        except Exception:  # noqa: BLE001 - an optional speed-up only
            pass


def main() -> None:
    from . import _jail
    from ._exec import enter_exec
    from ._kernel import start_kernel
    from ._seccomp import Filter

    from ._reaper import destroy

    # The owner's death (or its closing the control pipe) ends every sandbox this server started:
    # SIGTERM (not SIGKILL) so that it can also remove their cgroups, mounts and networks.
    owner = int(os.environ.get("BURSTLAB_SANDBOX_OWNER", "0"))
    dying: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: dying.append(1))
    # Jupyter interrupts or shuts down a notebook kernel by signalling its whole process group, this fork server
    # included: Ctrl-C is for the sandboxed cell (sent to its kernel), not for the server (which printed a
    # KeyboardInterrupt traceback into the notebook's log when its kernel closed).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _jail.prctl(_jail.PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != owner:
        os._exit(0)
    children: set[int] = set()
    state_dirs: set[str] = set()

    def owner_gone() -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for d in state_dirs:
            try:
                destroy(d)
            except Exception:  # noqa: BLE001 - best effort for each; the next reaper retries
                pass
        os._exit(0)

    _preimport()
    filt = Filter()
    import gc

    gc.collect()
    gc.freeze()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    os.set_blocking(wake_r, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    out = os.fdopen(1, "wb", buffering=0)

    def say(msg: dict) -> None:
        out.write((json.dumps(msg) + "\n").encode())

    say({"op": "ready", "pid": os.getpid()})
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, "in")
    sel.register(wake_r, selectors.EVENT_READ, "chld")
    buf = b""
    if dying:
        owner_gone()
    while True:
        for key, _ in sel.select():
            if dying:
                owner_gone()
            if key.data == "chld":
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                while True:
                    try:
                        pid, status = os.waitpid(-1, os.WNOHANG)
                    except ChildProcessError:
                        break
                    if pid == 0:
                        break
                    children.discard(pid)
                    say({"op": "exit", "pid": pid, "status": os.waitstatus_to_exitcode(status)})
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                owner_gone()
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                if req["op"] == "spawn":
                    log_fd = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
                    if req["spec"].get("state_dir"):
                        state_dirs.add(req["spec"]["state_dir"])
                    me = os.getpid()
                    pid = os.fork()
                    if pid == 0:
                        signal.signal(signal.SIGINT, signal.default_int_handler)  # the kernel's, as Python starts
                        _jail.enter(req["spec"], filt, log_fd, start_kernel, parent=me)
                    children.add(pid)
                    os.close(log_fd)
                    say({"op": "spawned", "id": req["id"], "pid": pid})
                elif req["op"] == "exec":  # a command in a running sandbox's jail (_exec)
                    me = os.getpid()
                    pid = os.fork()
                    if pid == 0:
                        enter_exec(req["spec"], filt, parent=me)
                    children.add(pid)
                    say({"op": "spawned", "id": req["id"], "pid": pid})
                elif req["op"] == "exit":
                    os._exit(0)


class Template:
    """The supervisor's handle on one fork server. Async; lives on burstlab's private loop."""

    def __init__(self) -> None:
        self.proc: asyncio.subprocess.Process | None = None
        self._ids = itertools.count(1)
        self._spawned: dict[int, asyncio.Future] = {}
        self._exits: dict[int, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self._ready: asyncio.Future | None = None
        self._lock = asyncio.Lock()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        async with self._lock:
            if self.alive:
                return
            env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "PYTHONPATH")}
            env["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"
            env["BURSTLAB_SANDBOX_OWNER"] = str(os.getpid())
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-Xfrozen_modules=off", "-c", "from burstlab.sandbox._template import main; main()",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
                limit=1 << 20,
            )
            self._ready = asyncio.get_running_loop().create_future()
            self._reader = asyncio.ensure_future(self._read())
            try:
                await asyncio.wait_for(asyncio.shield(self._ready), 60)
            except asyncio.TimeoutError as exc:
                await self.stop()
                raise SandboxError("The sandbox fork server did not start within 60 s; see its stderr above.") from exc

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            msg = json.loads(line)
            op = msg.get("op")
            if op == "ready" and self._ready and not self._ready.done():
                self._ready.set_result(msg["pid"])
            elif op == "spawned":
                fut = self._spawned.pop(msg["id"], None)
                if fut and not fut.done():
                    fut.set_result(msg["pid"])
            elif op == "exit":
                fut = self._exits.setdefault(msg["pid"], asyncio.get_running_loop().create_future())
                if not fut.done():
                    fut.set_result(msg["status"])
        err = SandboxError("The sandbox fork server exited; every sandbox it started is gone.")
        if self._ready and not self._ready.done():
            self._ready.set_exception(err)
        for fut in list(self._spawned.values()) + list(self._exits.values()):
            if not fut.done():
                fut.set_result(-9) if fut in self._exits.values() else fut.set_exception(err)

    async def spawn(self, spec: dict, log: str) -> tuple[int, asyncio.Future]:
        """Fork one jailed kernel; returns (its outer pid, a future of its exit status)."""
        return await self._fork({"op": "spawn", "spec": spec, "log": log})

    async def spawn_exec(self, spec: dict) -> tuple[int, asyncio.Future]:
        """Fork one command's waiter into a running sandbox (``_exec.enter_exec``); (its pid, its exit future)."""
        return await self._fork({"op": "exec", "spec": spec})

    async def _fork(self, request: dict) -> tuple[int, asyncio.Future]:
        """Send the fork server one ``request`` (it gains an ``id``); (the new pid, a future of its exit status)."""
        await self.start()
        assert self.proc is not None and self.proc.stdin is not None
        loop = asyncio.get_running_loop()
        rid = next(self._ids)
        fut = loop.create_future()
        self._spawned[rid] = fut
        self.proc.stdin.write((json.dumps({**request, "id": rid}) + "\n").encode())
        await self.proc.stdin.drain()
        pid = await asyncio.wait_for(fut, 30)
        return pid, self._exits.setdefault(pid, loop.create_future())

    def forget(self, pid: int) -> None:
        self._exits.pop(pid, None)

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
            await self.proc.wait()
        if self._reader:
            await asyncio.gather(self._reader, return_exceptions=True)
        self.proc = None

