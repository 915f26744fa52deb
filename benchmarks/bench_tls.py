"""The cost of Dask's TLS (issue 12's benchmark, fan-out half), side by side in one run: `burstlab.map`
throughput and scale-from-zero on the embedded cluster with its mutual TLS (the default) and in the clear.

    .venv/bin/python benchmarks/bench_tls.py [--quick]

Each variant runs in its own process with its own BURSTLAB_HOME (so neither joins the other's cluster); the
clear one is the embedded cluster given a certificate-less `distributed.Security()` (what `start_embedded` runs
as plain TCP; burstlab itself never does). Rows: 10,000 and 100,000 trivial inputs (items/s, median of interleaved
repeats), and scale from zero (every worker retired -> the first result of a 10-input map, median). The session
jail's half of the benchmark is bench_session_jail.py; kernel encryption's is bench_fleet.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def trivial(x):
    return x + 1


def child(clear: bool, repeats: int) -> dict:
    os.environ["BURSTLAB_DECLARED_GPUS"] = "H100:2"
    os.environ["BURSTLAB_HOME"] = tempfile.mkdtemp(prefix="burstlab-bench-tls-")
    if clear:
        from distributed import Security

        from burstlab.remote_kernel import _tls

        _tls.embedded_security = lambda home: Security()  # the benchmark's "before": no certificates, plain TCP
    import burstlab
    from burstlab import fanout

    ws = burstlab.Workspace(worker_idle_timeout=1.0, adapt_interval=0.1, kernel_pool_size=0, notebook="bench")
    out: dict = {"protocol": "", "items_s": {}, "zero_s": []}
    try:
        fanout.map(trivial, range(1000), gpu="H100", workspace=ws, progress=False)  # workers up and warm
        out["protocol"] = ws.client.scheduler.address.split("://")[0]
        for n in (10_000, 100_000):
            rates = []
            for _ in range(repeats):
                t = time.perf_counter()
                assert fanout.map(trivial, range(n), gpu="H100", workspace=ws, progress=False)[-1] == n
                rates.append(n / (time.perf_counter() - t))
            out["items_s"][str(n)] = statistics.median(rates)
        for _ in range(repeats):
            deadline = time.monotonic() + 60
            while ws.client.scheduler_info()["workers"] and time.monotonic() < deadline:
                time.sleep(0.1)  # every worker retired (idle 1 s): the next map scales from zero
            t = time.perf_counter()
            assert fanout.map(trivial, range(10), gpu="H100", workspace=ws, progress=False)[-1] == 10
            out["zero_s"].append(time.perf_counter() - t)
    finally:
        ws.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="3 repeats instead of 5")
    parser.add_argument("--child", choices=("tls", "clear"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    if args.child:
        print(json.dumps(child(args.child == "clear", repeats)))
        return
    results = {}
    for variant in ("tls", "clear"):
        cmd = [sys.executable, os.path.abspath(__file__), "--child", variant] + (["--quick"] if args.quick else [])
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            sys.exit(f"{variant} run failed:\n{p.stderr[-3000:]}")
        results[variant] = json.loads(p.stdout.strip().splitlines()[-1])
    tls, clear = results["tls"], results["clear"]
    print(f"Load average {os.getloadavg()[0]:.1f}; embedded cluster, 2 declared H100 workers; "
          f"TLS run on {tls['protocol']}://, clear run on {clear['protocol']}://\n")
    print("| measurement | TLS (default) | in the clear | TLS / clear |")
    print("|---|---|---|---|")
    for n in ("10000", "100000"):
        a, b = tls["items_s"][n], clear["items_s"][n]
        print(f"| burstlab.map, {int(n):,} trivial inputs (items/s) | {a:,.0f} | {b:,.0f} | {b / a:.2f}x time |")
    za, zb = statistics.median(tls["zero_s"]) * 1e3, statistics.median(clear["zero_s"]) * 1e3
    print(f"| scale from zero -> 10-input map done (ms) | {za:.0f} | {zb:.0f} | {za / zb:.2f}x |")


if __name__ == "__main__":
    main()
