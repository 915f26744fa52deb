"""Is the GPU host still there? The notebook pings the remote kernel's heartbeat channel directly.

Dask notices a dead worker only when its connection breaks: a host whose processes were all killed
is noticed at once, but a host whose network went away only after TCP gives up, and a lease task whose
worker vanished is re-queued by the scheduler rather than failed. So the notebook asks the kernel
itself, over the Jupyter heartbeat channel (a zmq echo that ipykernel serves from its own C-level
thread, answered even while a cell holds the GIL), once a ``interval``: the same path the cell's
messages travel. No answer for ``lost_after`` seconds means the host is lost; ``on_lost`` is called
once, on this watcher's thread, and ``last_seen_ns`` (wall clock) is when it last answered: where
the session's meter closes.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import zmq

from . import _curve


class HostWatch:
    """Pings one kernel's heartbeat port until closed or until it stops answering."""

    def __init__(self, connection: dict, host: str, lost_after: float = 10.0, interval: float = 1.0,
                 on_lost: Callable[[str], None] | None = None):
        self.address = f"{connection.get('transport', 'tcp')}://{connection['ip']}:{connection['hb_port']}"
        self.host = host
        self.ip = connection["ip"]
        self._curve = _curve.client_options(connection)  # the kernel's heartbeat speaks Curve only (_curve.py)
        self.lost_after = float(lost_after)
        self.interval = float(interval)
        self.on_lost = on_lost
        self.last_seen_ns = time.time_ns()
        self._last_seen = time.monotonic()
        self.lost = False
        self.reason = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"burstlab-hostwatch-{host}", daemon=True)
        if self.lost_after > 0:
            self._thread.start()

    def alive(self) -> bool:
        return not self.lost

    def _socket(self, ctx):
        sock = ctx.socket(zmq.REQ)
        sock.linger = 0
        for option, value in self._curve:
            sock.setsockopt(option, value)
        sock.connect(self.address)
        return sock

    def _run(self) -> None:
        ctx = zmq.Context.instance()
        sock = self._socket(ctx)
        try:
            while not self._stop.is_set():
                sent = time.monotonic()
                sock.send(b"burstlab-ping")
                # Wait for the echo up to the interval; a late echo still counts while the REQ waits.
                while not self._stop.is_set():
                    if sock.poll(int(self.interval * 1000)):
                        sock.recv()
                        self._last_seen = time.monotonic()
                        self.last_seen_ns = time.time_ns()
                        break
                    if time.monotonic() - self._last_seen >= self.lost_after:
                        self._declare_lost()
                        return
                    if time.monotonic() - sent > 3 * self.interval:  # a lost request: start afresh
                        sock.close()
                        sock = self._socket(ctx)
                        break
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - sent)))
        finally:
            sock.close()

    def _declare_lost(self) -> None:
        self.lost = True
        self.reason = (f"lost contact with GPU host {self.host} ({self.ip}): its kernel did not answer for "
                       f"{self.lost_after:g} s (the host died or its network is down)")
        if self.on_lost is not None:
            self.on_lost(self.reason)

    def close(self) -> None:
        self._stop.set()


__all__ = ["HostWatch"]
