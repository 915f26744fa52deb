"""Placement on Dask: the embedded GPU cluster, the `burstlab worker` command, and inventory.

Each GPU is one Dask worker process (through a Nanny) with ``resources={TYPE: 1, "slot:HOST/INDEX": 1}``
and ``CUDA_VISIBLE_DEVICES`` pinned to that GPU, as dask-cuda lays out workers. The slot resource lets
a lease ask for one particular GPU whether or not its worker is running. Worker names carry what
inventory needs (``burstlab/HOST/TYPE/INDEX/SOURCE``), so the scheduler alone answers "which GPUs
exist and which are free" in one call, with no round trip to the workers.

The embedded cluster's workers are ephemeral: they start when work asks for their resources and
stop after an idle window (see :mod:`.adaptive`). A scheduler plugin keeps the catalogue of every
worker the cluster can start, so inventory lists a GPU whose worker is down (as free).
"""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from dataclasses import dataclass

from distributed.diagnostics.plugin import SchedulerPlugin

from burstlab.gpus import CPU, Gpu  # CPU: the resource CPU fan-out tasks ask for on the embedded cluster
from burstlab.wire import GpuInventoryEntry

from .adaptive import SLOT_PREFIX  # defined once, beside the pure decide() that reads slot resources

NAME_PREFIX = "burstlab"
PRELOAD = "burstlab.remote_kernel._forkserver_preload"


def worker_name(gpu: Gpu) -> str:
    return f"{NAME_PREFIX}/{gpu.host}/{gpu.type}/{gpu.index}/{gpu.source}"


def slot_resource(gpu_or_host, index: int | None = None) -> str:
    """The resource only one GPU's worker carries: how a lease pins itself to that GPU."""
    if index is None:
        return f"{SLOT_PREFIX}{gpu_or_host.host}/{gpu_or_host.index}"
    return f"{SLOT_PREFIX}{gpu_or_host}/{index}"


def worker_env(gpu: Gpu) -> dict[str, str]:
    """Environment of the worker process that owns ``gpu``: CUDA sees that GPU alone."""
    return {
        "CUDA_VISIBLE_DEVICES": str(gpu.index),
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",  # so CUDA numbers GPUs as NVML (and nvidia-smi) do
        "BURSTLAB_GPU_TYPE": gpu.type,
        "BURSTLAB_GPU_INDEX": str(gpu.index),
        "BURSTLAB_GPU_SOURCE": gpu.source,
    }


def worker_spec(gpu: Gpu, nthreads: int, host: str = "127.0.0.1", security=None) -> dict:
    """A SpecCluster worker spec for one GPU."""
    from distributed import Nanny

    extra = {"security": security} if security is not None else {}
    return {
        "cls": Nanny,
        "options": {
            "name": worker_name(gpu),
            "nthreads": nthreads,
            "resources": {gpu.type: 1, slot_resource(gpu): 1},
            "env": worker_env(gpu),
            "host": host,
            "death_timeout": 30,  # orphaned workers (their notebook died) exit on their own
            "silence_logs": 40,
            "dashboard": False,
            "dashboard_address": ":0",  # never fight another cluster for port 8787
            **extra,
        },
    }


def cpu_worker_spec(host: str, nthreads: int | None = None, security=None) -> tuple[str, dict]:
    """Name and SpecCluster spec of the embedded CPU worker (CPU fan-out); it sees no GPU."""
    from distributed import Nanny

    nthreads = nthreads or os.cpu_count() or 1
    name = f"{NAME_PREFIX}/{host}/{CPU}/0/local"
    return name, {
        "cls": Nanny,
        "options": {
            "name": name, "nthreads": nthreads, "resources": {CPU: nthreads},
            "env": {"CUDA_VISIBLE_DEVICES": ""}, "host": "127.0.0.1", "death_timeout": 30,
            "silence_logs": 40, "dashboard": False, **({"security": security} if security is not None else {}),
        },
    }


class Catalogue(SchedulerPlugin):
    """Scheduler plugin: every worker the embedded cluster can start, up or not (for inventory)."""

    name = "burstlab-catalogue"

    def __init__(self, workers: dict[str, dict]):
        self.workers = {name: dict(spec["options"].get("resources", {})) for name, spec in workers.items()}


def start_embedded(gpus: list[Gpu], nthreads: int = 2, *, idle_timeout: float = 60.0, interval: float = 0.1,
                   cpu_threads: int | None = None, home: str | None = None, security=None,
                   min_idle: dict[str, int] | None = None):
    """A SpecCluster on this machine that can run one worker per GPU and one CPU worker.

    Workers start when work asks for them and stop after ``idle_timeout`` seconds idle (Dask's
    adaptive loop, checking every ``interval`` seconds). A worker that dies mid-task is reported to
    the client at once (``allowed_failures=0``): fan-out retries count attempts themselves, and a
    session's lease must not be silently re-run elsewhere.

    Every connection is TLS with mutual authentication: ``security`` if given, else the certificates
    the cluster makes for itself under ``home/tls`` (:mod:`._tls`). A client needs them to connect.
    """
    import math
    import multiprocessing.forkserver

    import dask
    from distributed import Scheduler, SpecCluster
    from distributed.utils import get_mp_context

    from .adaptive import SlotAdaptive, check_min_idle

    # Worker processes fork from a clean server process that already imported distributed: a
    # worker is up in ~0.1 s instead of ~0.4 s for spawn, and no notebook state is inherited.
    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
    ctx = get_mp_context()
    preload = [m for m in getattr(multiprocessing.forkserver._forkserver, "_preload_modules", None) or []
               if m != "__main__"]  # the server never runs the user's script (an unguarded map would recurse)
    if preload[:1] != [PRELOAD]:  # workers ignore the kernel's Ctrl-C and skip __main__ (see _forkserver_preload)
        ctx.set_forkserver_preload([PRELOAD, *(m for m in preload if m != PRELOAD)])
    multiprocessing.forkserver.ensure_running()

    if security is None:
        from burstlab.config import BurstLab

        from ._tls import embedded_security

        security = embedded_security(home or BurstLab().home)
    protocol = "tls" if security.tls_ca_file else "tcp"  # a Security() with no certificates: plaintext (benchmarks)
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "protocol": protocol, "security": security,
                                               "dashboard": False, "dashboard_address": ":0",
                                               "allowed_failures": 0}}
    catalogue = {worker_name(g): worker_spec(g, nthreads, security=security) for g in gpus}
    host = gpus[0].host if gpus else socket.gethostname()
    cpu_name, cpu_spec = cpu_worker_spec(host, cpu_threads, security=security)
    catalogue[cpu_name] = cpu_spec
    check_min_idle(min_idle, {n: s["options"].get("resources", {}) for n, s in catalogue.items()})
    cluster = SpecCluster(workers={}, scheduler=scheduler, silence_logs=40, name="burstlab-embedded",
                          security=security)
    cluster.scheduler.add_plugin(Catalogue(catalogue))
    wait_count = max(1, math.ceil(idle_timeout / interval))
    cluster._adaptive = SlotAdaptive(cluster, catalogue, min_idle=min_idle, interval=interval, wait_count=wait_count)
    return cluster


@dataclass(frozen=True)
class Slot:
    """One GPU worker as the scheduler sees it."""

    address: str  # "" while the worker is down (scaled to zero)
    host: str
    type: str
    index: int
    source: str
    busy: bool
    resource: str = ""  # the slot resource that pins a task to this GPU ("" on plain Dask workers)

    @property
    def up(self) -> bool:
        return bool(self.address)


def _scheduler_slots(dask_scheduler=None) -> list[tuple]:
    """Runs on the scheduler (atomically, in its event loop): every GPU worker, up or down."""
    rows = []
    seen = set()
    for ws in dask_scheduler.workers.values():
        seen.add(str(ws.name))
        for resource, supply in ws.resources.items():
            if resource == CPU or resource.startswith(SLOT_PREFIX):
                continue
            rows.append((ws.address, str(ws.name), ws.host, resource, supply, ws.used_resources.get(resource, 0)))
    catalogue = dask_scheduler.plugins.get(Catalogue.name)
    for name, resources in (catalogue.workers.items() if catalogue else ()):
        if name in seen:
            continue
        for resource, supply in resources.items():
            if resource != CPU and not resource.startswith(SLOT_PREFIX):
                rows.append(("", name, name.split("/")[1], resource, supply, 0))
    return rows


def _scheduler_leased(dask_scheduler=None) -> list[str]:
    """Runs on the scheduler: slot resources of the workers running a %%gpu lease task."""
    return [r for ws in dask_scheduler.workers.values()
            if any(str(ts.key).startswith("burstlab-lease-") for ts in ws.processing)
            for r in ws.resources if r.startswith(SLOT_PREFIX)]


def leased_slot_resources(client) -> set[str]:
    """Slot resources of the GPUs that %%gpu sessions hold now (fan-out pins its tasks elsewhere)."""
    return set(client.run_on_scheduler(_scheduler_leased))


def slots(client) -> list[Slot]:
    """GPU slots of the cluster a client is connected to, from one scheduler call."""
    out = []
    for address, name, host, resource, supply, used in client.run_on_scheduler(_scheduler_slots):
        parts = name.split("/")
        if len(parts) == 5 and parts[0] == NAME_PREFIX:
            _, host, gpu_type, index, source = parts
            out.append(Slot(address, host, gpu_type, int(index), source, used >= supply,
                            resource=slot_resource(host, int(index))))
        else:  # a plain Dask worker with GPU resources, started without `burstlab worker`
            for i in range(int(supply)):
                out.append(Slot(address, host, resource, i, "dask", used > i))
    return out


def _scheduler_supply(dask_scheduler=None) -> dict:
    """Runs on the scheduler: per resource, [largest supply on one worker, workers up, units up, units in all]."""
    out: dict[str, list] = {}
    seen = set()
    for ws in dask_scheduler.workers.values():
        seen.add(str(ws.name))
        for resource, supply in ws.resources.items():
            row = out.setdefault(resource, [0, 0, 0, 0])
            row[0] = max(row[0], supply)
            row[1] += 1
            row[2] += supply
            row[3] += supply
    catalogue = dask_scheduler.plugins.get(Catalogue.name)
    for name, resources in (catalogue.workers.items() if catalogue else ()):
        if name not in seen:
            for resource, supply in resources.items():
                row = out.setdefault(resource, [0, 0, 0, 0])
                row[0] = max(row[0], supply)
                row[3] += supply
    out[""] = [0, len(dask_scheduler.workers), 0, 0]  # every worker, whatever it carries
    return out


def supply(client) -> dict[str, tuple]:
    """``{resource: (most on one worker, workers up, units up, units in all)}``, down workers included;
    ``""`` counts every worker up. One scheduler call."""
    return {k: tuple(v) for k, v in client.run_on_scheduler(_scheduler_supply).items()}


def inventory(all_slots: list[Slot]) -> list[GpuInventoryEntry]:
    """Aggregate slots into one entry per (type, host, source)."""
    groups: dict[tuple[str, str, str], list[Slot]] = defaultdict(list)
    for s in all_slots:
        groups[(s.type, s.host, s.source)].append(s)
    return [
        GpuInventoryEntry(type=t, host=h, count=len(g), free=sum(not s.busy for s in g), source=src)
        for (t, h, src), g in sorted(groups.items())
    ]


__all__ = [
    "CPU", "Catalogue", "Slot", "cpu_worker_spec", "inventory", "slot_resource", "slots",
    "start_embedded", "supply", "worker_env", "worker_name",
]
