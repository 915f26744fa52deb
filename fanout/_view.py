"""What a map needs to know about the cluster, in one scheduler call: supply per resource, every GPU slot
(up or down), and the slots %%gpu sessions hold. A map asks once to start and at most once a second after
(every call is a round trip through the scheduler's event loop, which a 10,000-input map feels)."""

from __future__ import annotations

from dataclasses import dataclass


def _scheduler_view(dask_scheduler=None) -> tuple:
    from burstlab.remote_kernel.cluster import _scheduler_leased, _scheduler_slots, _scheduler_supply

    return (_scheduler_supply(dask_scheduler=dask_scheduler), _scheduler_slots(dask_scheduler=dask_scheduler),
            _scheduler_leased(dask_scheduler=dask_scheduler))


@dataclass(frozen=True)
class GpuSlot:
    type: str
    source: str
    resource: str  # "slot:HOST/INDEX", or "" on a plain Dask worker (not pinnable)


@dataclass
class ClusterView:
    supply: dict  # resource -> (most on one worker, workers up, units up, units in all)
    slots: list  # GpuSlot per GPU the cluster has (up or down)
    leased: set  # slot resources held by %%gpu sessions

    def types(self) -> dict[str, str]:
        """GPU type -> its source ("declared", "nvml", "dask")."""
        return {s.type: s.source for s in self.slots}

    def free(self, gpu_type: str) -> list[str]:
        """Slot resources of this type no session holds."""
        return [s.resource for s in self.slots if s.type == gpu_type and s.resource and s.resource not in self.leased]

    def unheld(self, gpu_type: str) -> int:
        return sum(1 for s in self.slots if s.type == gpu_type and s.resource not in self.leased)


def view(client) -> ClusterView:
    from burstlab.remote_kernel.cluster import NAME_PREFIX, slot_resource

    supply, rows, leased = client.run_on_scheduler(_scheduler_view)
    slots = []
    for _address, name, host, resource, amount, _used in rows:
        parts = name.split("/")
        if len(parts) == 5 and parts[0] == NAME_PREFIX:
            slots.append(GpuSlot(parts[2], parts[4], slot_resource(parts[1], int(parts[3]))))
        else:  # a plain Dask worker with GPU resources, started without `burstlab worker`
            slots.extend(GpuSlot(resource, "dask", "") for _ in range(int(amount)))
    return ClusterView({k: tuple(v) for k, v in supply.items()}, slots, set(leased))


__all__ = ["ClusterView", "GpuSlot", "view"]
