"""Create -> first result through each front door, side by side with the pool itself (``bench_sandbox.py --doors``).

Doors: the pool itself (``SandboxPool.acquire``), ``burstlab.Sandbox()`` (the class: never pooled),
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


def _timed(setup, create_and_run, teardown, n: int) -> list[float]:
    out = []
    for _ in range(n):
        setup()
        t = time.perf_counter()
        handle = create_and_run()
        out.append((time.perf_counter() - t) * 1000)
        teardown(handle)
    return out


def in_process_doors(n: int, pool_size: int) -> dict[str, list[float]]:
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
    out: dict[str, list[float]] = {}

    def ready() -> None:
        _wait_ready(ws)

    def api():
        sb = ws.sandbox(timeout=10)
        assert sb.run("1+1").text == "2"
        return sb

    ws.sandbox(timeout=10).close()  # the first one starts the pool (and the fork server)
    out["Workspace.sandbox()"] = _timed(ready, api, lambda sb: sb.close(), n)

    def cls():
        sb = burstlab.Sandbox(timeout=10)
        sb.start()
        assert sb.run("1+1").text == "2"
        return sb

    out["burstlab.Sandbox() (the class)"] = _timed(ready, cls, lambda sb: sb.close(), n)

    shell = InteractiveShell.instance()
    magics = SandboxMagics(shell)
    shell.register_magics(magics)

    def cell():
        with capture_output() as captured:
            shell.run_cell_magic("sandbox", "--timeout 10", "print(1+1)")
        assert captured.stdout == "2\n", captured.stdout
        return None

    def close_notebook_sandbox(_):
        shell.run_line_magic("sandbox_close", "")

    out["%%sandbox"] = _timed(ready, cell, close_notebook_sandbox, n)
    InteractiveShell.clear_instance()

    backend = LocalBackend()

    def mcp():
        sandbox_id, sb = backend.create(10, None, False)
        assert sb.run("1+1").text == "2"
        return sandbox_id, sb

    def mcp_close(handle):
        sandbox_id, sb = handle
        sb.close()
        backend.forget(sandbox_id)

    out["MCP local create_sandbox + run_cell"] = _timed(ready, mcp, mcp_close, n)
    ws.close()
    return out


def rest_door(n: int, pool_size: int) -> list[float]:
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

            def ready() -> None:
                time.sleep(1.0)  # the service refills its pool in the background; a client cannot see it

            def rest():
                sb = rws.sandbox(timeout=10)
                assert sb.run("1+1").text == "2"
                return sb

            return _timed(ready, rest, lambda sb: sb.close(), n)
    finally:
        service.stop()


def pool_itself(n: int) -> list[float]:
    from burstlab.sandbox import SandboxPool

    pool = SandboxPool(size=2).start()
    samples = []
    for _ in range(n):
        pool.start()  # refilled: each sample finds a ready sandbox
        t = time.perf_counter()
        sb = pool.acquire(timeout=10)
        assert sb.run("1+1").text == "2"
        samples.append((time.perf_counter() - t) * 1000)
        sb.close()
    pool.close()
    return samples


def run(n: int) -> None:
    os.environ.setdefault("BURSTLAB_HOME", tempfile.mkdtemp(prefix="burstlab-bench-doors-home-"))
    results: dict[str, dict[int, list[float]]] = {}
    for pool_size in (2, 0):
        for door, samples in in_process_doors(n, pool_size).items():
            results.setdefault(door, {})[pool_size] = samples
        results.setdefault("REST POST sandboxes + execute", {})[pool_size] = rest_door(n, pool_size)
    mine = pool_itself(n)

    def cell(xs: list[float]) -> str:
        xs = sorted(xs)
        return f"{statistics.median(xs):.1f} (p95 {xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]:.1f})"

    print(f"\ncreate -> first result through each front door, ms (n={n}); the pool itself: {cell(mine)}")
    print("| door | workspace pool (as built) | pool disabled (as before) | goal |")
    print("|---|---:|---:|---|")
    for door, by_size in results.items():
        pooled = by_size[2]
        verdict = "never pooled (the class)" if "class" in door else (
            "meets" if statistics.median(pooled) <= GOAL_MS else "misses")
        print(f"| {door} | {cell(pooled)} | {cell(by_size[0])} | <= {GOAL_MS:g} ms p50: {verdict} |")


__all__ = ["run"]
