"""A GPU session: a lease, the remote kernel it runs, and the meter interval that bills it."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable

from burstlab import _sync
from burstlab.errors import SessionLostError
from burstlab.wire import Execution, Output

from ._liveness import HostWatch
from .client import RemoteKernel
from .lease import Lease
from .secrets import Redactor


class GpuSession:
    """One remote kernel holding ``lease``'s GPUs. Created by ``Workspace.session()``.

    ``execute``/``push``/``pull`` are async; ``*_sync`` twins run them on burstlab's loop thread.
    """

    def __init__(self, key: str, lease: Lease, on_end: Callable[["GpuSession", str, str], None], *,
                 user: str = "", notebook: str = "", released_elsewhere: Callable[["GpuSession"], None] | None = None,
                 lost_after: float = 10.0):
        self.key = key
        self.id = lease.id
        self.user = user
        self.notebook = notebook
        self.lease = lease
        self.gpu_type = lease.request.type
        self.count = lease.request.count
        self.declared = lease.declared
        self.host = lease.slots[0].host
        self.started = time.time()
        self.last_active = time.monotonic()
        self.state = "running"  # running | stopped | lost
        self.busy = False  # a cell runs through execute_sync
        self.end_reason = ""
        self._ending = False
        self._end_lock = threading.Lock()
        self._ended = threading.Event()  # set once the end is complete (GPUs released, interval closed)
        self.interval_id = ""
        self.prepared = None  # what remote_kernel.prepare found and did (set by the workspace)
        self.redactor = Redactor()  # replaces this session's secrets in what it shows
        self._on_end = on_end
        self._released_elsewhere = released_elsewhere
        self.watch: HostWatch | None = None
        self.kernel: RemoteKernel = _sync.run_sync(self._connect())
        # The host itself: no heartbeat from the kernel for ``lost_after`` s ends the session (see _liveness).
        self.watch = HostWatch(lease.connection, self.host, lost_after, on_lost=lambda why: self._end("lost", why))
        # The lease's primary task finishing means the kernel or its worker is gone. ``lease_settled`` tells a
        # closing workspace that Dask has run this callback (at interpreter exit it must run before the
        # callback executors stop).
        self.lease_settled = threading.Event()
        lease.futures[0].add_done_callback(self._on_lease_future_done)

    async def _connect(self) -> RemoteKernel:
        return RemoteKernel(self.lease.connection, is_alive=self._alive)

    def _alive(self) -> bool:
        return self.lease.ended() is None and (self.watch is None or self.watch.alive())

    @property
    def last_seen_ns(self) -> int | None:
        """Wall-clock ns when the host last answered (where a lost session's meter closes), or None."""
        return self.watch.last_seen_ns if self.watch is not None else None

    @property
    def label(self) -> str:
        return f"{self.gpu_type}{'' if self.count == 1 else f' x{self.count}'}{' (declared)' if self.declared else ''}"

    def _on_lease_future_done(self, _future) -> None:
        try:
            self._lease_done()
        finally:
            self.lease_settled.set()

    def _lease_done(self) -> None:
        if self._ending:
            return
        if self.watch is not None and self.watch.lost:  # the host went away (the watch ends it, too)
            self._end("lost", self.watch.reason)
            return
        ended = self.lease.ended() or {}
        if ended.get("ended") == "scheduler-lost":
            self._end("lost", f"lost the Dask scheduler ({ended.get('detail', '')}); the GPU host stops the kernel "
                              "when it loses the scheduler too")
            return
        if ended.get("ended") == "released":
            # Not our own stop (that sets _ending first): another client (the lab's panel, the REST
            # API) cancelled the lease. Finding out why takes a scheduler call, which must not run on
            # Dask's loop, where this callback runs.
            if self._released_elsewhere is not None:
                threading.Thread(target=self._released_elsewhere, args=(self,), daemon=True).start()
            return
        detail = f" (exit code {ended['returncode']})" if ended.get("returncode") is not None else ""
        if ended.get("returncode") in (-9, 137):
            detail += ": killed, perhaps out of memory"
        self._end("lost", f"the remote kernel died{detail}")

    def _end(self, state: str, reason: str) -> None:
        """End once: the workspace releases the GPUs and closes the meter, then the state flips."""
        with self._end_lock:
            if self._ending:
                return
            self._ending = True
        self.end_reason = reason
        try:
            self._on_end(self, state, reason)
        finally:
            self.state = state
            self._ended.set()

    @property
    def working(self) -> bool:
        """Whether a cell or a variable transfer runs on the kernel now (the idle reaper leaves it be)."""
        return self.busy or self.kernel.in_use()

    def _check(self) -> None:
        if self.state != "running":
            raise SessionLostError(f"The {self.label} session ended ({self.end_reason}); its state is gone.")

    def _redacting(self, on_output: Callable[[Output], Any] | None) -> Callable[[Output], Any] | None:
        if on_output is None:
            return None
        redact = self.redactor.output
        return lambda output: on_output(redact(output))

    async def execute(self, code: str, on_output: Callable[[Output], Any] | None = None) -> Execution:
        self._check()
        self.last_active = time.monotonic()
        try:
            if self.redactor:  # the session holds secrets: nothing it shows carries them
                on_output = self._redacting(on_output)
                return self.redactor.execution(await self.kernel.execute(code, on_output))
            return await self.kernel.execute(code, on_output)
        except SessionLostError:
            self._lease_done()
            await asyncio.to_thread(self._ended.wait, 10)
            raise SessionLostError(f"The {self.label} session ended ({self.end_reason or 'the remote kernel died'}); "
                                   "its state is gone. The next %%gpu cell starts a new one.") from None
        finally:
            self.last_active = time.monotonic()

    def execute_sync(self, code: str, on_output: Callable[[Output], Any] | None = None) -> Execution:
        """Blocking twin of :meth:`execute`. The thread that first calls it (a notebook's cells) runs
        ``code`` with no hand-off to burstlab's loop, its outputs reaching ``on_output`` on this thread;
        other threads go through the loop. Ctrl-C interrupts the remote cell."""
        self._check()
        here = self.kernel.here()
        if here is None:  # another thread made the blocking client: go through the loop
            return _sync.run_sync(self.execute(code, on_output))
        self.last_active = time.monotonic()
        self.busy = True
        try:
            if self.redactor:  # the session holds secrets: nothing it shows carries them
                return self.redactor.execution(here.execute(code, self._redacting(on_output)))
            return here.execute(code, on_output)
        except SessionLostError:
            self._lease_done()
            self._ended.wait(10)  # the lease's own callback may be ending it on Dask's thread right now
            raise SessionLostError(f"The {self.label} session ended ({self.end_reason or 'the remote kernel died'}); "
                                   "its state is gone. The next %%gpu cell starts a new one.") from None
        finally:
            self.busy = False
            self.last_active = time.monotonic()

    async def interrupt(self) -> None:
        await self.kernel.interrupt()

    async def push(self, values: dict[str, Any]) -> None:
        self._check()
        self.last_active = time.monotonic()
        await self.kernel.push(values)

    async def pull(self, names: list[str]) -> dict[str, Any]:
        self._check()
        self.last_active = time.monotonic()
        return await self.kernel.pull(names)

    def push_sync(self, values: dict[str, Any]) -> None:
        _sync.run_sync(self.push(values))

    def pull_sync(self, names: list[str]) -> dict[str, Any]:
        return _sync.run_sync(self.pull(names))

    def stop(self, reason: str = "stopped") -> None:
        """Release the GPUs and stop the kernel (idempotent)."""
        self._end("stopped", reason)

    def kernel_replaced(self, connection: dict, pid: int, warm: bool) -> None:
        """A kernel provisioner restarted the lease's kernel (same lease, a fresh kernel: ``_held.renew``):
        note its connection and watch its heartbeat instead of the old one's."""
        self.lease.connection, self.lease.kernel_pid, self.lease.warm = connection, pid, warm
        old = self.watch
        if old is not None and not old.lost:
            self.watch = HostWatch(connection, self.host, old.lost_after, on_lost=lambda why: self._end("lost", why))
            old.close()

    def close_transport(self) -> None:
        if self.watch is not None:
            self.watch.close()
        _sync.submit(self.kernel.aclose())


__all__ = ["GpuSession"]
