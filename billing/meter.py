"""The meter: opens and closes ledger intervals, and keeps open ones heartbeating.

Timestamps come from a monotonic clock anchored to wall time once, so an interval's length is
immune to wall-clock jumps while its endpoints stay comparable across processes.
"""

from __future__ import annotations

import threading
import time
import uuid

from burstlab.wire import UsageRecord

from .ledger import Ledger, owner_tag
from .rates import RateCard


class Clock:
    """Wall-clock nanoseconds that advance monotonically."""

    def __init__(self) -> None:
        self._wall0 = time.time_ns()
        self._mono0 = time.monotonic_ns()

    def now_ns(self) -> int:
        return self._wall0 + (time.monotonic_ns() - self._mono0)


class Meter:
    """Records resource holdings into a ledger, heartbeating open intervals every ``heartbeat_s``."""

    def __init__(self, ledger: Ledger, rates: RateCard, heartbeat_s: float = 5.0):
        self.ledger = ledger
        self.rates = rates
        self.clock = Clock()
        self._owner = owner_tag()
        self._open: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat_s = heartbeat_s
        self._thread: threading.Thread | None = None

    def start(
        self, *, kind: str, user: str, notebook: str, resource: str, quantity: int = 1,
        declared: bool = False, detail: dict | None = None,
    ) -> str:
        """Open an interval now; returns its id."""
        interval_id = uuid.uuid4().hex
        self.ledger.open_interval(
            id=interval_id, kind=kind, user=user, notebook=notebook, resource=resource, quantity=quantity,
            declared=declared, rate_nusd_per_s=self.rates.rate(resource), start_ns=self.clock.now_ns(),
            owner=self._owner, detail=detail,
        )
        with self._lock:
            self._open.add(interval_id)
            if self._thread is None and self._heartbeat_s > 0:
                self._thread = threading.Thread(target=self._beat, name="burstlab-meter", daemon=True)
                self._thread.start()
        return interval_id

    def stop(self, interval_id: str, detail: dict | None = None) -> UsageRecord | None:
        """Close an interval now (idempotent), merging ``detail`` into it; return its final record."""
        now = self.clock.now_ns()
        self.ledger.close_interval(interval_id, now, detail)
        with self._lock:
            self._open.discard(interval_id)
        return self.ledger.get(interval_id, now)

    def record(self, interval_id: str) -> UsageRecord | None:
        return self.ledger.get(interval_id, self.clock.now_ns())

    def close(self) -> None:
        """Close every interval this meter has open and stop heartbeating."""
        with self._lock:
            ids = list(self._open)
        for interval_id in ids:
            self.stop(interval_id)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def _beat(self) -> None:
        while not self._stop.wait(self._heartbeat_s):
            with self._lock:
                ids = list(self._open)
            self.ledger.heartbeat(ids, self.clock.now_ns())


__all__ = ["Clock", "Meter"]
