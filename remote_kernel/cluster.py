"""Placement on Dask: the embedded GPU cluster, the `burstlab worker` command, and inventory.

Each GPU is one Dask worker process (through a Nanny) with ``resources={TYPE: 1}`` and
``CUDA_VISIBLE_DEVICES`` pinned to that GPU, as dask-cuda lays out workers. Worker names carry what
inventory needs (``burstlab/HOST/TYPE/INDEX/SOURCE``), so the scheduler alone answers "which GPUs
exist and which are free" in one call, with no round trip to the workers.
"""

from __future__ import annotations

import socket
from collections import defaultdict
from dataclasses import dataclass

from burstlab.gpus import Gpu
from burstlab.wire import GpuInventoryEntry

NAME_PREFIX = "burstlab"


def worker_name(gpu: Gpu) -> str:
    return f"{NAME_PREFIX}/{gpu.host}/{gpu.type}/{gpu.index}/{gpu.source}"


def worker_env(gpu: Gpu) -> dict[str, str]:
    """Environment of the worker process that owns ``gpu``: CUDA sees that GPU alone."""
    return {
        "CUDA_VISIBLE_DEVICES": str(gpu.index),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # so CUDA numbers GPUs as NVML (and nvidia-smi) do
        "BURSTLAB_GPU_TYPE": gpu.type,
        "BURSTLAB_GPU_INDEX": str(gpu.index),
        "BURSTLAB_GPU_SOURCE": gpu.source,
    }


def worker_spec(gpu: Gpu, nthreads: int, host: str = "127.0.0.1") -> dict:
    """A SpecCluster worker spec for one GPU."""
    from distributed import Nanny

    return {
        "cls": Nanny,
        "options": {
            "name": worker_name(gpu),
            "nthreads": nthreads,
            "resources": {gpu.type: 1},
            "env": worker_env(gpu),
            "host": host,
            "death_timeout": 30,  # orphaned workers (their notebook died) exit on their own
            "silence_logs": 40,
            "dashboard": False,
            "dashboard_address": ":0",  # never fight another cluster for port 8787
        },
    }


def start_embedded(gpus: list[Gpu], nthreads: int = 2):
    """A SpecCluster on this machine with one worker per GPU (none if ``gpus`` is empty)."""
    from distributed import Scheduler, SpecCluster

    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard": False, "dashboard_address": ":0"}}
    workers = {worker_name(g): worker_spec(g, nthreads) for g in gpus}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=40, name="burstlab-embedded")


@dataclass(frozen=True)
class Slot:
    """One GPU worker as the scheduler sees it."""

    address: str
    host: str
    type: str
    index: int
    source: str
    busy: bool


def _scheduler_slots(dask_scheduler=None) -> list[tuple]:
    """Runs on the scheduler (atomically, in its event loop): every GPU-carrying worker."""
    rows = []
    for ws in dask_scheduler.workers.values():
        for resource, supply in ws.resources.items():
            rows.append((ws.address, str(ws.name), ws.host, resource, supply, ws.used_resources.get(resource, 0)))
    return rows


def slots(client) -> list[Slot]:
    """GPU slots of the cluster a client is connected to, from one scheduler call."""
    out = []
    for address, name, host, resource, supply, used in client.run_on_scheduler(_scheduler_slots):
        parts = name.split("/")
        if len(parts) == 5 and parts[0] == NAME_PREFIX:
            _, host, gpu_type, index, source = parts
            out.append(Slot(address, host, gpu_type, int(index), source, used >= supply))
        else:  # a plain Dask worker with GPU resources, started without `burstlab worker`
            for i in range(int(supply)):
                out.append(Slot(address, host, resource, i, "dask", used > i))
    return out


def inventory(all_slots: list[Slot]) -> list[GpuInventoryEntry]:
    """Aggregate slots into one entry per (type, host, source)."""
    groups: dict[tuple[str, str, str], list[Slot]] = defaultdict(list)
    for s in all_slots:
        groups[(s.type, s.host, s.source)].append(s)
    return [
        GpuInventoryEntry(type=t, host=h, count=len(g), free=sum(not s.busy for s in g), source=src)
        for (t, h, src), g in sorted(groups.items())
    ]


def run_worker(scheduler: str, declared: str = "", nthreads: int = 2, host: str | None = None) -> None:
    """``burstlab worker tcp://scheduler:8786``: serve this host's GPUs to a Dask cluster.

    Starts one Nanny per GPU (NVML's, or the declared ones) with the GPU pinned, and runs until
    interrupted.
    """
    import asyncio

    from distributed import Nanny

    from burstlab.gpus import discover

    hostname = socket.gethostname()
    gpus = discover(declared, host=hostname)
    if not gpus:
        raise SystemExit(
            "No GPU found through NVML and none declared. Declare some with --declare H100:2 "
            "(or BURSTLAB_DECLARED_GPUS) to test without hardware."
        )

    async def _main() -> None:
        nannies = []
        for gpu in gpus:
            options = worker_spec(gpu, nthreads, host=host or "")["options"]
            options.pop("death_timeout")
            nannies.append(await Nanny(scheduler, **options))
        print(f"burstlab worker: serving {len(gpus)} GPU(s) to {scheduler}: "
              + ", ".join(f"{g.type}#{g.index} ({g.source})" for g in gpus), flush=True)
        try:
            await asyncio.gather(*(n.finished() for n in nannies))
        finally:
            await asyncio.gather(*(n.close() for n in nannies), return_exceptions=True)

    asyncio.run(_main())


__all__ = ["Slot", "inventory", "run_worker", "slots", "start_embedded", "worker_env", "worker_name"]
