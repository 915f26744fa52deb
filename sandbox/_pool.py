"""``SandboxPool``: started sandboxes kept ready, so that create -> first result is one round trip.

``acquire()`` hands out a ready sandbox (re-applying the caller's timeout/memory/pids/cpus limits,
which are cgroup and supervisor settings and can change on a live sandbox) and starts a
replacement in the background. Network access and the sizes of /tmp and the work dir are fixed
when a sandbox starts, so a pool serves one choice of those. ``prepare`` (a coroutine function) readies each
sandbox before it waits in the pool (a template's pool restores the template's state there, so that taking one
is only the hand-out). The replacement for a sandbox handed out starts ``REFILL_DELAY`` seconds later (at once
when the pool is empty), so that starting it does not compete with the caller's first run for the CPU.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from burstlab._sync import run_sync, submit
from burstlab.errors import SandboxError

from . import _reaper, _sandbox
from ._client import Collected
from ._sandbox import DEFAULT_IDLE_TIMEOUT, Sandbox
from ._watch import Watch

WARM_TIMEOUT = 60.0  # seconds a new pool sandbox's warm-up run may take (a loaded machine)
REFILL_DELAY = 0.2  # seconds: a first run from the pool takes ~10 ms; starting the next sandbox meanwhile doubled it


class SandboxPool:
    """``SandboxPool(size=4, network=False)``; ``pool.acquire(timeout=30, memory="512MiB")``.

    ``sandbox_idle_timeout``: each sandbox handed out is closed after running nothing for this many
    seconds (the ones waiting in the pool are not)."""

    def __init__(self, size: int = 4, *, network: Any = False,
                 sandbox_idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
                 prepare: Callable[[Sandbox], Awaitable[Any]] | None = None, **sandbox_kwargs: Any) -> None:
        if not isinstance(size, int) or size < 1:
            raise SandboxError(f"size={size!r}: a pool holds at least 1 sandbox, e.g. SandboxPool(size=4).")
        # validated now, with the same rules as a Sandbox's (an error here, not in a background task)
        probe = Sandbox(network=network, sandbox_idle_timeout=sandbox_idle_timeout, meter=None, **sandbox_kwargs)
        self.size = size
        self.network = probe.network
        self._limits, self._policy = probe.limits, probe._policy  # what its sandboxes are started with
        self.idle_timeout = sandbox_idle_timeout
        self._kwargs = sandbox_kwargs
        self._prepare = prepare
        self._ready: asyncio.Queue | None = None
        self._filling: set[asyncio.Task] = set()
        self._deferred: list[asyncio.TimerHandle] = []  # refills to start after REFILL_DELAY
        self._closed = False

    # -- sync twins ---------------------------------------------------------------------------
    def start(self, wait: bool = True) -> "SandboxPool":
        run_sync(self.astart(wait))
        return self

    def acquire(self, **kwargs: Any) -> Sandbox:
        return run_sync(self.aacquire(**kwargs))

    def close(self) -> None:
        run_sync(self.aclose())

    def __enter__(self) -> "SandboxPool":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "SandboxPool":
        return await self.astart()

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()

    @property
    def ready(self) -> int:
        return self._ready.qsize() if self._ready is not None else 0

    # -- async core ---------------------------------------------------------------------------
    async def astart(self, wait: bool = True) -> "SandboxPool":
        if self._ready is None:
            await asyncio.get_running_loop().run_in_executor(None, _reaper.reap_once)
            self._ready = asyncio.Queue()
            for _ in range(self.size):
                self._refill()
        if wait:  # refills still waiting out REFILL_DELAY start now: the caller waits for a full pool
            for handle in list(self._deferred):
                handle.cancel()
                self._deferred.remove(handle)
                if not self._closed:
                    self._refill()
            await asyncio.gather(*list(self._filling), return_exceptions=True)
        return self

    def _refill(self) -> None:
        task = asyncio.ensure_future(self._make())
        self._filling.add(task)
        task.add_done_callback(self._filling.discard)

    async def _make(self) -> None:
        sb = Sandbox(network=self.network, sandbox_idle_timeout=None, meter=None, **self._kwargs)  # metered when taken
        try:
            await sb.astart()
            if self._prepare is not None:
                await self._prepare(sb)
            await _warm(sb)
        except BaseException:
            await sb.aclose()
            raise
        if self._closed or self._ready is None:
            await sb.aclose()
        else:
            self._ready.put_nowait(sb)

    async def aacquire(self, *, timeout: float | None = None, memory: int | str | None = None,
                       pids: int | None = None, cpus: float | None = None, meter: Any = None,
                       user: str = "", notebook: str = "") -> Sandbox:
        """A started sandbox with these limits; the caller owns it (close it when done)."""
        if self._closed:
            raise SandboxError("This pool is closed; create a new SandboxPool().")
        await self.astart(wait=False)
        assert self._ready is not None
        if self._ready.empty():  # none ready: what is deferred starts now, and one more if none is filling
            while self._deferred:
                self._deferred.pop().cancel()
                self._refill()
            if not self._filling:
                self._refill()
        sb: Sandbox = await self._ready.get()
        self._refill_later()
        sb.reconfigure(timeout=timeout, memory=memory, pids=pids, cpus=cpus)
        if self.idle_timeout is not None:
            sb.idle_timeout, sb.last_active = self.idle_timeout, time.monotonic()
            _reaper.watch_idle(sb)
        if meter is not None:
            sb.meter, sb.user, sb.notebook = meter, user or sb.user, notebook
            sb._meter_id = meter.start(
                kind="sandbox", user=sb.user, notebook=notebook, resource="CPU",
                quantity=max(1, round(sb.limits.cpus)),
                detail={"sandbox": sb.uid, "memory": sb.limits.memory, "network": sb.network, "pooled": True},
            )
        return sb

    def _refill_later(self) -> None:
        """A sandbox was handed out: its replacement starts REFILL_DELAY seconds from now."""
        handle: list[asyncio.TimerHandle] = []

        def refill_later() -> None:
            self._deferred.remove(handle[0])
            if not self._closed:
                self._refill()

        handle.append(asyncio.get_running_loop().call_later(REFILL_DELAY, refill_later))
        self._deferred.append(handle[0])

    def serves(self, sb: Sandbox) -> bool:
        """Whether this pool's sandboxes are what ``sb`` (a plain Sandbox, not started) would start as: the same
        network policy and everything fixed at start (sizes, pids, open files, no GPU, no preparation); only the
        timeout, memory and cpus, which change on a live sandbox, may differ."""
        return (type(sb) is Sandbox and self._prepare is None and not self._kwargs.get("gpu") and not sb.gpu
                and not sb.env_names  # a warm kernel was started without the caller's env= and secrets=
                and sb._policy == self._policy and not self._closed
                and sb.limits.replace(timeout=self._limits.timeout, memory=self._limits.memory,
                                      cpus=self._limits.cpus) == self._limits)

    def take_into(self, sb: Sandbox) -> bool:
        """Give ``sb`` (served, see ``serves``; not started) a ready sandbox's running kernel, jail and work dir, at
        once (no await: called from ``sb``'s start on burstlab's loop); False if none is ready. ``sb`` keeps its own
        limits (applied now), settings and metering; the pool refills as after ``acquire``."""
        if self._ready is None or self._ready.empty() or not self.serves(sb):
            return False
        warm: Sandbox = self._ready.get_nowait()
        self._refill_later()
        # The started state moves over; ``warm`` is left an empty, closed shell (nothing of it is torn down).
        for name in ("state_dir", "uid", "_record", "_cgroup", "_net", "_files", "_kernel", "_devices", "_gpu_env"):
            setattr(sb, name, getattr(warm, name))
            setattr(warm, name, None if name not in ("_devices", "_gpu_env") else type(getattr(warm, name))())
        warm._closed = True
        if warm._minder is not None:
            warm._minder.cancel()
        _sandbox._live.discard(warm)
        _sandbox._live.add(sb)
        assert sb._files is not None
        sb._files._watcher = lambda path, timeout: Watch(sb, _sandbox.template(), path, timeout)
        if (sb.limits.memory, sb.limits.cpus) != (warm.limits.memory, warm.limits.cpus):
            sb._cgroup._apply(sb.limits)  # its own memory and cpus (its timeout is the supervisor's)
        return True

    async def aclose(self) -> None:
        self._closed = True
        while self._deferred:
            self._deferred.pop().cancel()
        for task in list(self._filling):
            await asyncio.gather(task, return_exceptions=True)
        if self._ready is not None:
            while not self._ready.empty():
                await self._ready.get_nowait().aclose()


async def _warm(sb: Sandbox) -> None:
    """Run one cell that warms the kernel's first-run paths and leaves no trace: not in its history, so whoever
    takes the sandbox starts at In [1], as in a sandbox of its own."""
    k = sb._kernel
    assert k is not None
    msg_id = k.client.send_execute("None", store_history=False)
    how = await k.client.collect(msg_id, Collected(sb.limits.output), time.monotonic() + WARM_TIMEOUT, k.exited)
    if how != "done":
        raise SandboxError(f"A pool's new sandbox did not finish its warm-up run ({how}); see its log:\n{sb.log(4000)}")


def prestart(pool: SandboxPool) -> None:
    """Start filling ``pool`` in the background (returns at once)."""
    submit(pool.astart(wait=False))


__all__ = ["SandboxPool", "prestart"]
