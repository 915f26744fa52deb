"""A map's metering: ledger intervals per worker, covering only the time the map's inputs run there.

An interval opens when one of the map's tasks starts *executing* on a worker, at the time it started:
at most twice a second (and once more just before a map is cancelled) the workers the scheduler
assigned the map's tasks to are asked which of them they execute. A task that merely waits on a
worker (queued behind a ``%%gpu`` session's lease on that GPU) opens nothing, so a GPU a session
pays for is never billed to a map too. When a chunk reports, the interval's start moves to
when the first chunk there really started; at a clean end it closes when the last chunk there
ended. A worker that sat idle for more than ``GAP_NS`` between the map's chunks (its GPU free, or
held by a session meanwhile) gets a new interval for the next run: the gap is billed to nobody.
A map that is stopped (cancelled, failed, over budget) closes its intervals when it stops. A crash
mid-map is recovered at the last heartbeat, like a session.
"""

from __future__ import annotations

import time

from burstlab.billing import cost_microusd

from . import _policy

GAP_NS = 2_000_000_000  # idle time on a worker after which the map's next chunk there opens a new interval


SILENT_S = 2.0  # a worker the scheduler has not heard from for this long is not asked (its host may be cut off)
ASK_TIMEOUT_S = 2.0  # a poll of the workers never holds the map longer than this


def _processing_workers(prefix: str, dask_scheduler=None) -> list[str]:
    """Runs on the scheduler: addresses of the workers with one of this map's tasks assigned (running
    there, or only waiting there for a resource a session's lease holds) that were heard from lately:
    dialling a host whose network is down would wait for the connect timeout."""
    from distributed.metrics import time as now

    t = now()
    return [addr for addr, ws in dask_scheduler.workers.items()
            if t - ws.last_seen < SILENT_S and any(str(ts.key).startswith(prefix) for ts in ws.processing)]


def _executing_here(prefix: str, dask_worker=None) -> tuple[str, int | None]:
    """Runs on a worker: its name, and when the earliest of this map's tasks that it is executing
    right now started (ns since the epoch; None when it executes none of them)."""
    starts = [ts.start_time for key in list(dask_worker.active_keys) if str(key).startswith(prefix)
              and (ts := dask_worker.state.tasks.get(key)) is not None and ts.start_time]
    return str(dask_worker.name), (int(min(starts) * 1e9) if starts else None)


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
        self.intervals: dict[str, str] = {}  # worker name -> its current interval id
        self.spans: dict[str, _policy.Span] = {}  # worker name -> reported extent of its current interval
        self._polled = 0.0
        self._closed: dict[str, int] = {}  # interval id -> final cost (earlier runs, and all after close)

    def _open(self, worker: str, start_ns: int) -> None:
        self.intervals[worker] = self.meter.start(
            kind="map", user=self.ws.user, notebook=self.ws.notebook, resource=self.resource,
            quantity=self.quantity, declared=self.declared, start_ns=start_ns,
            detail={"map": self.map_id, "function": self.name, "worker": worker},
        )
        self.spans.pop(worker, None)
        parts = worker.split("/")
        if not self.declared and self.resource != "CPU" and len(parts) == 5:  # NVML figures (declared GPUs: none)
            from burstlab.remote_kernel._gpu_use import sampler
            from burstlab.remote_kernel.cluster import slot_resource

            slot = slot_resource(parts[1], int(parts[3]))
            self.meter.watch_gpus(self.intervals[worker], sampler(self.ws.client, [slot]))

    def _close(self, worker: str, stop_ns: int | None, detail: dict | None = None) -> None:
        interval = self.intervals.pop(worker)
        self.spans.pop(worker, None)
        record = self.meter.stop(interval, detail=detail, stop_ns=stop_ns)
        self._closed[interval] = record.cost_microusd if record is not None else 0

    def _began(self, worker: str, start_ns: int) -> bool:
        """A run of the map's inputs began on ``worker`` at ``start_ns``: open its interval, or a new
        one after an idle gap. True when an interval was opened."""
        span = self.spans.get(worker)
        if worker in self.intervals and span is not None and start_ns > span.stop_ns + GAP_NS:
            self._close(worker, span.stop_ns)  # idle since: the gap is not the map's
        if worker not in self.intervals:
            self._open(worker, start_ns)
            return True
        return False

    def poll(self, client, force: bool = False) -> None:
        """Open an interval for each worker where one of the map's tasks now executes: the scheduler
        names the workers it assigned tasks to, and those workers say whether one really runs."""
        now = time.monotonic()
        if not force and now - self._polled < self.poll_s:
            return
        self._polled = now
        try:
            workers = client.run_on_scheduler(_processing_workers, self.key_prefix, callback_timeout=ASK_TIMEOUT_S)
            running = client.run(_executing_here, self.key_prefix, workers=workers, on_error="return",
                                 callback_timeout=ASK_TIMEOUT_S) if workers else {}
        except Exception:  # the scheduler is busy or gone: the reports still open intervals
            return
        for answer in running.values():
            if isinstance(answer, tuple) and answer[1] is not None:
                self._began(*answer)

    def report(self, worker: str, start_ns: int, stop_ns: int) -> None:
        """A chunk ran on ``worker`` from ``start_ns`` to ``stop_ns`` (the worker's clock)."""
        self._began(worker, start_ns)
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
        total = sum(self._closed.values())
        for interval in self.intervals.values():
            record = self.meter.record(interval)
            total += record.cost_microusd if record is not None else 0
        return total

    def lost(self, worker: str, last_heard_ns: int) -> None:
        """``worker``'s host was lost: its interval ends at its last heartbeat, and nothing after is billed."""
        if worker in self.intervals:
            record = self.meter.record(self.intervals[worker])
            start = record.start_ns if record is not None else last_heard_ns
            self._close(worker, max(start, last_heard_ns), {"lost": True})

    def close(self, clean: bool, inputs: int) -> None:
        """Close every interval: at the worker's last chunk's end after a clean finish, else now."""
        for worker in list(self.intervals):
            span = self.spans.get(worker)
            self._close(worker, span.stop_ns if clean and span is not None else None, {"inputs": inputs})

    def start_cost_microusd(self) -> int:
        """The least the map can cost: one billed second of one worker."""
        return cost_microusd(1, self.rate, self.quantity)


__all__ = ["GAP_NS", "MapMeter"]
