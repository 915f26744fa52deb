"""The session jail's cost (c.BurstLab.isolate_sessions), side by side in one run (issue 12's benchmark, GPU half).

    .venv/bin/python benchmarks/bench_session_jail.py [-n 10]

Rows, each a median over n samples taken in turn (plain, jailed, plain, ...) so the machine's load falls on both:
session start -> first output (``Workspace.session`` + a cell that prints, until its stdout arrives), with the
host's warm pool (plain) and with the jail (each session a fresh jail); and the warm round trip of a one-line cell
on a running session (20 per session). Declared GPUs on the embedded cluster; needs root. Prints the load
average beside it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=10)
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between samples (the pool refills)")
    args = parser.parse_args()
    os.environ.setdefault("BURSTLAB_DECLARED_GPUS", "H100:2")
    import tempfile

    os.environ.setdefault("BURSTLAB_SESSION_WORK_ROOT", tempfile.mkdtemp(prefix="bench-users-"))
    import burstlab

    ws = burstlab.Workspace(environment="off", idle_timeout=0, kernel_pool_size=1)
    start: dict[str, list[float]] = {"plain": [], "jailed": []}
    rtt: dict[str, list[float]] = {"plain": [], "jailed": []}
    lost = {"plain": 0, "jailed": 0}
    warm = {"plain": 0, "jailed": 0}
    try:
        for mode in ("plain", "jailed"):  # warm-up: the cluster, the pool, the fork server of the jail
            ws.config.isolate_sessions = mode == "jailed"
            s = ws.session("H100", user="bench", reuse=False)
            s.execute_sync("print(1)")
            s.stop()
        for _ in range(args.n):
            for mode in ("plain", "jailed"):
                ws.config.isolate_sessions = mode == "jailed"
                first: list[float] = []
                t0 = time.perf_counter()
                s = ws.session("H100", user="bench", reuse=False)
                s.execute_sync("print('hello')", on_output=lambda o: first or first.append(time.perf_counter()))
                if not first:  # the cell's output never came (a lost iopub subscription race): say so
                    lost[mode] += 1
                    first.append(time.perf_counter())
                start[mode].append(first[0] - t0)
                assert s.lease.isolated == (mode == "jailed"), s.lease.isolation
                warm[mode] += s.lease.warm
                for _ in range(20):
                    t = time.perf_counter()
                    s.execute_sync("1")
                    rtt[mode].append(time.perf_counter() - t)
                s.stop()
                time.sleep(args.settle)  # off the clock: the pool refills (a warm start is what is measured)
    finally:
        ws.close()
    load = os.getloadavg()
    print(f"n={args.n}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}, {os.cpu_count()} cores")
    print(f"{'':44} {'plain (warm pool)':>18} {'jailed':>10} {'diff':>9}")
    for name, rows in (("session start -> first output (ms)", start),
                       ("warm round trip of `1` (ms, 20 per session)", rtt)):
        p, j = (statistics.median(rows[m]) * 1000 for m in ("plain", "jailed"))
        print(f"{name:44} {p:18.1f} {j:10.1f} {j - p:+9.1f}")
    print(f"plain starts that took a warm pool kernel: {warm['plain']} of {args.n} (a jail is always started fresh)")
    print(f"first outputs that never arrived: plain {lost['plain']}, jailed {lost['jailed']} (of {args.n} each)")


if __name__ == "__main__":
    main()
