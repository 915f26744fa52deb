"""Create -> first result through each front door, side by side with the pool itself (``bench_sandbox.py --doors``).

Doors: the pool itself (``SandboxPool.acquire``), ``burstlab.Sandbox()`` (the class: adopted by the process's
workspace as it starts, from its pool when the pool serves its settings),
``Workspace.sandbox()``, ``%%sandbox`` (a new notebook sandbox each time: ``%sandbox_close`` first), MCP's local
backend (``create_sandbox`` then ``run_cell``), and REST (``POST sandboxes`` then ``POST sandboxes/ID/execute``
through ``burstlab.client.RemoteWorkspace`` against a ``jupyter burstlab`` subprocess). Each sample is create, run
``1+1``, read the result; the close is not timed. Before each sample the workspace's pool is full again (as
between a user's requests), so no refill competes with the sample. Each door is measured twice: with the workspace's pool (as built)
and with it disabled (``c.BurstLab.sandbox_pool_size = 0``: every door starts its own sandbox, as all of them did
before issue 11).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

GOAL_MS = 20.0


def _wait_ready(ws, timeout: float = 30.0) -> None:
    pool = ws._sandboxes.pool()
    if pool is None:
        return
    deadline = time.monotonic() + timeout
    while pool.ready < pool.size:  # full, so no refill competes with the sample for the CPU
        if time.monotonic() > deadline:
            raise SystemExit("the workspace's sandbox pool did not fill within 30 s")
        time.sleep(0.01)


class _Door:
    """One way in: ``make()`` creates a sandbox and returns what ``close(handle)`` needs; timed to the first result."""

    def __init__(self, name, make, close):
        self.name, self.make, self.close = name, make, close
        self.samples: list[float] = []

    def sample(self) -> None:
        t = time.perf_counter()
        handle = self.make()
        self.samples.append((time.perf_counter() - t) * 1000)
        self.close(handle)


def _round_robin(doors: list[_Door], settle, n: int) -> None:
    """Samples taken in turn (door 1, door 2, ..., door 1, ...), so that a change in the machine's load over the
    run falls on every door alike; ``settle()`` before each (every pool full again)."""
    for _ in range(n):
        for door in doors:
            settle()
            door.sample()


def _pool_door(pool) -> _Door:
    def make():
        sb = pool.acquire(timeout=10)
        assert sb.run("1+1").text == "2"
        return sb

    return _Door("the pool itself (SandboxPool.acquire)", make, lambda sb: sb.close())


def in_process_doors(n: int, pool_size: int, bench_pool) -> dict[str, list[float]]:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from traitlets.config import Config

    import burstlab
    from burstlab.jupyter_ext.mcp import LocalBackend
    from burstlab.magics._sandbox import SandboxMagics
    from burstlab.workspace import get_workspace

    config = Config()
    config.BurstLab.sandbox_pool_size = pool_size
    ws = get_workspace(config)  # the process's workspace: %%sandbox and MCP's local backend use it too
    assert ws.config.sandbox_pool_size == pool_size, "the process workspace existed already"
    ws.sandbox(timeout=10).close()  # the first one starts the workspace's pool (and the fork server)

    def settle() -> None:
        _wait_ready(ws)
        bench_pool.start()  # the benchmark's own pool, full again

    def api():
        sb = ws.sandbox(timeout=10)
        assert sb.run("1+1").text == "2"
        return sb

    def cls():
        sb = burstlab.Sandbox(timeout=10)
        sb.start()
        assert sb.run("1+1").text == "2"
        return sb

    shell = InteractiveShell.instance()
    shell.register_magics(SandboxMagics(shell))

    def cell():
        with capture_output() as captured:
            shell.run_cell_magic("sandbox", "--timeout 10", "print(1+1)")
        assert captured.stdout == "2\n", captured.stdout

    backend = LocalBackend()

    def mcp():
        sandbox_id, sb = backend.create(10, None, False)
        assert sb.run("1+1").text == "2"
        return sandbox_id, sb

    def mcp_close(handle):
        sandbox_id, sb = handle
        sb.close()
        backend.forget(sandbox_id)

    doors = [_pool_door(bench_pool), _Door("Workspace.sandbox()", api, lambda sb: sb.close()),
             _Door("burstlab.Sandbox() (the class, adopted)", cls, lambda sb: sb.close()),
             _Door("%%sandbox", cell, lambda _: shell.run_line_magic("sandbox_close", "")),
             _Door("MCP local create_sandbox + run_cell", mcp, mcp_close)]
    _round_robin(doors, settle, n)
    InteractiveShell.clear_instance()
    ws.close()
    return {d.name: d.samples for d in doors}


def rest_door(n: int, pool_size: int, bench_pool) -> dict[str, list[float]]:
    from bench_server import Service

    from burstlab.client import RemoteWorkspace

    home = tempfile.mkdtemp(prefix="burstlab-bench-doors-")
    os.environ["BURSTLAB_SANDBOX_POOL_SIZE"] = str(pool_size)  # the service's workspace reads it
    try:
        service = Service(["agent"], home)
    finally:
        os.environ.pop("BURSTLAB_SANDBOX_POOL_SIZE", None)
    try:
        with RemoteWorkspace(service.url, service.tokens["agent"]) as rws:
            rws.sandbox(timeout=10).close()  # the first one starts the service's pool

            def settle() -> None:
                bench_pool.start()
                time.sleep(1.0)  # the service refills its pool in the background; a client cannot see it

            def rest():
                sb = rws.sandbox(timeout=10)
                assert sb.run("1+1").text == "2"
                return sb

            doors = [_pool_door(bench_pool), _Door("REST POST sandboxes + execute", rest, lambda sb: sb.close())]
            _round_robin(doors, settle, n)
            return {f"{d.name} [beside REST]" if d is doors[0] else d.name: d.samples for d in doors}
    finally:
        service.stop()


def run(n: int) -> None:
    from burstlab.sandbox import SandboxPool

    os.environ.setdefault("BURSTLAB_HOME", tempfile.mkdtemp(prefix="burstlab-bench-doors-home-"))
    results: dict[str, dict[int, list[float]]] = {}
    bench_pool = SandboxPool(size=2).start()
    try:
        for pool_size in (2, 0):
            for samples in (in_process_doors(n, pool_size, bench_pool), rest_door(n, pool_size, bench_pool)):
                for door, xs in samples.items():
                    results.setdefault(door, {})[pool_size] = xs
    finally:
        bench_pool.close()

    def cell(xs: list[float]) -> str:
        xs = sorted(xs)
        return f"{statistics.median(xs):.1f} (p95 {xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]:.1f})"

    print(f"\ncreate -> first result through each front door, ms, median (p95), n={n} each, samples in turn with "
          f"the pool itself; loadavg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
    print("| door | with the workspace's pool (as built) | pool disabled (as before) | goal <= 20 ms p50 |")
    print("|---|---:|---:|---|")
    for door, by_size in results.items():
        pooled = by_size[2]
        verdict = "-" if "pool itself" in door else "meets" if statistics.median(pooled) <= GOAL_MS else "misses"
        print(f"| {door} | {cell(pooled)} | {cell(by_size[0])} | {verdict} |")


__all__ = ["run"]
