"""A scheduler plugin that notes when each GPU worker comes up and goes down (for ``provisioned`` time).

Registered by the workspace that runs the embedded cluster (``burstlab.workspace._watcher``); kept apart so
that importing the workspace does not import ``distributed``.
"""

from __future__ import annotations

import time
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin


class UptimeLog(SchedulerPlugin):
    """Scheduler plugin: when each GPU worker came up and went down (wall-clock ns)."""

    name = "burstlab-uptime"

    def __init__(self) -> None:
        self.up: dict[str, tuple[str, str, int, int]] = {}  # address -> (name, gpu type, count, since_ns)
        self.ended: list[tuple[str, str, int, int, int]] = []  # (name, type, count, since_ns, until_ns)

    async def start(self, scheduler) -> None:
        for address in list(scheduler.workers):
            self.add_worker(scheduler, address)

    def add_worker(self, scheduler, worker: str) -> None:
        ws = scheduler.workers.get(worker)
        if ws is None:
            return
        gpus = [(r, int(n)) for r, n in ws.resources.items() if r != "CPU" and not r.startswith("slot:")]
        if gpus:
            gpu_type, count = gpus[0]
            self.up[worker] = (str(ws.name), gpu_type, count, time.time_ns())

    def remove_worker(self, scheduler, worker: str, **kwargs: Any) -> None:
        entry = self.up.pop(worker, None)
        if entry is not None:
            self.ended.append((*entry, time.time_ns()))
            del self.ended[:-10_000]  # bounded, should nobody drain it


def drain(dask_scheduler=None):
    """Runs on the scheduler: ``(workers up now, workers that went down since the last drain)``."""
    plugin = dask_scheduler.plugins.get(UptimeLog.name)
    if plugin is None:
        return None
    ended, plugin.ended = plugin.ended, []
    return list(plugin.up.values()), ended


__all__ = ["UptimeLog", "drain"]
