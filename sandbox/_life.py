"""A started sandbox's minder: live metrics sampled from its cgroup, and its lifetime.

One task per started sandbox, on burstlab's loop. Every ``METRICS_INTERVAL`` seconds it appends one sample
(wall time, CPU seconds, memory bytes, process count, output bytes the supervisor has received) to a bounded
history (``METRICS_HISTORY`` samples: 10 minutes at the default interval), and closes the sandbox when it reaches
its lifetime (``Sandbox(lifetime=...)``, ``set_lifetime``): its owner's next call says why, as for the idle
timeout; with ``lifetime_action="pause"`` it pauses it instead (``paused_why`` says why; the next run's output
starts with a notice, and the resumed sandbox has a new lifetime). Reading the cgroup is a few small file reads; the task holds only a weak reference to the sandbox.
"""

from __future__ import annotations

import asyncio
import collections
import time
import weakref

METRICS_INTERVAL = 1.0
METRICS_HISTORY = 600


class Metrics:
    """A bounded time series of one sandbox's cgroup readings."""

    def __init__(self, interval: float = METRICS_INTERVAL, history: int = METRICS_HISTORY) -> None:
        self.interval = interval
        self.samples: collections.deque = collections.deque(maxlen=history)

    def sample(self, sb) -> dict | None:
        cg = sb._cgroup
        if cg is None:
            return None
        try:
            s = {"t": time.time(), "cpu_s": round(cg.cpu_seconds(), 6), "memory_bytes": cg.memory_bytes(),
                 "pids": len(cg.pids()), "output_bytes": sb.output_bytes}
        except OSError:  # the cgroup went away (closing)
            return None
        self.samples.append(s)
        return s

    def series(self) -> dict:
        return {"interval_s": self.interval, "samples": list(self.samples)}


def lifetime_error_why(lifetime: float) -> str:
    return (f" (it reached its lifetime of {lifetime:g} s; give a longer one with Sandbox(lifetime=...) or "
            "sb.set_lifetime(seconds) before it ends)")


def lifetime_pause_why(lifetime: float) -> str:
    return (f" (it reached its lifetime of {lifetime:g} s, and lifetime_action=\"pause\" paused it: its next use "
            f"resumes it, with a new lifetime of {lifetime:g} s; variables that could not be pickled are lost)")


async def _lifetime_pause(sb) -> None:
    """Pause ``sb`` at its lifetime; a pause that fails (a snapshot past its size limit) closes it, saying why."""
    try:
        await sb.apause()
    except Exception as exc:  # noqa: BLE001 - said to the owner through the close reason
        await sb.aclose(why=f"{lifetime_error_why(sb.lifetime)[:-1]}; pausing it failed: {exc})")
        return
    if sb.paused:
        sb.paused_why = lifetime_pause_why(sb.lifetime)


def start(sb) -> asyncio.Task:
    """Start ``sb``'s minder on the running loop."""
    return asyncio.get_running_loop().create_task(_mind(weakref.ref(sb), sb._metrics))


async def _mind(ref, metrics: Metrics) -> None:
    while True:
        sb = ref()
        if sb is None or sb._closed:
            return
        metrics.sample(sb)
        step = metrics.interval
        if sb._deadline is not None:
            left = sb._deadline - time.monotonic()
            if left <= 0 and sb.lifetime_action == "pause":
                sb._deadline = None  # its next resume counts a new lifetime (_snapshot.resume_locked)
                asyncio.ensure_future(_lifetime_pause(sb))
            elif left <= 0:
                asyncio.ensure_future(sb.aclose(why=lifetime_error_why(sb.lifetime)))
                return
            else:
                step = min(step, left)
        sb = None  # no strong reference while asleep
        await asyncio.sleep(max(step, 0.01))


__all__ = ["METRICS_HISTORY", "METRICS_INTERVAL", "Metrics", "start"]
