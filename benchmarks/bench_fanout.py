"""Fan-out, side by side: burstlab.map vs raw client.map + gather (same cluster) vs ipyparallel map_sync.

    .venv/bin/python benchmarks/bench_fanout.py [--quick]

Prints items/s and ratios, and the scale-from-zero / scale-to-zero times of the embedded cluster.
Goals (issue 3): >= 5x raw client.map for trivial items; zero workers -> first result < 0.5 s.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def trivial(x):
    return x + 1


def bench_map(ws, n):
    from burstlab import fanout

    client = ws.client
    fanout.map(trivial, range(100), gpu="H100", workspace=ws, progress=False)  # warm: workers up
    t = time.perf_counter()
    out = fanout.map(trivial, range(n), gpu="H100", workspace=ws, progress=False)
    ours = n / (time.perf_counter() - t)
    assert out[-1] == n
    t = time.perf_counter()
    futures = client.map(trivial, range(n), resources={"H100": 1}, pure=False)
    client.gather(futures)
    raw = n / (time.perf_counter() - t)
    del futures
    return ours, raw


def bench_scale(ws, idle):
    from burstlab import fanout
    from burstlab.remote_kernel.cluster import supply

    def up():
        return supply(ws.client)[""][1]

    deadline = time.monotonic() + idle + 30
    while up() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert up() == 0, "workers did not scale to zero"
    t = time.perf_counter()
    fanout.map(trivial, [1], gpu="H100", workspace=ws, progress=False)
    first = time.perf_counter() - t
    t = time.perf_counter()
    while up():
        time.sleep(0.01)
    to_zero = time.perf_counter() - t
    return first, to_zero


def bench_ipyparallel(n):
    import ipyparallel as ipp

    cluster = ipp.Cluster(n=2, log_level=40, controller_args=["--HeartMonitor.period=200"])
    rc = cluster.start_and_connect_sync()
    try:
        rc.wait_for_engines(2, timeout=60)
        view = rc.load_balanced_view()
        view.map_sync(trivial, range(10))
        t = time.perf_counter()
        view.map_sync(trivial, range(n))
        return n / (time.perf_counter() - t)
    finally:
        rc.close()
        cluster.stop_cluster_sync()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer items and repeats")
    args = parser.parse_args()
    os.environ.setdefault("BURSTLAB_DECLARED_GPUS", "H100:2")
    os.environ.setdefault("BURSTLAB_HOME", tempfile.mkdtemp(prefix="burstlab-bench-"))
    import burstlab

    n_map, n_ipp, repeats = (2_000, 500, 1) if args.quick else (10_000, 2_000, 3)
    idle = 0.5
    ws = burstlab.Workspace(worker_idle_timeout=idle, kernel_pool_size=0, notebook="bench")
    try:
        maps = [bench_map(ws, n_map) for _ in range(repeats)]
        ours = sorted(m[0] for m in maps)[len(maps) // 2]
        raw = sorted(m[1] for m in maps)[len(maps) // 2]
        scales = [bench_scale(ws, idle) for _ in range(repeats + 2)]
        first = sorted(s[0] for s in scales)[len(scales) // 2]
        to_zero = sorted(s[1] for s in scales)[len(scales) // 2]
        small = [bench_map(ws, n_ipp)[0] for _ in range(repeats)]
        ours_small = sorted(small)[len(small) // 2]
    finally:
        ws.close()
    ipp_rate = bench_ipyparallel(n_ipp)
    print(f"{n_map:,} trivial inputs, 2 declared H100 workers (median of {repeats}):")
    print(f"  burstlab.map            {ours:10,.0f} items/s")
    print(f"  raw client.map+gather   {raw:10,.0f} items/s   ratio {ours / raw:5.1f}x  (goal >= 5x)")
    print(f"scale from zero -> first result {first:.3f} s (goal < 0.5 s); idle ({idle:g} s window) -> zero "
          f"workers {to_zero:.3f} s after the result")
    print(f"{n_ipp:,} trivial inputs:")
    print(f"  burstlab.map            {ours_small:10,.0f} items/s")
    print(f"  ipyparallel map_sync    {ipp_rate:10,.0f} items/s   ratio {ours_small / ipp_rate:5.1f}x")


if __name__ == "__main__":
    main()
