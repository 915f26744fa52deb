"""What agents build on a sandbox, as methods of :class:`~burstlab.sandbox.Sandbox` (a mixin, to keep
``_sandbox.py`` about the jail's life): commands (``exec``, ``_exec.py``), lifetimes and live metrics
(``_life.py``), snapshots, restores, forks, pause and resume (``_snapshot.py``)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from typing import Any, Callable

from burstlab._sync import run_sync
from burstlab.errors import SandboxError
from burstlab.wire import ExecResult, Output

from . import _snapshot
from ._exec import make_argv, run_command
from ._limits import make_limits
from ._snapshot import Snapshot


def _check_seconds(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise SandboxError(f"{what}={value!r} must be a positive number of seconds, e.g. 3600.")
    return float(value)


class AgentFeatures:
    """Mixed into Sandbox: uses its lock, limits, state and kernel."""

    def metrics(self) -> dict:
        """Live metrics: ``{"interval_s", "samples": [{"t", "cpu_s", "memory_bytes", "pids", "output_bytes"}]}``,
        sampled from the sandbox's cgroup every ``interval_s`` while it runs (the last ten minutes at most; ``t``
        is the wall-clock time; a started sandbox adds a sample taken now)."""
        if self.started:
            self._metrics.sample(self)
        return self._metrics.series()

    def set_lifetime(self, seconds: float | None) -> None:
        """The sandbox closes ``seconds`` from now (``None``: no lifetime); ``lifetime`` is then ``seconds``,
        counted from now (from the start for ``Sandbox(lifetime=...)``). Its owner's next call after the end
        says it reached its lifetime."""
        if seconds is None:
            self.lifetime = self._deadline = None
            return
        seconds = _check_seconds(seconds, "set_lifetime(seconds)")
        self.lifetime = seconds
        self._deadline = time.monotonic() + seconds if self._started_at else None

    @property
    def expires_in(self) -> float | None:
        """Seconds until the sandbox reaches its lifetime (``None``: no lifetime)."""
        if self.lifetime is None:
            return None
        if self._deadline is None:
            return self.lifetime
        return max(0.0, self._deadline - time.monotonic())


    # -- snapshots (sandbox/_snapshot.py) ---------------------------------------------------------
    def snapshot(self, mode: str | None = None) -> "Snapshot":
        """Save this sandbox's state. Without ``mode``: a whole-process (CRIU) snapshot, or a SandboxError saying
        why CRIU cannot run here; ``mode="namespace"``: the kernel's picklable variables (the others are named in
        ``.not_captured``), the work dir and the limits, under ``$BURSTLAB_HOME/snapshots/<user>/``."""
        return run_sync(self.asnapshot(mode))

    async def asnapshot(self, mode: str | None = None) -> "Snapshot":
        return await _snapshot.asnapshot(self, mode)

    def pause(self) -> None:
        """Free this sandbox's memory and CPU: a namespace snapshot, then every process and its cgroup stop. The next
        use (run, exec, files, start, resume) brings it back in that state, as the same object; variables that
        cannot be pickled are lost (``paused_snapshot.not_captured`` names them)."""
        run_sync(self.apause())

    async def apause(self) -> None:
        await _snapshot.apause(self)

    async def _idle_pause(self, why: str) -> None:
        """The idle reaper's pause; a pause that fails (a snapshot past its size limit) closes the sandbox instead."""
        try:
            await self.apause()
        except Exception as exc:  # noqa: BLE001 - said to the owner through the close reason
            await self.aclose(why=f"{why[:-1]}; pausing it failed: {exc})")

    def resume(self) -> None:
        run_sync(self.astart())

    @property
    def paused(self) -> bool:
        return self._paused is not None and not self._closed

    @property
    def paused_snapshot(self) -> "Snapshot | None":
        return self._paused

    @classmethod
    def restore(cls, snap: "Snapshot | str", *, user: str | None = None, pool: Any = None,
                **kwargs: Any) -> "Sandbox":
        """A new, started sandbox in ``snap``'s state (a Snapshot, or the id of one of ``user``'s); taken from
        ``pool`` (a SandboxPool) when it serves the snapshot's network and sizes."""
        return run_sync(cls.arestore(snap, user=user, pool=pool, **kwargs))

    @classmethod
    async def arestore(cls, snap: "Snapshot | str", *, user: str | None = None, pool: Any = None,
                       **kwargs: Any) -> "Sandbox":
        return await _snapshot.arestore(cls, snap, user, pool, **kwargs)

    def fork(self, n: int, mode: str | None = "namespace", pool: Any = None) -> "list[Sandbox]":
        """``n`` new sandboxes, each in this one's state (a snapshot restored ``n`` times, then deleted)."""
        return run_sync(self.afork(n, mode, pool))

    async def afork(self, n: int, mode: str | None = "namespace", pool: Any = None) -> "list[Sandbox]":
        return await _snapshot.afork(self, n, mode, pool)

    async def awatch(self, path: str, on_event: Callable[[dict], None], *, timeout: float | None = None,
                     stop: "asyncio.Event | None" = None) -> ExecResult:
        """Watch ``path`` of the work dir (``files.watch``'s events, as a callback on burstlab's loop; the first is
        ``{"event": "ready", ...}`` once the watch is in place) until ``stop`` is set or ``timeout`` seconds pass.
        Returns the watcher's ExecResult: its ``stderr`` says why a watch did not start."""
        from ._watch import astream

        return await astream(self, self._fork_server(), path, timeout, on_event, stop or asyncio.Event())

    # -- commands ---------------------------------------------------------------------------------
    def exec(self, cmd: "list[str] | str", *, shell: bool = False, timeout: float | None = None,
             on_output: Callable[[Output], None] | None = None, input: bytes | None = None) -> ExecResult:
        """Run a command in this sandbox's jail (same uid, namespaces, cgroup limits, seccomp filter, work dir
        and network policy as its kernel): ``exec(["ls", "-la"])`` or ``exec("pip list", shell=True)``.
        Returns an :class:`ExecResult` (``exit_code``, ``stdout``, ``stderr``, ``duration_s``); at ``timeout``
        (default: the sandbox's) the command is killed and ``error`` says so. ``on_output(Output)`` streams."""
        return run_sync(self.aexec(cmd, shell=shell, timeout=timeout, on_output=on_output, input=input))

    async def aexec(self, cmd: "list[str] | str", *, shell: bool = False, timeout: float | None = None,
                    on_output: Callable[[Output], None] | None = None, input: bytes | None = None,
                    stdin_path: str | None = None) -> ExecResult:
        """``input``: bytes for the command's stdin (kept in a root-only file meanwhile); ``stdin_path`` (internal):
        a host file the supervisor trusts, given as stdin without a copy."""
        argv = make_argv(cmd, shell)
        timeout = make_limits(timeout=timeout).timeout if timeout is not None else self.limits.timeout
        if input is not None and not isinstance(input, (bytes, bytearray)):
            raise SandboxError(f"exec(input=...) takes bytes, not {type(input).__name__}.")
        self._busy += 1
        tmp = None
        try:
            if input is not None:
                await self.astart()
                assert self.state_dir
                os.makedirs(os.path.join(self.state_dir, "exec"), mode=0o700, exist_ok=True)
                tmp = os.path.join(self.state_dir, "exec", f"in-{time.monotonic_ns()}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(input)
                stdin_path = tmp
            redactor = getattr(self, "_redactor", None)  # a command can read the kernel's environment (/proc)
            if redactor and on_output is not None:
                shown = on_output
                on_output = lambda out: shown(redactor.output(out))  # noqa: E731
            result = await run_command(self, self._fork_server(), argv, timeout, on_output, stdin_path)
            if redactor:  # redacted as a run's output is
                result = dataclasses.replace(result, stdout=redactor.redact(result.stdout),
                                             stderr=redactor.redact(result.stderr))
            return result
        finally:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
            self._busy -= 1
            self.last_active = time.monotonic()


__all__ = ["AgentFeatures"]
