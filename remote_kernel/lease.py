"""Leases: a GPU held by a task that runs on the GPU's Dask worker for the life of a session.

Who holds which GPU is Dask's business: a lease is ``count`` tasks, each pinned to one GPU worker
and asking for that worker's one ``{TYPE: 1}`` resource, so a fan-out task can never run on a GPU a
session holds, and vice versa. The first task (the primary) takes a kernel from the worker's pool,
points it at all the lease's GPUs, and reports its connection info through a ``distributed.Queue``.
Every task then waits until its future is released (``session.stop()``, or the notebook's Dask client
going away) or the kernel dies, and returns why it ended.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from burstlab.errors import BurstlabError, CapacityError, GpuSpecError, NoGpuError, SessionLostError
from burstlab.gpus import impossible_count_message, parse_gpu_spec
from burstlab.wire import GpuRequest, GpuSpec

from . import _held
from .cluster import Slot, inventory, slots
from .pool import kernel_ip, worker_pool

POLL_S = 0.05
START_S = 3.0  # a pinned lease task starts within this (else another session holds the GPU: look again)
CLOCK_SKEW_S = 30.0  # how far a GPU host's clock may be ahead of the notebook's
MAX_RACES = 5  # times a lease may lose the race for a free GPU and look again
_CLOSING = {"closing", "closed", "closing_gracefully", "failed"}  # worker states that end every lease on it


def _queue_name(lease_id: str) -> str:
    return f"burstlab-lease-{lease_id}"


def hold(lease_id: str, primary: bool, cuda_visible: str, gpu_type: str, pool_size: int,
         not_after: float = 0.0, isolation: dict | None = None, declared: bool = False) -> dict:
    """The lease task (runs on a GPU worker). Returns how the lease ended.

    A lease task that starts after ``not_after`` (wall clock) is a re-run: the scheduler re-queued it
    when its host went away and a host came back. Its session is over (the notebook gave up on it), so
    it takes no GPU and no kernel, and returns at once.

    ``isolation`` (``_jailed.plan``): the kernel runs in the session jail as that user, with the lease's
    GPUs only; where this host cannot build the jail (not root) a ``required`` plan fails the lease, and
    otherwise the host's plain pool kernel serves it and the ready message says why."""
    from distributed import Queue, get_worker
    from distributed.worker import thread_state

    if not_after and time.time() > not_after:
        return {"ended": "expired"}
    worker = get_worker()
    key = thread_state.key
    queue = Queue(_queue_name(lease_id))
    queue.put({"event": "started", "worker": worker.address, "at": time.time()})
    kernel = None
    held = None  # the lease's current kernel (a kernel provisioner's restart replaces it: _held.py)
    try:
        if primary:
            pool, setup, why_not = _kernel_source(worker, isolation, pool_size, gpu_type, cuda_visible, declared,
                                                   lease_id)
            kernel, warm = pool.take()
            kernel.run(setup)
            held = _held.register(lease_id, kernel, pool, setup)
            queue.put({"event": "ready", "connection": kernel.connection_info, "pid": kernel.pid,
                       "host": worker.host, "warm": warm,
                       "isolated": why_not is None, "isolation": why_not or getattr(pool, "detail", "")})
        while True:
            ts = worker.state.tasks.get(key)
            if ts is None or ts.state != "executing":
                return {"ended": "released"}
            if worker.status.name in _CLOSING:  # lost its scheduler, or told to stop: the kernel goes with it
                return {"ended": "worker-closing"}
            ended = held.ended() if held is not None else None
            if ended is not None:
                return ended
            time.sleep(POLL_S)
    except Exception as exc:
        if primary:
            queue.put({"event": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        if held is not None:
            held.close()
        elif kernel is not None:
            kernel.kill()
        try:  # the kernel is gone and this task returns: the worker can start the next one pinned to the GPU
            queue.put({"event": "ended", "worker": worker.address}, timeout=2)
        except Exception:  # the scheduler is out of reach: nobody is waiting for this
            pass


def _kernel_source(worker, isolation: dict | None, pool_size: int, gpu_type: str, cuda_visible: str,
                   declared: bool, lease_id: str) -> tuple:
    """(where the lease's kernels come from, its set-up code, None if jailed else why not)."""
    from . import _jailed

    if isolation:
        try:
            jails = _jailed.JailedKernels(kernel_ip(worker), isolation, host=worker.host, gpu_type=gpu_type,
                                          cuda_visible=cuda_visible, declared=declared, lease_id=lease_id)
            return jails, jails.setup, None
        except _jailed.IsolationUnavailable as exc:
            if isolation.get("required"):
                raise
            why = f"not isolated: fell back to a plain kernel (auto). {exc}"
    else:
        why = "not isolated: the workspace did not ask for the session jail (c.BurstLab.isolate_sessions)"
    setup = ("import os as _o; _o.environ.update(CUDA_VISIBLE_DEVICES=%r, BURSTLAB_GPU_TYPE=%r, "
             "BURSTLAB_LEASE=%r); del _o" % (cuda_visible, gpu_type, lease_id))
    return worker_pool(kernel_ip(worker), pool_size), setup, why


@dataclass
class Lease:
    """GPUs held for one session: the tasks holding them, and the primary kernel's connection."""

    id: str
    request: GpuRequest
    slots: list[Slot]
    futures: list = field(default_factory=list)
    connection: dict = field(default_factory=dict)
    kernel_pid: int = 0
    warm: bool = False
    declared: bool = False
    outcome: dict | None = None
    isolated: bool = False  # its kernel runs in the session jail (_jailed.py)
    isolation: str = ""  # how (uid, work dir, devices), or why not

    @property
    def cuda_visible(self) -> str:
        return ",".join(str(s.index) for s in self.slots)

    def ended(self) -> dict | None:
        """None while held; else why it ended ({"ended": "kernel-died", ...}), kept once known (releasing
        the lease afterwards cancels its futures, which would hide a dead kernel's exit status)."""
        if self.outcome is None:
            self.outcome = self._outcome_now()
        return self.outcome

    def _outcome_now(self) -> dict | None:
        primary = self.futures[0] if self.futures else None
        if primary is None or not primary.done():
            return None
        if primary.status == "finished":
            try:
                return primary.result(timeout=1)
            except Exception:  # it changed state meanwhile (its worker died, the client cancelled it): look again
                if primary.status == "finished":
                    raise
        if primary.status == "cancelled":
            reason = getattr(getattr(primary._state, "exception", None), "reason", None)
            if reason == "scheduler-connection-lost":  # Dask cancels every future of a client that lost it
                return {"ended": "scheduler-lost", "detail": str(getattr(primary.client.scheduler, "address", ""))}
            return {"ended": "released"}
        try:
            exc = primary.exception(timeout=1)
        except Exception as e:  # the exception itself may not deserialize
            exc = e
        return {"ended": "failed", "error": f"{type(exc).__name__}: {exc}"}

    def release(self, client) -> None:
        if self.futures:
            client.cancel(self.futures, force=True)

    def wait_released(self, client, timeout: float = 10.0) -> bool:
        """After ``release``: wait until every task of this lease has ended on its worker (the kernel is
        stopped) and the scheduler sees the GPUs free, so that "released" means another session can take
        them now. The scheduler's books alone are not enough: it frees a cancelled task's resources at
        once, while the worker still runs the task (and holds the GPU) until it has killed the kernel; a
        session started in between waited on the worker and could lose its start race (``START_S``)."""
        from distributed import Queue

        mine = {(s.host, s.type, s.index) for s in self.slots}
        deadline = time.monotonic() + timeout
        queue, ended = Queue(_queue_name(self.id), client=client), 0
        while ended < len(self.futures) and time.monotonic() < deadline:
            try:
                msg = queue.get(timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                return False
            ended += msg.get("event") == "ended"
        while time.monotonic() < deadline:
            if not any(s.busy for s in slots(client) if (s.host, s.type, s.index) in mine):
                return True
            time.sleep(0.05)
        return False


def _refuse_impossible(spec: GpuSpec, all_slots: list[Slot]) -> None:
    """A spec none of whose choices any host could hold even with every GPU free fails at once (never waits)."""
    most: dict[str, int] = {}
    for host_type, n in Counter((s.host, s.type) for s in all_slots).items():
        most[host_type[1]] = max(most.get(host_type[1], 0), n)
    present = [c for c in spec.choices if c.type in most]
    if present and all(c.count > most[c.type] for c in present):
        request = present[0]
        n = most[request.type]
        ask = f"Ask for `%%gpu {request.type}:{n}` or fewer" if n > 1 else f"Ask for `%%gpu {request.type}`"
        fix = ask + ", or add a host that has more."
        raise GpuSpecError(impossible_count_message(request, most[request.type], per="host", fix=fix))


def _choose(free: list[Slot], request: GpuRequest) -> list[Slot] | None:
    """``request.count`` free slots of the requested type on one host, or None."""
    by_host: dict[str, list[Slot]] = {}
    for s in free:
        if s.type == request.type:
            by_host.setdefault(s.host, []).append(s)
    for host_slots in by_host.values():
        if len(host_slots) >= request.count:
            return sorted(host_slots, key=lambda s: s.index)[: request.count]
    return None


def capacity_message(spec: GpuSpec, all_slots: list[Slot]) -> str:
    parts = []
    for entry in inventory(all_slots):
        if any(c.type == entry.type for c in spec.choices):
            parts.append(f"{entry.count} {entry.type} {entry.source} on {entry.host}, {entry.count - entry.free} held")
    present = {s.type for s in all_slots}
    first = next((c.type for c in spec.choices if c.type in present), spec.choices[0].type)
    others = sorted({s.type for s in all_slots} - {c.type for c in spec.choices})
    hint = f", or ask for {others[0]}" if others else ""
    return (
        f"No {spec} is free ({'; '.join(parts) or 'none'}). Wait for one with `%%gpu {spec} --wait 60`, "
        f"release one with `%gpu stop {first}`{hint}."
    )


def no_gpu_message(client=None) -> str:
    """Why there is no GPU: on an existing cluster (``client`` not of an embedded one), no worker joined it."""
    if client is not None and getattr(client, "cluster", None) is None:
        address = getattr(client.scheduler, "address", "") or "the scheduler"
        return (
            f"No GPU worker has joined the Dask scheduler at {address}. Start one on each GPU host with "
            f"`burstlab worker {address}` (add `--declare H100:1` to try without hardware), or wait for one "
            "with `%%gpu TYPE --wait 60`."
        )
    return (
        "This workspace has no GPU: NVML found none and none is declared. To try burstlab without hardware, "
        "declare some: `BURSTLAB_DECLARED_GPUS=H100:2` (or c.BurstLab.declared_gpus) before starting; to use a "
        "GPU cluster, set BURSTLAB_SCHEDULER=tcp://host:8786 where `burstlab worker` runs on the GPU hosts."
    )


def acquire(client, spec: GpuSpec, *, wait: float = 0.0, pool_size: int = 1, start_timeout: float = 60.0,
            isolation: dict | None = None) -> Lease:
    """Hold GPUs matching ``spec`` (its first choice that has enough free), or raise CapacityError.

    ``isolation`` (``_jailed.plan``) starts the session's kernel in the session jail on the GPU host.

    With ``wait > 0`` keeps trying for that many seconds. Two notebooks racing for the last GPU get
    one lease and one CapacityError: the worker runs one ``{TYPE: 1}`` task at a time, and a lease
    whose task does not start promptly is withdrawn and retried against fresh inventory.
    """
    deadline = time.monotonic() + wait
    races = 0
    while True:
        all_slots = slots(client)
        if not {c.type for c in spec.choices} & {s.type for s in all_slots} and time.monotonic() < deadline:
            time.sleep(0.2)  # no such GPU yet: a worker that has it may join while we wait
            continue
        if not all_slots:
            raise NoGpuError(no_gpu_message(client))
        parse_gpu_spec(spec, available={s.type for s in all_slots})  # raises, listing the types there are
        _refuse_impossible(spec, all_slots)
        free = [s for s in all_slots if not s.busy]
        for request in spec.choices:
            chosen = _choose(free, request)
            if chosen is not None and not all(s.up for s in chosen):
                _wake(client, chosen, start_timeout)
                break  # look again with the workers up
            if chosen is not None:
                lease = _try_hold(client, request, chosen, pool_size, start_timeout, isolation)
                if lease is not None:
                    return lease
                races += 1
                if races <= MAX_RACES:
                    break  # another session took it first: read inventory again
        else:
            if time.monotonic() >= deadline:
                raise CapacityError(capacity_message(spec, all_slots))
            time.sleep(0.2)


def _wake(client, chosen: list[Slot], timeout: float) -> None:
    """Bring up the scaled-down workers of ``chosen``: a no-op task asking for each one's slot resource
    makes the embedded cluster's adaptive loop start it (then it idles until the lease arrives)."""
    futures = [client.submit(time.time, key=f"burstlab-wake-{uuid.uuid4().hex[:12]}", pure=False,
                             resources={s.type: 1, s.resource: 1}) for s in chosen if not s.up and s.resource]
    manager = getattr(client, "cluster", None)
    if futures and manager is not None and getattr(manager, "name", "") != "burstlab-embedded":
        import sys  # a cluster manager's worker may take a while (a batch queue): say what is happening

        sys.stderr.write(f"[burstlab: starting {len(futures)} {chosen[0].type} worker{'s' if len(futures) > 1 else ''} "
                         f"via {type(manager).__name__}…]\n")
    try:
        deadline = time.monotonic() + timeout
        for future in futures:
            future.result(timeout=max(0.01, deadline - time.monotonic()))
    except TimeoutError as exc:
        raise SessionLostError(
            f"The worker for {chosen[0].type} on {chosen[0].host} did not start within {timeout:.0f} s."
        ) from exc
    finally:
        client.cancel(futures, force=True)


def _pin(slot: Slot, gpu_type: str) -> dict:
    """Submit options that tie a lease task to exactly ``slot``'s GPU."""
    if slot.resource:  # a burstlab worker: its slot resource, which works while the worker is down too
        return {"resources": {gpu_type: 1, slot.resource: 1}}
    return {"resources": {gpu_type: 1}, "workers": [slot.address], "allow_other_workers": False}


def _try_hold(client, request: GpuRequest, chosen: list[Slot], pool_size: int, start_timeout: float,
              isolation: dict | None = None) -> Lease | None:
    from distributed import Queue

    lease = Lease(id=uuid.uuid4().hex[:12], request=request, slots=chosen,
                  declared=all(s.source == "declared" for s in chosen))
    queue = Queue(_queue_name(lease.id), client=client)
    lease.futures = [
        client.submit(
            hold, lease.id, i == 0, lease.cuda_visible, request.type, pool_size, time.time() + START_S + CLOCK_SKEW_S,
            isolation if i == 0 else None, lease.declared,
            key=f"burstlab-lease-{request.type}-{lease.id}-{i}", pure=False, **_pin(s, request.type),
        )
        for i, s in enumerate(chosen)
    ]
    try:
        started = 0
        ready = None
        # Each pinned task starts within milliseconds if its GPU was free; if another session took
        # it in the meantime, the task waits on the worker and we withdraw and look again. Events of
        # different tasks arrive in any order: the primary may be ready before a secondary started.
        start_deadline = time.monotonic() + START_S
        ready_deadline = start_deadline + start_timeout
        while started < len(chosen) or ready is None:
            deadline = start_deadline if started < len(chosen) else ready_deadline
            msg = queue.get(timeout=max(0.01, deadline - time.monotonic()))
            if msg.get("event") == "started":
                started += 1
            elif msg.get("event") == "ready":
                ready = msg
            elif msg.get("event") == "failed":
                lease.release(client)
                raise SessionLostError(f"The remote kernel could not start on {chosen[0].host}: {msg['error']}")
        lease.connection = ready["connection"]
        lease.kernel_pid = ready["pid"]
        lease.warm = ready["warm"]
        lease.isolated, lease.isolation = bool(ready.get("isolated")), str(ready.get("isolation", ""))
        return lease
    except (TimeoutError, BurstlabError) as exc:
        lease.release(client)
        if isinstance(exc, BurstlabError):
            raise
        if started < len(chosen):
            return None  # raced for the GPU: look again
        raise SessionLostError(
            f"The remote kernel on {chosen[0].host} did not start within {start_timeout:.0f} s."
        ) from exc
    except BaseException:
        lease.release(client)
        raise
    finally:
        queue.close()


__all__ = ["Lease", "acquire", "capacity_message", "hold", "no_gpu_message"]
