"""``Sandbox``: a stateful, isolated Python kernel on this machine, with hard limits.

Async core (``astart``, ``arun``, ``arestart``, ``aclose``) on burstlab's private loop, and one
blocking twin of each through :func:`burstlab._sync.run_sync`. Errors in the user's code, and the
limits it hits, come back as data in ``Execution.error`` (``ename`` names the limit:
``SandboxTimeout``, ``SandboxMemoryLimit``, ``SandboxPidsLimit``, ``SandboxKernelDied``); failures of
the platform raise :class:`SandboxError`.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import time
from typing import Any, Callable

from burstlab import _default
from burstlab._sync import run_interruptible, run_sync
from burstlab.errors import ConfigError, SandboxError
from burstlab.secrets import Redactor, split
from burstlab.wire import Execution, ExecutionError, Output

from . import _jail, _life, _reaper, _snapshot
from ._snapshot import Snapshot
from ._watch import Watch
from ._cgroup import Cgroup
from ._client import Collected, KernelClient, connection_info, new_key
from ._files import SandboxFiles
from ._agent import AgentFeatures, _check_seconds
from ._gpu import gpu_devices
from ._kernel import marker
from ._limits import Limits, format_size, make_limits, parse_size
from ._net import net_record, parse_policy
from ._net import setup as net_setup
from ._net import teardown as net_teardown
from ._jailspec import RUN_DIR, jail_spec, refused_env
from ._template import Template

STATE_BASE = _reaper.STATE_BASE
UID_BASE, UID_SPAN = 1_000_000, 1_000_000
LOG_SIZE = 1024 * 1024  # the kernel's fd 1/2 log: a tmpfs of its own, charged to the sandbox's memory
DEFAULT_IDLE_TIMEOUT = 3600.0
AUTO: Any = type("AutoMeter", (), {"__repr__": lambda self: "AUTO", "__bool__": lambda self: False})()
"""``meter=AUTO`` (the default): the process's workspace meters the sandbox when it starts, if the workspace
layer is loaded (``burstlab.Sandbox``, ``import burstlab.workspace``); the bare jail alone meters nothing."""

# Started and not yet closed: strong references, since an unreferenced sandbox still holds processes,
# cgroups and mounts until it is closed, reaped for idleness, or this process exits.
_live: "set[Sandbox]" = set()

_template: Template | None = None


def template() -> Template:
    """The process's one fork server (started on first use, stopped at exit)."""
    global _template
    if _template is None:
        _template = Template()
    return _template


async def stop_template() -> None:
    global _template
    if _template is not None:
        await _template.stop()
        _template = None


@atexit.register
def _stop_template_at_exit() -> None:
    """At exit: kill the fork server (every sandbox's processes die with it) and remove what each
    sandbox still holds (cgroups, mounts, network), so nothing outlives this process."""
    for sb in list(_live):
        if sb.state_dir and not sb._closed:
            sb._closed = True
            try:
                k, cg = sb._kernel, sb._cgroup
                if k is not None and cg is not None:
                    cg.kill_all(timeout=2, spare=k.pid)  # pid 1 first, so its parent reaps it (no zombie)
                _reaper.destroy(sb.state_dir)
            except Exception:  # noqa: BLE001 - at exit, best effort; the next start's reaper retries
                pass
    t = _template
    if t is not None and t.proc is not None and t.proc.returncode is None:
        try:
            t.proc.kill()
        except ProcessLookupError:
            pass


def _claim_state_dir() -> tuple[str, int, dict]:
    """A fresh state dir whose name is the sandbox's host uid (mkdir is the atomic claim), with its
    owner record (this process); the first claim of a process reaps orphans of dead owners."""
    os.makedirs(STATE_BASE, mode=0o711, exist_ok=True)
    _reaper.reap_once()
    for _ in range(100):
        uid = UID_BASE + int.from_bytes(os.urandom(4), "little") % UID_SPAN
        path = os.path.join(STATE_BASE, str(uid))
        try:
            os.mkdir(path, 0o711)
        except FileExistsError:
            continue
        rec = dict(_reaper.owner_id(), uid=uid, cgroups=[], net=None)
        _reaper.write_record(path, rec)
        return path, uid, rec
    raise SandboxError(f"Could not claim a sandbox state dir under {STATE_BASE}; remove stale ones there.")


def _remove_state(path: str) -> None:
    _reaper.destroy(path, {})


def _clear_dir(path: str) -> None:
    """Remove every entry of a sandbox-owned dir without following anything in it."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for name in os.listdir(fd):
            try:
                os.unlink(name, dir_fd=fd)
            except IsADirectoryError:
                import shutil

                shutil.rmtree(name, dir_fd=fd)
    finally:
        os.close(fd)


class _Kernel:
    """One running kernel of a sandbox (a sandbox has a new one after each restart)."""

    def __init__(self, pid: int, exited: asyncio.Future, client: KernelClient) -> None:
        self.pid = pid
        self.exited = exited
        self.client = client


class Sandbox(AgentFeatures):
    """An isolated, stateful Python kernel.

    ``Sandbox(timeout=30, memory="512MiB", network=False)``; use as a (async) context manager, or
    call ``start()``/``close()``. ``run(code)`` returns an :class:`~burstlab.wire.Execution`;
    ``files`` reads and writes the work dir; ``usage()`` reports CPU and wall seconds and memory.
    Its life is an interval in the ledger: by default the process's workspace's (``burstlab.Sandbox()``
    is metered like ``ws.sandbox()``, as its user and notebook, and counts toward their budgets); pass
    ``meter=`` (a :class:`burstlab.billing.Meter`) for another ledger, or ``meter=None`` for none.

    ``network``: ``False`` (no network: an empty namespace of its own), ``True`` (any address outside
    this host, through NAT; never the host's own addresses, its loopback included), or a list of
    ``"host:port"``, ``"ip"`` and ``"CIDR"`` entries it may reach and nothing else (docs/sandbox.md).
    ``sandbox_idle_timeout``: a started sandbox that runs nothing for this many seconds is closed.
    ``idle_action="pause"``: the idle timeout pauses it (``pause()``) instead of closing it.
    ``lifetime``: a started sandbox is closed at this age (seconds; ``set_lifetime`` changes it), or paused with
    ``lifetime_action="pause"`` (``paused_why`` says so; its next use resumes it, and its next run's output says
    so, with a new lifetime counted from the resume); ``metrics()``
    is its CPU, memory, pids and output as a time series; ``exec(cmd)`` runs a command in its jail.
    """

    def __init__(
        self, timeout: float = 30, memory: int | str = "512MiB", network: bool | list[str] | tuple = False, *,
        pids: int | None = None, cpus: float | None = None, output: int | str | None = None,
        work_size: int | str | None = None, tmp_size: int | str | None = None,
        max_upload: int | str | None = None, max_download: int | str | None = None,
        gpu: str | None = None, meter: Any = AUTO, user: str = "", notebook: str = "",
        limits: Limits | None = None, sandbox_idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        lifetime: float | None = None, idle_action: str = "close", lifetime_action: str = "close",
        env: dict[str, str] | None = None, secrets: Any = None,
    ) -> None:
        lim = make_limits(limits, timeout=timeout, memory=memory, pids=pids, cpus=cpus, output=output,
                          work_size=work_size, tmp_size=tmp_size)
        if max_upload is not None:
            lim = lim.replace(max_upload=parse_size(max_upload, "max_upload"))
        if max_download is not None:
            lim = lim.replace(max_download=parse_size(max_download, "max_download"))
        self.limits = lim
        self._policy = parse_policy(network)
        self.network = self._policy.public
        if sandbox_idle_timeout is not None and (
                isinstance(sandbox_idle_timeout, bool) or not isinstance(sandbox_idle_timeout, (int, float))
                or not sandbox_idle_timeout > 0 or sandbox_idle_timeout == float("inf")):
            raise SandboxError(f"sandbox_idle_timeout={sandbox_idle_timeout!r} must be a positive number of seconds "
                               "(or None for no idle limit), e.g. sandbox_idle_timeout=3600.")
        self.idle_timeout = sandbox_idle_timeout
        self.lifetime: float | None = _check_seconds(lifetime, "lifetime") if lifetime is not None else None
        self._deadline: float | None = None
        self.output_bytes = 0  # output the supervisor received from runs and commands (metrics)
        self._metrics = _life.Metrics()
        self._minder: asyncio.Task | None = None
        self._paused: Snapshot | None = None  # the state of a paused sandbox (pause(); resumed on next use)
        if idle_action not in ("close", "pause"):
            raise SandboxError(f"idle_action={idle_action!r}: give \"close\" or \"pause\".")
        self.idle_action = idle_action
        if lifetime_action not in ("close", "pause"):
            raise SandboxError(f"lifetime_action={lifetime_action!r}: give \"close\" or \"pause\".")
        self.lifetime_action = lifetime_action
        self.paused_why = ""  # why the sandbox is paused, when its lifetime paused it (_life.py)
        self._notice = ""  # said once, ahead of the next run's output (a resume after a lifetime pause)
        self.last_active = time.monotonic()
        self._busy = 0
        self._closed_why = ""
        self._closing: str | None = None  # set by aclose while a run holds the lock: that run ends, not respawns
        self._net: dict | None = None
        self._record: dict | None = None
        self.gpu = gpu
        self.meter = meter
        self.user = user or os.environ.get("USER", "")
        self.notebook = notebook
        self.restarts = 0
        self.state_dir: str | None = None
        self.uid: int | None = None
        self._cgroup: Cgroup | None = None
        self._kernel: _Kernel | None = None
        self._files: SandboxFiles | None = None
        self._lock: asyncio.Lock | None = None
        self._closed = False
        self._started_at: float | None = None
        self._meter_id: str | None = None
        self._devices: list[str] = []
        self._gpu_env: dict[str, str] = {}
        self._env, secret_values = split(env, secrets)  # checked here: a bad name fails before anything starts
        for name in sorted({*self._env, *secret_values}):
            why = refused_env(name)
            if why:
                raise ConfigError(f"{name} {why}: a sandbox's env= and secrets= cannot name it.")
        self._env.update(secret_values)  # the kernel's environment in the jail (and again after each restart)
        self._redactor = Redactor(secret_values.values())  # every Execution and streamed output goes through it
        self.env_names = sorted(self._env)  # names only, for records: never the values

    # -- sync twins -----------------------------------------------------------------------------
    def start(self) -> "Sandbox":
        run_sync(self.astart())
        return self

    def run(self, code: str, timeout: float | None = None,
            on_output: Callable[[Output], None] | None = None) -> Execution:
        """Run one cell. Ctrl-C in the caller interrupts the sandboxed cell (its KeyboardInterrupt comes
        back in ``.error``); the kernel and its state are kept."""
        return run_interruptible(self.arun(code, timeout, on_output), self.ainterrupt)

    def interrupt(self) -> None:
        run_sync(self.ainterrupt())

    async def ainterrupt(self) -> None:
        """Interrupt the running cell, if any (an interrupt_request on the kernel's control channel)."""
        if self._kernel is not None and not self._closed:
            await self._kernel.client.interrupt()

    def restart(self) -> None:
        run_sync(self.arestart())

    def close(self) -> None:
        if not self._closed:
            run_sync(self.aclose())

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "Sandbox":
        await self.astart()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    # -- properties -------------------------------------------------------------------------------
    @property
    def files(self) -> SandboxFiles:
        if self._files is None:
            self.start()
        assert self._files is not None
        self.last_active = time.monotonic()
        return self._files

    @property
    def started(self) -> bool:
        return self._kernel is not None and not self._closed

    @property
    def kernel_pid(self) -> int | None:
        """The host pid of the sandbox's outermost process (its exit ends the sandbox's kernel)."""
        return self._kernel.pid if self._kernel else None

    def usage(self) -> dict:
        """CPU seconds (all processes, all restarts), wall seconds since start, memory now and peak."""
        cg = self._cgroup
        return {
            "cpu_s": cg.cpu_seconds() if cg else 0.0,
            "wall_s": (time.monotonic() - self._started_at) if self._started_at else 0.0,
            "memory_bytes": cg.memory_bytes() if cg else 0,
            "memory_peak_bytes": cg.memory_peak() if cg else 0,
            "restarts": self.restarts,
        }

    def log(self, max_bytes: int = 20_000) -> str:
        """The tail of the kernel's own log (start-up errors land here)."""
        if not self.state_dir:
            return ""
        try:
            with open(os.path.join(self.state_dir, "log", "kernel.log"), "rb") as f:
                f.seek(0, 2)
                f.seek(max(0, f.tell() - max_bytes))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    # -- lifecycle ------------------------------------------------------------------------------
    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def astart(self) -> "Sandbox":
        async with self._get_lock():
            await self._start_locked()
        return self

    async def _start_locked(self) -> None:
        if self._closed or self._closing is not None:
            why = self._closed_why if self._closed else self._closing
            raise SandboxError(f"This sandbox is closed{why}; create a new Sandbox().")
        if self._paused is not None:  # the next use resumes a paused sandbox
            return await _snapshot.resume_locked(self)
        if self._kernel is not None:
            return
        if os.geteuid() != 0:
            raise SandboxError(
                "Sandboxes need root here (to mount the work dir, create cgroups and switch to an unprivileged uid). "
                "Run the supervising process (the notebook server or script) as root, e.g. in its container."
            )
        if self.meter is AUTO and _default.provided():  # the process's workspace adopts it (its meter, user,
            # notebook and budgets: a spent one raises, and leaves it AUTO for the next try), and gives it a warm
            # sandbox from its pool when the pool serves these settings
            _default.default_workspace().adopt_sandbox(self)
        if self.meter is AUTO:
            self.meter = None
        warm = self._kernel is not None
        if not warm:  # no warm one: a new jail and kernel
            await self._start_jail()
        self._started_at = self.last_active = time.monotonic()
        if self.lifetime is not None:
            self._deadline = self._started_at + self.lifetime
        if self._minder is None or self._minder.done():
            self._minder = _life.start(self)
        if self.idle_timeout is not None:
            _reaper.watch_idle(self)
        if self.meter is not None:
            self._meter_id = self.meter.start(
                kind="sandbox", user=self.user, notebook=self.notebook, resource="CPU",
                quantity=max(1, round(self.limits.cpus)),
                detail={"sandbox": self.uid, "memory": self.limits.memory, "network": self.network, "gpu": self.gpu,
                        **({"pooled": True} if warm else {})},
            )

    async def _start_jail(self) -> None:
        """Claim a state dir and uid, mount the work dir, make the cgroup (and the network), spawn the kernel."""
        if self.gpu:
            self._devices, self._gpu_env = gpu_devices(self.gpu)
        self.state_dir, self.uid, self._record = self._claim()
        try:
            fs = os.path.join(self.state_dir, "fs")
            os.mkdir(fs, 0o711)
            os.mkdir(os.path.join(self.state_dir, "root"), 0o700)
            _jail.mount("tmpfs", fs, "tmpfs", _jail.MS_NOSUID | _jail.MS_NODEV,
                        f"size={self.limits.work_size + 1024 * 1024},mode=711")
            log = os.path.join(self.state_dir, "log")
            os.mkdir(log, 0o700)
            _jail.mount("tmpfs", log, "tmpfs", _jail.MS_NOSUID | _jail.MS_NODEV | _jail.MS_NOEXEC,
                        f"size={LOG_SIZE},mode=700")
            for sub in ("home", "run"):
                os.mkdir(os.path.join(fs, sub), 0o700)
                os.chown(os.path.join(fs, sub), self.uid, self.uid)
            self._prepare_home(os.path.join(fs, "home"))
            self._cgroup = Cgroup.create(f"{os.getpid()}-{os.path.basename(self.state_dir)}", self.limits)
            self._record["cgroups"] = sorted(set(self._cgroup.dirs.values()))
            _reaper.write_record(self.state_dir, self._record)
            if self._policy.kind != "none":
                self._record["net"] = net_record(self.uid)
                _reaper.write_record(self.state_dir, self._record)  # before anything exists, for the reapers
                self._net = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: net_setup(self._record["net"], self._policy))
            self._files = SandboxFiles(os.path.join(fs, "home"), self.uid, self.uid,
                                       self.limits.max_upload, self.limits.max_download)
            self._files._watcher = lambda path, timeout: Watch(self, template(), path, timeout)
            _live.add(self)
            await self._spawn()
        except BaseException:
            await self._teardown()
            raise

    def _claim(self) -> tuple[str, int, dict]:
        """The state dir, host uid and owner record (a session kernel claims its user's uid instead)."""
        return _claim_state_dir()

    def _prepare_home(self, home: str) -> None:
        """The work dir is the fresh tmpfs dir ``home`` (a session kernel binds its user's own dir there)."""

    def _adjust_spec(self, spec: dict) -> None:
        """Change the jail spec before the kernel starts (a session kernel binds burstlab's own package dirs and
        gives /dev/shm its tmp size)."""

    async def _spawn(self) -> None:
        assert self.state_dir and self.uid and self._cgroup
        run = os.path.join(self.state_dir, "fs", "run")
        _clear_dir(run)
        key = new_key()
        # O_EXCL | O_NOFOLLOW: the sandbox owns this dir, so never write through anything it left there
        fd = os.open(os.path.join(run, "kernel.json"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(connection_info(os.path.join(RUN_DIR, "k"), key), f)
            os.fchown(f.fileno(), self.uid, self.uid)
        spec = jail_spec(uid=self.uid, gid=self.uid, limits=self.limits, network=self._policy.kind != "none",
                         state_dir=self.state_dir, cgroup_procs=self._cgroup.procs_files,
                         devices=self._devices, gpu_env=self._gpu_env, user_env=self._env,
                         netns=self._net["netns_path"] if self._net else None)
        self._adjust_spec(spec)
        pid, exited = await template().spawn(spec, os.path.join(self.state_dir, "log", "kernel.log"))
        client = KernelClient(connection_info(os.path.join(run, "k"), key), self.limits.output + (1 << 20),
                              owner_uid=self.uid)
        self._kernel = _Kernel(pid, exited, client)
        try:
            await client.wait_ready(60, exited)
        except SandboxError as exc:
            tail = self.log(4000).strip()
            raise SandboxError(f"{exc}\n--- kernel log ---\n{tail}" if tail else str(exc)) from None

    async def _kill_kernel(self) -> int | None:
        """SIGKILL everything in the sandbox; returns the kernel's exit status."""
        k, self._kernel = self._kernel, None
        if k is None:
            return None
        if self._cgroup is not None:
            await asyncio.get_running_loop().run_in_executor(None, lambda: self._cgroup.kill_all(spare=k.pid))
        try:
            status = await asyncio.wait_for(asyncio.shield(k.exited), 10)
        except asyncio.TimeoutError:
            status = None
        k.client.close()
        template().forget(k.pid)
        return status

    async def arestart(self) -> None:
        """Kill the kernel and start a fresh one (files in the work dir are kept, variables are not)."""
        async with self._get_lock():
            if self._kernel is None:
                return await self._start_locked()
            await self._kill_kernel()
            self.restarts += 1
            await self._spawn()

    async def _teardown(self) -> None:
        if self._kernel is not None:
            await self._kill_kernel()
        if self._cgroup is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._cgroup.destroy)
            self._cgroup = None
        if self._record and self._record.get("net"):
            await asyncio.get_running_loop().run_in_executor(None, net_teardown, self._record["net"])
            self._net, self._record["net"] = None, None
            if self.state_dir and os.path.isdir(self.state_dir):
                _reaper.write_record(self.state_dir, self._record)
        if self.state_dir:
            _remove_state(self.state_dir)
        _live.discard(self)
        self._files = None

    async def aclose(self, why: str = "") -> None:
        """Close the sandbox. A cell running now (or a snapshot's capture, or a start) is not waited for: every
        process in the sandbox is killed at once and that run ends with a ``SandboxClosed`` error."""
        lock = self._get_lock()
        if lock.locked() and not self._closed and self._closing is None:
            self._closing = why
            k, cg = self._kernel, self._cgroup
            if k is not None and cg is not None:
                await asyncio.get_running_loop().run_in_executor(None, lambda: cg.kill_all(spare=k.pid))
        async with lock:
            if self._closed:
                return
            self._closed = True
            self._closed_why = why
            if self._paused is not None:
                _snapshot.drop(self._paused)
                self._paused = None
            if self.started:
                self._metrics.sample(self)
            if self._meter_id is not None and self.meter is not None:
                self.meter.stop(self._meter_id, detail={"usage": self.usage()})
                self._meter_id = None
            await self._teardown()

    def reconfigure(self, *, timeout: float | None = None, memory: int | str | None = None,
                    pids: int | None = None, cpus: float | None = None) -> None:
        """Change limits of a started sandbox (a pool hands its sandboxes out this way); the cgroup is written only
        when its memory, pids or cpus change."""
        old, self.limits = self.limits, make_limits(self.limits, timeout=timeout, memory=memory, pids=pids, cpus=cpus)
        if self._cgroup is not None and (old.memory, old.pids, old.cpus) != (
                self.limits.memory, self.limits.pids, self.limits.cpus):
            self._cgroup._apply(self.limits)

    def _fork_server(self) -> Template:
        return template()

    # -- running code ---------------------------------------------------------------------------
    async def arun(self, code: str, timeout: float | None = None,
                   on_output: Callable[[Output], None] | None = None) -> Execution:
        """Run one cell; the user's errors and the limits it hits are in ``.error``.

        ``on_output(output)`` is called (on burstlab's loop) with each output as it arrives, for
        streaming; consecutive stream chunks are still merged in the returned Execution."""
        if not isinstance(code, str):
            raise SandboxError(f"run() takes the cell's source as a str, not {type(code).__name__}.")
        timeout = make_limits(timeout=timeout).timeout if timeout is not None else self.limits.timeout
        if self._redactor and on_output is not None:
            shown, redact = on_output, self._redactor.output
            on_output = lambda out: shown(redact(out))  # noqa: E731
        self._busy += 1
        try:
            return self._redactor.execution(await self._run(code, timeout, on_output))
        finally:
            self._busy -= 1
            self.last_active = time.monotonic()

    async def _run(self, code: str, timeout: float, on_output: Callable[[Output], None] | None) -> Execution:
        async with self._get_lock():
            return await self._run_locked(code, timeout, on_output)

    async def _run_locked(self, code: str, timeout: float,
                          on_output: Callable[[Output], None] | None) -> Execution:
        await self._start_locked()
        notice = await self._ensure_kernel()
        pre = [Output(kind="stream", name="stderr", text=notice)] if notice else []
        assert self._kernel is not None and self._cgroup is not None
        k, cg = self._kernel, self._cgroup
        oom0, pids0 = cg.oom_kills(), cg.pids_max_events()
        t0 = time.monotonic()
        msg_id = k.client.send_execute(code)
        col = Collected(limit=self.limits.output + 64 * 1024, on_output=on_output)
        pids_hit = lambda: cg.pids_max_events() > pids0  # noqa: E731
        how = await k.client.collect(msg_id, col, t0 + timeout, k.exited, pids_hit)
        error = col.error
        lost = False
        if how == "abort":
            error, lost = self._pids_error(), True
        elif how == "timeout" and pids_hit():
            error, lost = self._pids_error(), True
        elif how == "timeout":
            await k.client.interrupt()
            how = await k.client.collect(msg_id, col, time.monotonic() + self.limits.grace, k.exited)
            if how == "done":
                error = ExecutionError(
                    "SandboxTimeout",
                    f"The run passed its timeout of {timeout:g} s and was interrupted; the kernel and its state are kept. "
                    "Give more time with run(code, timeout=...) or Sandbox(timeout=...).",
                    col.error.traceback if col.error else (),
                )
            else:
                error = ExecutionError(
                    "SandboxTimeout",
                    f"The run passed its timeout of {timeout:g} s and did not stop within {self.limits.grace:g} s of "
                    "an interrupt, so every process in the sandbox was killed and the kernel restarted: its state "
                    "(variables, imports) is lost; files in the work dir are kept.",
                )
                lost = True
        elif how == "died" and self._closing is not None:  # aclose killed it: end here, start nothing new
            return Execution(outputs=tuple(pre + col.outputs), error=ExecutionError(
                "SandboxClosed", f"The sandbox was closed{self._closing} while this cell ran, so the cell was stopped; "
                "its state is gone. Create a new Sandbox() to go on."), execution_count=col.execution_count,
                duration_s=time.monotonic() - t0)
        elif how == "died":
            status = k.exited.result()
            error = self._death_error(status, oom0, pids0)
            lost = True
        if not lost and cg.pids_max_events() > pids0:
            error = self._pids_error()
            lost = True
        if lost:
            await self._kill_kernel()
            self.restarts += 1
            await self._spawn()
        outputs = pre + col.outputs
        self.output_bytes += sum(len(o.text) + (len(json.dumps(o.data)) if o.data else 0) for o in col.outputs)
        if col.dropped:
            outputs.append(Output(kind="stream", name="stderr", text=marker(self.limits.output, col.dropped)))
        return Execution(outputs=tuple(outputs), error=error, execution_count=col.execution_count,
                         duration_s=time.monotonic() - t0)

    async def _ensure_kernel(self) -> str:
        """(Lock held.) Start the sandbox, or a new kernel if the last one exited; returns the notice to show."""
        await self._start_locked()
        notice, self._notice = self._notice, ""
        k = self._kernel
        if k is not None and not k.exited.done():
            if self._cgroup is None or set(self._cgroup.pids()) - {k.pid}:
                return notice
            # Nothing but the outer process is left: the kernel died, and the fork server's word of it is on
            # its way (under load it can lag the processes' end); wait for it rather than run into a dead kernel.
            try:
                await asyncio.wait_for(asyncio.shield(k.exited), 2)
            except asyncio.TimeoutError:
                pass
        status = k.exited.result() if k is not None and k.exited.done() else None
        await self._kill_kernel()
        self.restarts += 1
        await self._spawn()
        return (f"[burstlab: the sandbox kernel had exited (status {status}) since the last run and was restarted; "
                "its state (variables, imports) is lost]\n")

    def _pids_error(self) -> ExecutionError:
        return ExecutionError(
            "SandboxPidsLimit",
            f"The run hit the sandbox's limit of {self.limits.pids} processes and threads (a fork bomb?), so every "
            "process in the sandbox was killed and the kernel restarted: its state (variables, imports) is lost. "
            "Start fewer processes, or create the sandbox with pids=...",
        )

    def _death_error(self, status: int | None, oom0: int, pids0: int) -> ExecutionError:
        assert self._cgroup is not None
        if self._cgroup.oom_kills() > oom0:
            return ExecutionError(
                "SandboxMemoryLimit",
                f"The kernel ran out of memory: it was killed at the sandbox's limit of {format_size(self.limits.memory)} "
                "and restarted, so its state (variables, imports) is lost. Use less memory, or create the sandbox "
                "with a larger memory=, e.g. Sandbox(memory=\"2GiB\").",
            )
        if self._cgroup.pids_max_events() > pids0:
            return self._pids_error()
        how = f"signal {status - 128}" if status and status > 128 else f"exit status {status}"
        return ExecutionError(
            "SandboxKernelDied",
            f"The kernel died during the run ({how}) and was restarted; its state (variables, imports) is lost.",
        )


__all__ = ["Sandbox", "stop_template", "template"]
