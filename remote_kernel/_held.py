"""The kernel a lease holds, on the GPU worker that holds it, and what a kernel provisioner may do to it.

A lease's primary task (``lease.hold``) registers its kernel here. A Jupyter kernel provisioner
(``provisioner.py``) restarts the notebook's kernel within the same lease: the old kernel exits (asked
to by the kernel manager's ``shutdown_request``, or killed), a fresh one is taken from the worker's
pool and gets the lease's environment, and the lease, its GPUs and its meter interval carry on.

The lease task ends when its kernel dies, except while a restart is expected: a kernel that exited
cleanly (status 0: only a ``shutdown_request`` does that to an ipykernel) or that the provisioner is
killing for a restart is given ``RESTART_GRACE_S`` to be replaced. The functions at the bottom run on
the worker through ``Client.run``, so they work whatever host the lease is on.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

RESTART_GRACE_S = 5.0  # how long a cleanly exited kernel waits for its replacement before the lease ends

_held: dict[str, "Held"] = {}
_lock = threading.Lock()


class Held:
    """One lease's current kernel on this worker; ``renew()`` swaps in a fresh one."""

    def __init__(self, lease_id: str, kernel, pool, setup_code: str):
        self.lease_id = lease_id
        self.kernel = kernel
        self.pool = pool
        self.setup_code = setup_code
        self.generation = 0
        self._lock = threading.Lock()
        self._expect_until = 0.0  # monotonic time until which a dead kernel is a restart, not an end
        self._dead_since: float | None = None
        self._closed = False

    def expect_restart(self, seconds: float = RESTART_GRACE_S) -> None:
        with self._lock:
            self._expect_until = max(self._expect_until, time.monotonic() + seconds)

    def ended(self) -> dict | None:
        """None while the kernel lives or is about to be replaced; else how the lease ends."""
        with self._lock:
            kernel = self.kernel
            if kernel.alive():
                self._dead_since = None
                return None
            now = time.monotonic()
            if self._dead_since is None:
                self._dead_since = now
            code = kernel.proc.returncode
            if now < self._expect_until or (code == 0 and now - self._dead_since < RESTART_GRACE_S):
                return None
        return {"ended": "kernel-died", "returncode": code, "log": kernel.log_tail(1000)}

    def renew(self) -> dict:
        """Replace the kernel with a fresh one from the pool (the old one is killed); its connection."""
        self.expect_restart(60.0)  # the old kernel may die while the new one starts
        kernel, warm = self.pool.take()
        try:
            kernel.run(self.setup_code)
        except BaseException:
            kernel.kill()
            raise
        with self._lock:
            if self._closed:  # released meanwhile
                old = kernel
            else:
                old, self.kernel = self.kernel, kernel
                self.generation += 1
                self._dead_since = None
                self._expect_until = 0.0
        old.kill()
        if old is kernel:
            raise RuntimeError("the lease was released while its kernel restarted")
        return {"connection": kernel.connection_info, "pid": kernel.pid, "warm": warm, "generation": self.generation}

    def status(self) -> int | None:
        """The current kernel's exit status, or None while it runs."""
        return self.kernel.proc.poll()

    def signal(self, signum: int, expect_restart: bool = False) -> None:
        """Signal the current kernel's process group (it runs in its own session)."""
        if expect_restart:
            self.expect_restart()
        try:
            os.killpg(self.kernel.pid, signum)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """The lease is over: kill the current kernel and forget it."""
        with self._lock:
            self._closed = True
            kernel = self.kernel
        with _lock:
            if _held.get(self.lease_id) is self:
                del _held[self.lease_id]
        kernel.kill()


def register(lease_id: str, kernel, pool, setup_code: str) -> Held:
    held = Held(lease_id, kernel, pool, setup_code)
    with _lock:
        _held[lease_id] = held
    return held


def _get(lease_id: str) -> Held:
    with _lock:
        held = _held.get(lease_id)
    if held is None:
        raise LookupError(f"lease {lease_id} holds no kernel on this worker (released?)")
    return held


# -- run on the lease's worker through Client.run ---------------------------------------------------

async def renew(lease_id: str) -> dict:
    """Restart within the lease: a fresh kernel (pool start and set-up run off the worker's loop)."""
    return await asyncio.to_thread(_get(lease_id).renew)


def status(lease_id: str) -> int | None:
    """The lease's kernel's exit status; None while it runs; -1 if the lease holds no kernel here."""
    with _lock:
        held = _held.get(lease_id)
    return -1 if held is None else held.status()


def send_signal(lease_id: str, signum: int, expect_restart: bool = False) -> None:
    with _lock:
        held = _held.get(lease_id)
    if held is not None:
        held.signal(signum, expect_restart)


__all__ = ["RESTART_GRACE_S", "Held", "register", "renew", "send_signal", "status"]
