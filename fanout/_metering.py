"""A map's metering: one ledger interval per worker it uses, open (and heartbeaten) while the map runs.

An interval opens as soon as the scheduler shows one of the map's tasks on a worker (polled at most
twice a second), so a crash mid-map is recovered at the last heartbeat like a session, and the lab
sees the cost accrue. When the worker's first chunk reports, the interval's start moves to when that
chunk really started; at a clean end it closes when the worker's last chunk ended, so a map is
billed from its first input's start to its last input's end on each worker. A map that is stopped
(cancelled, failed, over budget) closes its intervals when it stops: the workers were held until then.
"""

from __future__ import annotations

import time

from burstlab.billing import cost_microusd

from . import _policy


def _processing_workers(prefix: str, dask_scheduler=None) -> list[str]:
    """Runs on the scheduler: names of the workers with one of this map's tasks assigned."""
    return [str(ws.name) for ws in dask_scheduler.workers.values()
            if any(str(ts.key).startswith(prefix) for ts in ws.processing)]


class MapMeter:
    def __init__(self, ws, *, map_id: str, name: str, resource: str, quantity: int, declared: bool,
                 key_prefix: str, poll_s: float = 0.5):
        self.ws = ws
        self.meter = ws.meter
        self.map_id = map_id
        self.name = name
        self.resource = resource
        self.quantity = quantity
        self.declared = declared
        self.key_prefix = key_prefix
        self.poll_s = poll_s
        self.rate = self.meter.rates.rate(resource)
        self.intervals: dict[str, str] = {}  # worker name -> interval id
        self.spans: dict[str, _policy.Span] = {}  # worker name -> first chunk start .. last chunk end (reported)
        self._polled = 0.0
        self._closed: dict[str, int] = {}  # interval id -> final cost

    def _open(self, worker: str, start_ns: int) -> None:
        if worker not in self.intervals:
            self.intervals[worker] = self.meter.start(
                kind="map", user=self.ws.user, notebook=self.ws.notebook, resource=self.resource,
                quantity=self.quantity, declared=self.declared, start_ns=start_ns,
                detail={"map": self.map_id, "function": self.name, "worker": worker},
            )

    def poll(self, client, force: bool = False) -> None:
        """Open an interval for each worker that now has one of the map's tasks."""
        now = time.monotonic()
        if not force and now - self._polled < self.poll_s:
            return
        self._polled = now
        try:
            workers = client.run_on_scheduler(_processing_workers, self.key_prefix)
        except Exception:  # the scheduler is busy or gone: the reports still open intervals
            return
        start = self.meter.clock.now_ns()
        for worker in workers:
            self._open(worker, start)

    def report(self, worker: str, start_ns: int, stop_ns: int) -> None:
        """A chunk ran on ``worker`` from ``start_ns`` to ``stop_ns`` (the worker's clock)."""
        self._open(worker, start_ns)
        span = self.spans.get(worker)
        if span is None:
            self.spans[worker] = _policy.Span(start_ns, stop_ns)
            self.meter.set_start(self.intervals[worker], start_ns)  # when its first input really started
        else:
            earlier = start_ns < span.start_ns
            span.extend(start_ns, stop_ns)
            if earlier:
                self.meter.set_start(self.intervals[worker], start_ns)

    def cost_microusd(self) -> int:
        """What the map has cost so far: open intervals priced up to now, closed ones as billed."""
        total = 0
        for interval in self.intervals.values():
            if interval in self._closed:
                total += self._closed[interval]
                continue
            record = self.meter.record(interval)
            total += record.cost_microusd if record is not None else 0
        return total

    def close(self, clean: bool, inputs: int) -> None:
        """Close every interval: at the worker's last chunk's end after a clean finish, else now."""
        for worker, interval in self.intervals.items():
            if interval in self._closed:
                continue
            span = self.spans.get(worker)
            stop_ns = span.stop_ns if clean and span is not None else None
            record = self.meter.stop(interval, detail={"inputs": inputs}, stop_ns=stop_ns)
            self._closed[interval] = record.cost_microusd if record is not None else 0

    def start_cost_microusd(self) -> int:
        """The least the map can cost: one billed second of one worker."""
        return cost_microusd(1, self.rate, self.quantity)


__all__ = ["MapMeter"]
