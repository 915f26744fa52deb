"""GPU utilisation of a metered interval: NVML samples of its GPUs, summed up into the interval's detail.

What a session's GPUs really did (utilisation %, memory) next to what they cost. The meter samples each
registered interval every few seconds through a callable the caller hands it (billing imports no Dask:
``remote_kernel._gpu_use`` makes one that asks the GPU's worker for NVML's figures) and writes the
summary into the interval's ``detail["gpu_use"]`` when it closes::

    {"samples": 12, "util_mean": 41.5, "util_peak": 98.0, "mem_mean_bytes": ..., "mem_peak_bytes": ...,
     "mem_total_bytes": ...}

Declared GPUs (no hardware behind them) have no figure: :func:`label` says ``unknown (declared)``, and
nothing is ever invented for them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

from burstlab.wire import UsageRecord

DECLARED = "unknown (declared)"
NOT_SAMPLED = "not sampled"
GPU_KINDS = ("session", "map")  # kinds of interval that hold GPUs (sandboxes and provisioned time do not)

Sample = Sequence[tuple[float, int, int]]  # per GPU: (utilisation %, memory used bytes, memory total bytes)


@dataclass
class GpuUse:
    """Running sums of one interval's samples (one sample: every GPU of the interval at one moment)."""

    samples: int = 0
    util_sum: float = 0.0
    util_peak: float = 0.0
    mem_sum: int = 0
    mem_peak: int = 0
    mem_total: int = 0

    def add(self, gpus: Sample) -> None:
        """One sample; several GPUs count as their mean utilisation and their summed memory."""
        if not gpus:
            return
        util = sum(float(u) for u, _, _ in gpus) / len(gpus)
        used = sum(int(m) for _, m, _ in gpus)
        self.samples += 1
        self.util_sum += util
        self.util_peak = max(self.util_peak, max(float(u) for u, _, _ in gpus))
        self.mem_sum += used
        self.mem_peak = max(self.mem_peak, used)
        self.mem_total = max(self.mem_total, sum(int(t) for _, _, t in gpus))

    def detail(self) -> dict:
        if not self.samples:
            return {"samples": 0}
        return {"samples": self.samples, "util_mean": round(self.util_sum / self.samples, 1),
                "util_peak": round(self.util_peak, 1), "mem_mean_bytes": self.mem_sum // self.samples,
                "mem_peak_bytes": self.mem_peak, "mem_total_bytes": self.mem_total}


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def label(record: UsageRecord) -> str:
    """What one interval's GPUs did, in words: '' for intervals that hold no GPU."""
    if record.kind not in GPU_KINDS or record.resource == "CPU":
        return ""
    if record.declared:
        return DECLARED
    use = record.detail.get("gpu_use") if isinstance(record.detail, dict) else None
    if not isinstance(use, dict) or not use.get("samples"):
        return NOT_SAMPLED
    return (f"{use['util_mean']:.0f}% mean, {use['util_peak']:.0f}% peak, "
            f"{_gib(use['mem_peak_bytes'])} of {_gib(use['mem_total_bytes'])} peak")


def combine(records: Iterable[UsageRecord]) -> str:
    """One label for a group of intervals: utilisation weighted by each interval's billed GPU-seconds, the
    highest peak; declared and unsampled ones are counted, never given a figure."""
    weight = util = 0.0
    peak = 0.0
    mem_peak = 0
    declared = unsampled = 0
    for r in records:
        what = label(r)
        if not what:
            continue
        if what == DECLARED:
            declared += 1
        elif what == NOT_SAMPLED:
            unsampled += 1
        else:
            use = r.detail["gpu_use"]
            w = max(1, r.billed_s * r.quantity)
            weight += w
            util += use["util_mean"] * w
            peak = max(peak, use["util_peak"])
            mem_peak = max(mem_peak, use["mem_peak_bytes"])
    parts = []
    if weight:
        parts.append(f"{util / weight:.0f}% mean, {peak:.0f}% peak, {_gib(mem_peak)} peak")
    if declared:
        parts.append(DECLARED if not (weight or unsampled) else f"{declared} {DECLARED}")
    if unsampled:
        parts.append(NOT_SAMPLED if not (weight or declared) else f"{unsampled} {NOT_SAMPLED}")
    return "; ".join(parts)


class Sampler:
    """One thread that samples every registered interval every ``every_s`` seconds.

    ``sample`` callables must bound their own wait (a host that does not answer returns None: that
    sample is skipped). The summary of an interval is taken with :meth:`finish` when it closes."""

    def __init__(self, every_s: float = 3.0):
        self.every_s = every_s
        self._uses: dict[str, tuple[Callable[[], Optional[Sample]], GpuUse]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def watch(self, interval_id: str, sample: Callable[[], Optional[Sample]]) -> None:
        with self._lock:
            self._uses[interval_id] = (sample, GpuUse())
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._loop, name="burstlab-gpu-use", daemon=True)
                self._thread.start()
        self._wake.set()  # a first sample at once

    def current(self, interval_id: str) -> dict | None:
        with self._lock:
            got = self._uses.get(interval_id)
        return got[1].detail() if got is not None else None

    def finish(self, interval_id: str) -> dict | None:
        """Stop sampling ``interval_id``; its summary (None if it was never watched)."""
        with self._lock:
            got = self._uses.pop(interval_id, None)
        return got[1].detail() if got is not None else None

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._closed:
            with self._lock:
                watched = list(self._uses.items())
            for interval_id, (sample, use) in watched:
                try:
                    got = sample()
                except Exception:  # noqa: BLE001 - a host that cannot answer now: this sample is skipped
                    got = None
                if got:
                    with self._lock:
                        if interval_id in self._uses:
                            use.add(got)
            self._wake.wait(self.every_s)
            self._wake.clear()


__all__ = ["DECLARED", "NOT_SAMPLED", "GpuUse", "Sampler", "combine", "label"]
