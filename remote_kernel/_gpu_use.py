"""NVML figures of a session's GPUs, read on the workers that own them (for the meter's ``gpu_use``).

Each GPU is one worker pinned to it (``BURSTLAB_GPU_INDEX``, NVML's numbering), so the notebook asks
the lease's workers, at most every few seconds and with a deadline, for their GPU's utilisation and
memory. Declared GPUs are never asked: they have no figures (``billing.gpu_use.DECLARED``).
"""

from __future__ import annotations

import os

ASK_TIMEOUT_S = 2.0  # a host that does not answer in time: that sample is skipped, the session goes on


def nvml_sample(dask_worker=None) -> tuple[float, int, int] | None:
    """Runs on a GPU worker: ``(utilisation %, memory used, memory total)`` of its GPU, or None without NVML."""
    index = os.environ.get("BURSTLAB_GPU_INDEX")
    if index is None or os.environ.get("BURSTLAB_GPU_SOURCE") == "declared":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(int(index))
        util = pynvml.nvmlDeviceGetUtilizationRates(handle)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return float(util.gpu), int(memory.used), int(memory.total)
    except Exception:  # noqa: BLE001 - no NVML here (or the GPU fell off the bus): no figure, never an invented one
        return None


def _addresses(slot_resources: list[str], dask_scheduler=None) -> list[str]:
    """Runs on the scheduler: the addresses of the workers that carry these slot resources (those up)."""
    return sorted({ws.address for ws in dask_scheduler.workers.values()
                   if any(r in ws.resources for r in slot_resources)})


def sampler(client, slot_resources: list[str]):
    """A callable for ``Meter.watch_gpus``: one NVML sample of the GPUs behind ``slot_resources`` (found on
    the scheduler, as their workers may start after the lease), or None while any of them cannot answer."""
    wanted = sorted(set(r for r in slot_resources if r))
    found: list[str] = []

    def sample():
        if len(found) < len(wanted):
            found[:] = client.run_on_scheduler(_addresses, wanted, callback_timeout=ASK_TIMEOUT_S)
            if len(found) < len(wanted):
                return None
        got = client.run(nvml_sample, workers=list(found), on_error="return", callback_timeout=ASK_TIMEOUT_S)
        rows = [v for v in got.values() if isinstance(v, tuple)]
        if len(rows) < len(found):
            found.clear()  # a worker restarted elsewhere: look its address up again
            return None
        return rows

    return sample


__all__ = ["nvml_sample", "sampler"]
