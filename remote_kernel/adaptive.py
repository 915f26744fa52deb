"""Ephemeral workers: which of the embedded cluster's workers should be running, and Dask's adaptive loop.

The embedded cluster knows every worker it *could* run (one per GPU, plus one CPU worker): its
catalogue. Work declares what it needs through Dask resource restrictions: a fan-out task asks for
``{"H100": 1}``, a session's lease for ``{"H100": 1, "slot:HOST/0": 1}`` (that one GPU). ``decide``
(pure) turns the scheduler's pending and running demand into the set of workers that should be up;
:class:`SlotAdaptive` is a ``distributed.deploy.Adaptive`` whose ``target`` asks ``decide`` and whose
scale-up starts exactly those workers. Scale-down is Dask's: an idle worker is retired after
``wait_count`` consecutive idle checks (the idle window), never while it runs a task or holds data,
so a worker holding a session's lease is never retired. ``min_idle`` (``c.BurstLab.min_idle``) keeps
that many workers of a type up beyond the demand: warm, so the next session starts at once. Their
up-time is metered as ``provisioned`` (no user's: the operator's cost), like any worker's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from distributed.deploy.adaptive import Adaptive

from burstlab.errors import BurstlabError

SLOT_PREFIX = "slot:"


@dataclass(frozen=True)
class CatalogueEntry:
    """A worker the cluster can start: its name and the resources it will carry."""

    name: str
    resources: Mapping[str, float] = field(default_factory=dict)


def decide(catalogue: Iterable[CatalogueEntry], demand: Mapping[str, int], running: Mapping[str, bool],
           min_idle: Mapping[str, int] | None = None) -> set[str]:
    """Names of the workers that should be up.

    ``demand``: resource name -> number of tasks (waiting or running) that ask for it.
    ``running``: name -> busy (runs a task or holds data) for each worker up now.
    ``min_idle``: resource name -> units kept up beyond the demand (warm workers, ready for the next
    session or map), as far as the catalogue has them.
    Busy workers stay; a worker whose slot resource is asked for comes up; for each other resource,
    workers are added (idle running ones first, then stopped ones, in name order) until their
    supply covers the demand plus ``min_idle``. Everything else is idle and may be retired.
    """
    min_idle = min_idle or {}
    catalogue = list(catalogue)
    desired = {name for name, busy in running.items() if busy}
    for entry in catalogue:
        if any(demand.get(r, 0) > 0 for r in entry.resources if r.startswith(SLOT_PREFIX)):
            desired.add(entry.name)
    kinds = sorted({r for e in catalogue for r in e.resources if not r.startswith(SLOT_PREFIX)})
    for kind in kinds:
        need = demand.get(kind, 0) + max(0, int(min_idle.get(kind, 0)))
        have = sum(e.resources[kind] for e in catalogue if e.name in desired and kind in e.resources)
        spare = sorted((e for e in catalogue if kind in e.resources and e.name not in desired),
                       key=lambda e: (e.name not in running, e.name))
        for entry in spare:
            if have >= need:
                break
            desired.add(entry.name)
            have += entry.resources[kind]
    return desired


def check_min_idle(min_idle: dict | None, carries: dict[str, dict]) -> None:
    """Refuse a ``min_idle`` that names a type no worker carries, or is not a count (before anything starts)."""
    kinds = sorted({r for res in carries.values() for r in res if not r.startswith(SLOT_PREFIX)})
    for kind, n in (min_idle or {}).items():
        if kind not in kinds:
            raise BurstlabError(f"c.BurstLab.min_idle names {kind!r}, which no worker of this cluster carries "
                                f"(it has {kinds}). Name one of those, e.g. {{{kinds[0] if kinds else 'H100'!r}: 1}}.")
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise BurstlabError(f"c.BurstLab.min_idle[{kind!r}] = {n!r}: give a number of warm workers, 0 or more.")


def scheduler_demand(scheduler) -> tuple[Counter, dict[str, bool]]:
    """Read demand and busy workers off an in-process scheduler (call on its event loop)."""
    demand: Counter = Counter()

    def count(ts) -> None:
        for resource in (ts.resource_restrictions or ()):
            demand[resource] += 1

    for ts in scheduler.unrunnable:
        count(ts)
    running = {}
    for ws in scheduler.workers.values():
        for ts in ws.processing:
            count(ts)
        running[str(ws.name)] = bool(ws.processing) or bool(ws.has_what)
    # Unrestricted tasks queued on the scheduler (a plain client.map) want the CPU worker.
    queued = len(scheduler.queued) + sum(1 for ts in scheduler.unrunnable if not ts.resource_restrictions)
    if queued:
        demand["CPU"] += queued
    return demand, running


class SlotAdaptive(Adaptive):
    """Dask's adaptive loop, scaling the embedded cluster's named workers by resource demand."""

    def __init__(self, cluster, catalogue: dict[str, dict], min_idle: Mapping[str, int] | None = None, **kwargs):
        self.catalogue = catalogue  # name -> worker spec; spec["options"]["resources"] is what it carries
        self.min_idle = dict(min_idle or {})  # GPU type -> warm workers kept up beyond the demand
        self._desired: set[str] = set()
        super().__init__(cluster, minimum=0, **kwargs)

    async def target(self) -> int:
        demand, running = scheduler_demand(self.cluster.scheduler)
        entries = [CatalogueEntry(n, s["options"].get("resources", {})) for n, s in self.catalogue.items()]
        self._desired = decide(entries, demand, running, self.min_idle)
        return len(self._desired)

    async def recommendations(self, target: int) -> dict:
        if len(self.plan) != len(self.requested):
            await self.cluster  # let pending starts and stops settle first
        plan = set(self.plan)
        up = self._desired - plan
        if up:
            self.close_counts.clear()
            return {"status": "up", "workers": sorted(up)}
        idle = plan - self._desired
        firmly = set()
        for name in idle:
            self.close_counts[name] += 1
            if self.close_counts[name] >= self.wait_count:
                firmly.add(name)
        for name in list(self.close_counts):
            if name in firmly or name not in idle:
                del self.close_counts[name]
        return {"status": "down", "workers": sorted(firmly)} if firmly else {"status": "same"}

    async def scale_up(self, workers: list[str]) -> None:  # type: ignore[override]
        import time

        now = time.time()
        errors = start_errors(self.cluster.scheduler)
        workers = [n for n in workers if now - errors.get(n, (0.0, ""))[0] >= RESTART_AFTER_S]
        self.cluster.worker_spec.update({name: self.catalogue[name] for name in workers if name in self.catalogue})
        try:
            await self.cluster._correct_state()
        except Exception as exc:  # a worker could not start: recorded on the scheduler, so work waiting for it
            from distributed.core import Status  # fails with this error at once (fanout) instead of waiting

            failed = [n for n in workers if getattr(self.cluster.workers.get(n), "status", None) == Status.failed]
            root = exc
            while root.__cause__ is not None or root.__context__ is not None:  # the worker's own error
                root = root.__cause__ or root.__context__
            transient = "name taken" in str(root)  # its previous process is still leaving the scheduler
            for name in failed or workers:
                if not transient:
                    errors[name] = (time.time(), f"{type(root).__name__}: {root}")
                self.cluster.workers.pop(name, None)  # tried again (after RESTART_AFTER_S), if still wanted
                self.cluster.worker_spec.pop(name, None)


RESTART_AFTER_S = 5.0  # a worker that failed to start is not started again sooner


def start_errors(scheduler) -> dict[str, tuple[float, str]]:
    """Worker name -> (when, error) of the embedded cluster's workers that failed to start (on the scheduler)."""
    errors = getattr(scheduler, "_burstlab_start_errors", None)
    if errors is None:
        errors = scheduler._burstlab_start_errors = {}
    return errors


__all__ = ["SLOT_PREFIX", "CatalogueEntry", "SlotAdaptive", "check_min_idle", "decide", "scheduler_demand",
           "start_errors"]
