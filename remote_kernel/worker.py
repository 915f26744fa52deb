"""``burstlab worker tls://scheduler:8786``: serve this host's GPUs to an existing Dask cluster.

One Nanny per GPU (NVML's, or the declared ones), each pinned to its GPU, as the embedded cluster
lays them out (:func:`.cluster.worker_spec`). TLS comes from Dask's own configuration
(``distributed.comm.tls.*`` or the ``DASK_DISTRIBUTED__COMM__TLS__…`` variables).

Dask workers do not reconnect: a worker that loses its scheduler (the scheduler restarted, or the
network was cut long enough for the scheduler to drop it) closes, and its Nanny with it. This command
supervises each GPU's Nanny and starts a fresh one, retrying for up to ``give_up`` seconds
(``--give-up``, default one hour) before it exits with an error naming the scheduler.

Worker names carry the host (``burstlab/HOST/TYPE/INDEX/SOURCE``); when another machine with the same
host name already serves this scheduler, this one calls itself ``HOST@ADDRESS`` so both stay in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sys
import time

from burstlab.gpus import discover

from .cluster import NAME_PREFIX, worker_spec

log = logging.getLogger("burstlab.worker")

GIVE_UP_S = 3600.0
RETRY_S = 1.0


def _say(text: str) -> None:
    print(f"burstlab worker: {text}", file=sys.stderr, flush=True)


def _fleet_address(scheduler: str) -> str:
    """The address this host reaches the scheduler from: what its workers and kernels bind."""
    from distributed.comm import get_address_host
    from distributed.utils import get_ip

    host = get_address_host(scheduler)
    try:
        return get_ip(host)
    except OSError:
        return get_ip()


async def _taken_host_labels(scheduler: str, timeout: float) -> dict[str, set[str]]:
    """``{host label: {worker host addresses}}`` of the burstlab workers the scheduler knows now."""
    from distributed import Client

    async with Client(scheduler, asynchronous=True, timeout=timeout) as client:
        info = await client.scheduler.identity(n_workers=-1)
    out: dict[str, set[str]] = {}
    for ws in info.get("workers", {}).values():
        parts = str(ws.get("name", "")).split("/")
        if len(parts) == 5 and parts[0] == NAME_PREFIX:
            out.setdefault(parts[1], set()).add(ws.get("host", ""))
    return out


def host_label(hostname: str, address: str, taken: dict[str, set[str]]) -> str:
    """This host's label in worker names: its host name, unless another machine uses it already."""
    if hostname not in taken or taken[hostname] <= {address}:
        return hostname
    return f"{hostname}@{address}"


async def _supervise(scheduler: str, options: dict, give_up: float, stopping: asyncio.Event, label: str) -> None:
    """Keep one GPU's Nanny connected to ``scheduler``; give up after ``give_up`` s without one."""
    from distributed import Nanny

    down_since: float | None = None
    while not stopping.is_set():
        remaining = give_up if down_since is None else give_up - (time.monotonic() - down_since)
        if remaining <= 0:
            raise SystemExit(f"burstlab worker: gave up on the scheduler at {scheduler} after {give_up:g} s "
                             f"({label}); start `burstlab worker` again once it is back, or raise --give-up.")
        try:
            nanny = await Nanny(scheduler, death_timeout=max(1.0, remaining), **options)
        except Exception as exc:  # scheduler away (OSError, TimeoutError) or it refused us for now
            if down_since is None:
                down_since = time.monotonic()
                _say(f"{label}: cannot reach {scheduler} ({type(exc).__name__}: {exc}); retrying for "
                     f"up to {give_up:g} s")
            await _sleep_unless(stopping, RETRY_S)
            continue
        if down_since is not None:
            _say(f"{label}: back in {scheduler} after {time.monotonic() - down_since:.1f} s")
        down_since = None
        finished = asyncio.ensure_future(nanny.finished())
        stop = asyncio.ensure_future(stopping.wait())
        await asyncio.wait([finished, stop], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if stopping.is_set():
            await nanny.close(timeout=5)
            return
        down_since = time.monotonic()
        _say(f"{label}: lost {scheduler}; reconnecting for up to {give_up:g} s")
        await nanny.close(timeout=5)
        await _sleep_unless(stopping, RETRY_S)


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), seconds)
    except asyncio.TimeoutError:
        pass


def run_worker(scheduler: str, declared: str = "", nthreads: int = 2, host: str | None = None, *,
               give_up: float = GIVE_UP_S, kernel_ip: str | None = None, connect_timeout: float = 10.0,
               pool_size: int = 1) -> None:
    """Serve this host's GPUs to ``scheduler`` until SIGINT/SIGTERM (or ``give_up`` s without it)."""
    from .pool import KernelPoolPlugin

    hostname = socket.gethostname()
    gpus = discover(declared, host=hostname)
    if not gpus:
        raise SystemExit(
            "No GPU found through NVML and none declared. Declare some with --declare H100:2 "
            "(or BURSTLAB_DECLARED_GPUS) to test without hardware."
        )

    async def _main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        address = host or _fleet_address(scheduler)
        label = hostname
        deadline = time.monotonic() + give_up
        while not stopping.is_set():  # the scheduler may not be up yet: wait for it as for a restart
            try:
                wait = max(1.0, min(connect_timeout, deadline - time.monotonic()))
                label = host_label(hostname, address, await _taken_host_labels(scheduler, wait))
                break
            except (OSError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise SystemExit(f"burstlab worker: cannot reach the scheduler at {scheduler} ({exc}); "
                                     "check the address and Dask's TLS settings (distributed.comm.tls.*).") from exc
                await _sleep_unless(stopping, RETRY_S)
        tasks = []
        for gpu in gpus:
            gpu = dataclasses.replace(gpu, host=label)
            options = worker_spec(gpu, nthreads, host=address)["options"]
            options.pop("death_timeout")
            options.pop("dashboard_address", None)
            if kernel_ip:
                options["env"] = {**options["env"], "BURSTLAB_KERNEL_IP": kernel_ip}
            if pool_size > 0:  # warm kernels from the start, and again after rejoining a new scheduler
                options["plugins"] = (KernelPoolPlugin(pool_size),)
            tasks.append(asyncio.ensure_future(
                _supervise(scheduler, options, give_up, stopping, f"{gpu.type}#{gpu.index}")))
        _say(f"serving {len(gpus)} GPU(s) as {label} ({address}) to {scheduler}: "
             + ", ".join(f"{g.type}#{g.index} ({g.source})" for g in gpus))
        if os.geteuid() != 0:  # c.BurstLab.isolate_sessions: True fails here, "auto" runs plain kernels
            _say("not root: session kernels cannot run in the session jail on this host (sessions that require it "
                 "fail; under isolate_sessions='auto' they run unjailed, and their records say so)")
        try:
            await asyncio.gather(*tasks)
        finally:
            stopping.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(_main())


def main_args(parser) -> None:
    """The ``burstlab worker`` command's arguments."""
    parser.add_argument("scheduler", help="the scheduler's address, e.g. tls://10.0.0.2:8786")
    parser.add_argument("--declare", default=os.environ.get("BURSTLAB_DECLARED_GPUS", ""),
                        help="GPUs to declare if NVML finds none, e.g. H100:2")
    parser.add_argument("--nthreads", type=int, default=2)
    parser.add_argument("--host", default=None,
                        help="address the workers and kernels bind (default: the one that reaches the scheduler)")
    parser.add_argument("--kernel-ip", default=None, help="address kernels bind, if not --host's")
    parser.add_argument("--pool-size", type=int, default=1, help="pre-started kernels kept ready per GPU (0: none)")
    parser.add_argument("--give-up", type=float, default=float(os.environ.get("BURSTLAB_WORKER_GIVE_UP", GIVE_UP_S)),
                        help="seconds to keep reconnecting to a scheduler that went away (default 3600)")


def main(args) -> int:
    logging.basicConfig(level=logging.WARNING)
    run_worker(args.scheduler, declared=args.declare, nthreads=args.nthreads, host=args.host,
               give_up=args.give_up, kernel_ip=args.kernel_ip, pool_size=args.pool_size)
    return 0


__all__ = ["host_label", "main", "main_args", "run_worker"]
