"""The workspace's sandboxes: one warm :class:`~burstlab.sandbox.SandboxPool`, and the registry of every sandbox it
holds, each under one id.

Every front door that makes a sandbox (``Workspace.sandbox()``, ``%%sandbox``, ``POST sandboxes``, MCP's local
backend) takes it here. What the pool serves (no network, the default sizes of the work dir, /tmp, output and
files) comes from the pool: a started, warmed sandbox with the caller's timeout, memory, pids and cpus applied,
so create -> first result is one round trip. Anything else (network, other sizes, a GPU), or a request
while the pool has none ready (the first one: the pool starts filling then), is a new sandbox, started here.
A sandbox made directly (``burstlab.Sandbox()``) is adopted as it starts (``adopt``): when the pool serves its
settings it gets a ready sandbox's running kernel and jail (``SandboxPool.take_into``), else it starts its own.
Either way it is metered into the workspace's ledger as its user and notebook, registered under an id
(``sb-`` and 16 hex digits: the one REST, MCP, the panel and ``Workspace.sandboxes()`` show), and closed with
the workspace if its holder has not closed it.

Only the sandbox package's public API is used (``Sandbox``, ``SandboxPool``).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
import weakref
from typing import Any

from burstlab import _sync
from burstlab.wire import SandboxRecord

# Sandbox settings fixed when a sandbox starts: a request naming one of these gets a sandbox of its own.
CLOSE_DEADLINE_S = 5.0  # how long closing the workspace waits for one sandbox's close

FIXED_AT_START = ("output", "work_size", "tmp_size", "max_upload", "max_download", "gpu", "limits",
                  "sandbox_idle_timeout", "env", "secrets")  # env/secrets: a warm kernel never has the caller's


class Sandboxes:
    """The sandboxes of one workspace: ``acquire()`` (async, on burstlab's loop) and ``close()``."""

    def __init__(self, meter, pool_size: int) -> None:
        self.meter = meter
        self.pool_size = pool_size
        self._pool = None
        # The registry: every sandbox taken or adopted, by its one id (the one REST, MCP and the panel show).
        self._by_id: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._ids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # sandbox -> (id, created)
        self._lock = threading.Lock()
        self._closed = False

    def pool(self):
        """The warm pool (made on first use, filling in the background), or None if the size is 0."""
        from burstlab.sandbox import SandboxPool

        with self._lock:
            if self._pool is None and self.pool_size > 0 and not self._closed:
                self._pool = SandboxPool(self.pool_size)
            return self._pool

    def prestart(self) -> None:
        """Start filling the pool now (returns at once), so that the first sandbox is already warm."""
        pool = self.pool()
        if pool is not None:
            _sync.submit(pool.astart(wait=False))

    @staticmethod
    def check(*, network: Any = False, **settings: Any):
        """The limits a sandbox with these settings would have, or the SandboxError naming the bad one (nothing
        starts: the caller can refuse a request as its own mistake before reserving anything)."""
        from burstlab.sandbox import Sandbox

        return Sandbox(network=network, **{k: v for k, v in settings.items() if v is not None}).limits

    async def acquire(self, *, timeout: float | None = None, memory: int | str | None = None,
                      network: Any = False, pids: int | None = None, cpus: float | None = None,
                      user: str = "", notebook: str = "", **fixed: Any):
        """A started sandbox for ``user``/``notebook``, metered; the caller owns it (``close()`` it).
        Runs on burstlab's loop (``burstlab._sync``), where sandboxes live."""
        from burstlab.errors import SandboxError
        from burstlab.sandbox import Sandbox

        if self._closed:
            raise SandboxError("This workspace is closed; make a new one with burstlab.Workspace().")
        unknown = set(fixed) - set(FIXED_AT_START)
        if unknown:
            raise SandboxError(f"Unknown sandbox setting(s): {', '.join(sorted(unknown))}.")
        fixed = {k: v for k, v in fixed.items() if v is not None}
        self.check(network=network, timeout=timeout, memory=memory, pids=pids, cpus=cpus, **fixed)  # before anything
        pool = None if network or fixed else self.pool()
        if pool is not None and pool.ready > 0:  # a started one is waiting: no await until it is ours
            sb = await pool.aacquire(timeout=timeout, memory=memory, pids=pids, cpus=cpus, meter=self.meter,
                                     user=user, notebook=notebook)
        else:  # a new one; the pool (empty or filling) is never waited on, so its failures cannot hang a caller
            if pool is not None:
                self.prestart()
            kwargs: dict[str, Any] = {k: v for k, v in (("timeout", timeout), ("memory", memory), ("pids", pids),
                                                        ("cpus", cpus)) if v is not None}
            sb = Sandbox(network=network, meter=self.meter, user=user, notebook=notebook, **kwargs, **fixed)
            try:
                await sb.astart()
            except BaseException:
                await sb.aclose()
                raise
        self._register(sb)
        return sb

    async def arestore(self, snapshot_id: str, *, user: str, notebook: str):
        """A started sandbox in the state of ``user``'s snapshot, metered; the caller owns it (on burstlab's loop)."""
        from burstlab.errors import SandboxError
        from burstlab.sandbox import Sandbox

        if self._closed:
            raise SandboxError("This workspace is closed; make a new one with burstlab.Workspace().")
        sb = await Sandbox.arestore(snapshot_id, user=user, meter=self.meter, notebook=notebook)
        self._register(sb)
        return sb

    @staticmethod
    def snapshots(user: str) -> list:
        from burstlab.sandbox import list_snapshots

        return list_snapshots(user)

    @staticmethod
    def delete_snapshot(snapshot_id: str, user: str) -> None:
        from burstlab.sandbox import delete_snapshot

        delete_snapshot(snapshot_id, user=user)

    def adopt(self, sb) -> bool:
        """Count a sandbox made elsewhere (``burstlab.Sandbox()``), as it starts, as held: budgets and ``close()``
        reach it. When the pool serves its settings it gets a warm sandbox's kernel and jail now (True: it starts
        as one taken from the pool would); when none is ready, the pool starts filling for the next. On burstlab's
        loop (the sandbox's start)."""
        self._register(sb)
        pool = self.pool()
        if pool is None or not pool.serves(sb):
            return False
        if pool.take_into(sb):
            return True
        asyncio.ensure_future(pool.astart(wait=False))
        return False

    def _register(self, sb) -> str:
        with self._lock:
            if sb not in self._ids:
                sandbox_id = "sb-" + secrets.token_hex(8)
                self._ids[sb] = (sandbox_id, time.time())
                self._by_id[sandbox_id] = sb
            return self._ids[sb][0]

    def id_of(self, sb) -> str:
        """``sb``'s id in this workspace (registered now if it was not)."""
        return self._register(sb)

    def get(self, sandbox_id: str):
        """The running sandbox of that id, or None."""
        sb = self._by_id.get(sandbox_id)
        return sb if sb is not None and sb.started else None

    def held(self) -> list:
        """The sandboxes taken and not closed yet (the budget watcher closes them at a limit)."""
        return [sb for sb in list(self._by_id.values()) if sb.started]

    def record_of(self, sb, state: str = "running", usage: dict | None = None) -> SandboxRecord:
        """``sb``'s wire record under its id (registered now if it was not)."""
        sandbox_id = self._register(sb)
        return record(sb, sandbox_id, self._ids[sb][1], state, usage)

    def records(self, user: str | None = None) -> list[SandboxRecord]:
        """The running sandboxes (``user``'s, or everyone's), oldest first."""
        with self._lock:
            entries = [(sb, *self._ids.get(sb, ("", 0.0))) for sb in list(self._by_id.values())]
        return sorted((record(sb, sid, created) for sb, sid, created in entries
                       if sb.started and (user is None or sb.user == user)), key=lambda r: r.created)

    def close(self) -> None:
        """Close the pool and every sandbox still held (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pool, held = self._pool, list(self._by_id.values())

        async def close_all() -> None:
            # A sandbox whose close waits on a run that never ends must not hold the workspace's close: after
            # CLOSE_DEADLINE_S it is left to its fork server, which ends every sandbox when this process exits.
            await asyncio.gather(*(asyncio.wait_for(sb.aclose(), CLOSE_DEADLINE_S) for sb in held),
                                 return_exceptions=True)
            if pool is not None:
                await asyncio.gather(asyncio.wait_for(pool.aclose(), CLOSE_DEADLINE_S), return_exceptions=True)

        if held or pool is not None:
            _sync.run_sync(close_all())


def record(sb, sandbox_id: str, created: float, state: str = "running", usage: dict | None = None) -> SandboxRecord:
    """The wire record of a sandbox (``GET sandboxes``, ``Workspace.sandboxes()``, the panel); ``usage`` as
    ``Sandbox.usage()`` gives it (read now when None)."""
    if usage is None:
        try:
            usage = sb.usage()
        except OSError:  # the cgroup went away under us (closing)
            usage = {}
    lim = sb.limits
    return SandboxRecord(
        id=sandbox_id, user=sb.user, notebook=sb.notebook, state=state, created=created, network=sb.network,
        limits={"timeout": lim.timeout, "memory": lim.memory, "pids": lim.pids, "cpus": lim.cpus,
                "output": lim.output, "work_size": lim.work_size, "tmp_size": lim.tmp_size,
                "max_upload": lim.max_upload, "max_download": lim.max_download,
                "lifetime": sb.lifetime, "expires_in": sb.expires_in, "lifetime_action": sb.lifetime_action},
        usage={"cpu_s": float(usage.get("cpu_s", 0.0)), "wall_s": float(usage.get("wall_s", 0.0)),
               "memory_peak": int(usage.get("memory_peak_bytes", 0))},
    )


__all__ = ["FIXED_AT_START", "Sandboxes", "record"]
