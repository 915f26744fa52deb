"""A whole notebook on a GPU: the burstlab kernel provisioner against a local ipykernel.

    .venv/bin/python benchmarks/bench_kernels.py            # 8 starts each, 300 round trips
    .venv/bin/python benchmarks/bench_kernels.py --quick    # 3 starts each, 100 round trips

Both kernels are driven by jupyter_client's KernelManager, the object a Jupyter server holds per kernel
(the server's websocket hop comes on top of both alike), from the kernelspecs a launcher shows:
"Python 3 (burstlab · H100)" (declared GPUs, embedded cluster, warm pool of one kernel per GPU worker)
and the local "python3".

1. start -> first ``execute_reply``: ``start_kernel()``, a client, ``wait_for_ready``, then ``1+1``;
   the burstlab start leases the GPU (scheduler round trips, a meter interval, a registry record) and
   takes the pool's pre-started kernel; each start waits for the pool to have refilled, and the table
   says how many starts found it warm;
2. warm execute round trip of ``1+1`` (execute_request -> execute_reply and idle), on one kernel each,
   interleaved. Pool kernels run with IPython's history database off (``--HistoryManager.enabled=False``);
   the local kernel writes each cell to it, as a local kernel does.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import median, print_table, row  # noqa: E402


def start_to_first_reply(kernel_name: str):
    from jupyter_client import KernelManager

    t = time.perf_counter()
    km = KernelManager(kernel_name=kernel_name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)
    reply = kc.execute_interactive("1+1", timeout=60, output_hook=lambda m: None)
    elapsed = time.perf_counter() - t
    assert reply["content"]["status"] == "ok", reply
    return elapsed, km, kc


def round_trips(clients: list, n: int) -> list[list[float]]:
    """``n`` round trips on each client, interleaved (one on each in turn), so that load from elsewhere on
    the machine falls on both alike."""
    out: list[list[float]] = [[] for _ in clients]
    for _ in range(n + 5):
        for kc, times in zip(clients, out):
            t = time.perf_counter()
            reply = kc.execute_interactive("1+1", timeout=60, output_hook=lambda m: None)
            times.append(time.perf_counter() - t)
            assert reply["content"]["status"] == "ok"
    return [times[5:] for times in out]


def stop(km, kc) -> None:
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    starts, trips = (3, 100) if args.quick else (8, 300)

    home = tempfile.mkdtemp(prefix="burstlab-bench-kernels-")
    os.environ["BURSTLAB_HOME"] = home
    os.environ.setdefault("BURSTLAB_DECLARED_GPUS", "H100:1")
    os.environ["BURSTLAB_NOTEBOOK"] = "bench_kernels"
    from burstlab.remote_kernel import _kernelspecs
    from burstlab.workspace import get_workspace

    _kernelspecs.install(["H100"], prefix=home)
    os.environ["JUPYTER_PATH"] = os.path.join(home, "share", "jupyter")
    ws = get_workspace()
    try:
        # Warm-up: the embedded cluster, the GPU worker and its pool come up once.
        _, km, kc = start_to_first_reply("burstlab-h100")
        stop(km, kc)
        _, km, kc = start_to_first_reply("python3")
        stop(km, kc)

        gpu, local, warm = [], [], 0
        for _ in range(starts):
            time.sleep(3.0)  # the pool refills in the background after each take
            t, km, kc = start_to_first_reply("burstlab-h100")
            session = ws.get_session(km.provisioner.session_id)
            warm += bool(session.lease.warm)
            gpu.append(t)
            stop(km, kc)
            t, km, kc = start_to_first_reply("python3")
            local.append(t)
            stop(km, kc)

        _, gkm, gkc = start_to_first_reply("burstlab-h100")
        _, lkm, lkc = start_to_first_reply("python3")
        try:
            g_rt, l_rt = round_trips([gkc, lkc], trips)
        finally:
            stop(gkm, gkc)
            stop(lkm, lkc)
    finally:
        ws.close()

    print_table("Start -> first execute_reply (KernelManager, as a Jupyter server holds it)", [
        row(f"burstlab · H100 (warm pool: {warm}/{starts})", gpu),
        row("local python3 (ipykernel)", local),
    ])
    print(f"\n- start: burstlab / local = {median(gpu) / median(local):.2f}x (goal: < 1, faster than a local start)")
    print_table("Warm execute round trip of `1+1`", [
        row("burstlab · H100", g_rt),
        row("local python3", l_rt),
    ])
    print(f"\n- round trip: burstlab / local = {median(g_rt) / median(l_rt):.2f}x (goal: <= 1.1x on one host)")


if __name__ == "__main__":
    main()
