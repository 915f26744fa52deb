"""The Workspace: one per notebook process (or per server), owning everything a user holds.

It owns the Dask client (an embedded cluster on this machine by default, or an existing scheduler),
the GPU sessions, and the meter and ledger. The magics and the Python API are thin over it.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from typing import Any

from burstlab.billing import Meter, RateCard, open_ledger
from burstlab.config import BurstLab
from burstlab.errors import BurstlabError, GpuSpecError
from burstlab.gpus import discover, parse_gpu_spec
from burstlab.wire import GpuInventoryEntry, GpuSpec, UsageRecord


def default_notebook() -> str:
    """What usage is attributed to: the notebook's path when Jupyter tells us, else this process."""
    return os.environ.get("JPY_SESSION_NAME") or os.environ.get("BURSTLAB_NOTEBOOK") or f"pid-{os.getpid()}"


class Workspace:
    """GPU sessions, the Dask client that places them, and the ledger that bills them."""

    def __init__(self, config=None, notebook: str | None = None, **settings: Any):
        self.config = BurstLab(config=config, **settings)
        self.notebook = notebook or default_notebook()
        self.user = self.config.user
        self.ledger = open_ledger(self.config.ledger_url, self.config.home)
        self.ledger.recover()
        self.meter = Meter(self.ledger, RateCard.from_config(self.config.rates), self.config.heartbeat_interval)
        self.sessions: dict[str, Any] = {}
        self.ended: dict[str, str] = {}  # session key -> why it ended, shown by the next cell for that key
        self._lock = threading.RLock()
        self._client = None
        self._cluster = None
        self._closed = False
        self._reaper: threading.Thread | None = None
        self._wake = threading.Event()
        atexit.register(self.close)

    # -- the Dask side --------------------------------------------------------------------------

    @property
    def client(self):
        """The Dask client, connecting (or starting the embedded cluster) on first use."""
        with self._lock:
            if self._closed:
                raise BurstlabError("This workspace is closed; make a new one with burstlab.Workspace().")
            if self._client is None:
                from distributed import Client

                from burstlab.remote_kernel.cluster import start_embedded
                from burstlab.remote_kernel.pool import KernelPoolPlugin

                if self.config.scheduler:
                    try:
                        self._client = Client(self.config.scheduler, timeout="10s", set_as_default=False)
                    except OSError as exc:
                        raise BurstlabError(
                            f"Cannot reach the Dask scheduler at {self.config.scheduler} ({exc}). Check the address "
                            "in BURSTLAB_SCHEDULER / c.BurstLab.scheduler, or unset it to use the embedded cluster."
                        ) from exc
                else:
                    self._cluster = start_embedded(
                        discover(self.config.declared_gpus), self.config.worker_threads,
                        idle_timeout=self.config.worker_idle_timeout, interval=self.config.adapt_interval,
                    )
                    self._client = Client(self._cluster, set_as_default=False)
                if self.config.kernel_pool_size > 0:
                    self._client.register_plugin(KernelPoolPlugin(self.config.kernel_pool_size))
            return self._client

    def hosts(self) -> list[GpuInventoryEntry]:
        """GPU inventory: type, host, count, free, and whether found through NVML or declared."""
        from burstlab.remote_kernel.cluster import inventory, slots

        return inventory(slots(self.client))

    # -- sessions -------------------------------------------------------------------------------

    def session(self, spec: str | list[str] | GpuSpec, wait: float = 0.0):
        """This notebook's session for ``spec``: the running one, or a new one holding fresh GPUs."""
        from burstlab.remote_kernel.lease import acquire
        from burstlab.remote_kernel.session import GpuSession

        parsed = parse_gpu_spec(spec)
        key = str(parsed)
        with self._lock:
            existing = self.sessions.get(key)
            if existing is not None and existing.state == "running":
                return existing
        lease = acquire(self.client, parsed, wait=wait, pool_size=self.config.kernel_pool_size)
        try:
            session = GpuSession(key, lease, self._session_ended)
        except BaseException:
            lease.release(self.client)
            raise
        session.interval_id = self.meter.start(
            kind="session", user=self.user, notebook=self.notebook, resource=session.gpu_type,
            quantity=session.count, declared=session.declared,
            detail={"host": session.host, "lease": lease.id, "spec": key},
        )
        with self._lock:
            self.sessions[key] = session
            self.ended.pop(key, None)
        self._ensure_reaper()
        return session

    def find(self, which: str | None = None):
        """The running session a user names by spec or GPU type; the only one if ``which`` is None."""
        running = [s for s in self.sessions.values() if s.state == "running"]
        if which is None:
            if len(running) == 1:
                return running[0]
            if not running:
                raise BurstlabError("No GPU session is running. Start one with a %%gpu TYPE cell.")
            raise BurstlabError(f"Several GPU sessions are running ({', '.join(s.key for s in running)}); name one.")
        try:
            key = str(parse_gpu_spec(which))
        except GpuSpecError:
            key = which
        for s in running:
            if s.key == key or s.gpu_type == key:
                return s
        raise BurstlabError(f"No running GPU session for {which!r}. Running: {', '.join(s.key for s in running) or 'none'}.")

    def stop(self, which: str = "all") -> list[str]:
        """Release sessions: ``"all"``, a spec, or a GPU type. Returns the keys stopped."""
        with self._lock:
            if which in ("all", "", None):
                targets = [s for s in self.sessions.values() if s.state == "running"]
            else:
                targets = [self.find(which)]
        for s in targets:
            s.stop("stopped by the user")
        return [s.key for s in targets]

    def _session_ended(self, session, state: str, reason: str) -> None:
        """Called once when a session stops or is lost: release GPUs, close the meter interval."""
        session.lease.release(self._client)
        if session.interval_id:
            self.meter.stop(session.interval_id)
        if state == "stopped" and not self._closed:
            # A user's or the idle reaper's stop (never the lease's own done-callback, which runs on
            # Dask's loop): return once the GPUs are free for the next session.
            session.lease.wait_released(self._client)
        session.close_transport()
        with self._lock:
            if self.sessions.get(session.key) is session:
                del self.sessions[session.key]
            if state == "lost" or reason.startswith("released after"):
                self.ended[session.key] = reason

    def _ensure_reaper(self) -> None:
        with self._lock:
            if self._reaper is None:
                self._reaper = threading.Thread(target=self._reap, name="burstlab-idle", daemon=True)
                self._reaper.start()

    def _reap(self) -> None:
        while not self._closed:
            timeout = self.config.idle_timeout
            self._wake.wait(min(5.0, max(0.1, timeout / 4)) if timeout > 0 else 5.0)
            self._wake.clear()
            if timeout <= 0:
                continue
            now = time.monotonic()
            for s in list(self.sessions.values()):
                if s.state == "running" and not s.kernel._lock.locked() and now - s.last_active >= timeout:
                    s.stop(f"released after {timeout:g} s idle")

    def set_idle_timeout(self, seconds: float) -> None:
        self.config.idle_timeout = float(seconds)
        self._wake.set()

    # -- money ----------------------------------------------------------------------------------

    def usage(self, **filters: Any) -> list[UsageRecord]:
        return self.ledger.usage(now_ns=self.meter.clock.now_ns(), **filters)

    def session_record(self, session) -> UsageRecord | None:
        return self.meter.record(session.interval_id)

    # -- shutdown -------------------------------------------------------------------------------

    def close(self) -> None:
        """Release every session, close every interval, stop the embedded cluster (idempotent)."""
        with self._lock:
            if self._closed:
                return
            sessions = list(self.sessions.values())
        for s in sessions:
            s.stop("workspace closed")
        with self._lock:
            self._closed = True
        self._wake.set()
        self.meter.close()
        if self._client is not None:
            try:
                self._client.close(timeout=5)
            except Exception:
                pass
        if self._cluster is not None:
            try:
                self._cluster.close(timeout=10)
            except Exception:
                pass
        self.ledger.close()
        atexit.unregister(self.close)


_workspace: Workspace | None = None
_workspace_lock = threading.Lock()


def get_workspace(config=None) -> Workspace:
    """The process's workspace, created on first use (with ``config`` if given)."""
    global _workspace
    with _workspace_lock:
        if _workspace is None or _workspace._closed:
            _workspace = Workspace(config=config)
        return _workspace


__all__ = ["Workspace", "default_notebook", "get_workspace"]
