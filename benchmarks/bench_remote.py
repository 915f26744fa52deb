"""%%gpu side by side: burstlab vs raw jupyter_client vs ipyparallel, on this machine, declared GPUs.

    python benchmarks/bench_remote.py [--quick]

1. new session -> first output: burstlab from the warm pool, burstlab with no pool, raw jupyter_client start
   (execute sent right after start_channels: the fastest raw path);
2. warm cell round trip: burstlab API, the %%gpu magic in an IPython shell, raw jupyter_client on a kernel of the
   same kind, ipyparallel `%px` (`rc[0].execute(..., block=True)`);
3. pushing a 100 MiB numpy array: burstlab push vs cloudpickle dumps+loads (in-band) vs a memory copy.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("BURSTLAB_DECLARED_GPUS", "H100:2")
os.environ.setdefault("BURSTLAB_HOME", tempfile.mkdtemp(prefix="burstlab-bench-"))

from _common import median, print_table, ratio, row, timeit  # noqa: E402


def first_output_raw() -> float:
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    t = time.perf_counter()
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    msg_id = kc.execute("print(1)")
    # The shell reply, not the iopub stream: a SUB socket that connects while the kernel starts can miss
    # the first published messages, while the shell channel queues them (the reply follows the output).
    while True:
        msg = kc.get_shell_msg(timeout=60)
        if msg["parent_header"].get("msg_id") == msg_id:
            break
    elapsed = time.perf_counter() - t
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    return elapsed


def first_output_burstlab(ws, refill_wait: float) -> float:
    t = time.perf_counter()
    session = ws.session("H100")
    got = []
    session.execute_sync("print(1)", on_output=lambda o: got.append(time.perf_counter()))
    elapsed = got[0] - t
    session.stop()
    time.sleep(refill_wait)  # let the pool refill, as it does between a user's sessions
    return elapsed


def raw_client_roundtrip(connection_info):
    from jupyter_client import BlockingKernelClient

    kc = BlockingKernelClient()
    kc.load_connection_info(connection_info)
    kc.start_channels()
    kc.wait_for_ready(timeout=30)

    def once():
        msg_id = kc.execute("1+1")
        idle = reply = False
        while not (idle and reply):
            if not idle:
                m = kc.get_iopub_msg(timeout=10)
                if m["parent_header"].get("msg_id") == msg_id and m["header"]["msg_type"] == "status" \
                        and m["content"]["execution_state"] == "idle":
                    idle = True
            else:
                m = kc.get_shell_msg(timeout=10)
                reply = m["parent_header"].get("msg_id") == msg_id

    return kc, once


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n_start, n_warm, n_push = (3, 50, 3) if args.quick else (10, 300, 10)

    import numpy as np

    import burstlab

    print(f"# burstlab %%gpu benchmark ({'quick' if args.quick else 'full'}; {os.cpu_count()} cores; declared GPUs)")

    # 1. new session -> first output
    ws = burstlab.Workspace(notebook="bench")
    cold_ws = burstlab.Workspace(notebook="bench-cold", kernel_pool_size=0, scheduler="")
    ws.hosts(), cold_ws.hosts()
    time.sleep(3)  # pools fill
    pool, nopool, raw = [], [], []
    first_output_raw()  # warm the page cache
    for _ in range(n_start):  # interleaved round-robin
        pool.append(first_output_burstlab(ws, refill_wait=2.0))
        nopool.append(first_output_burstlab(cold_ws, refill_wait=0))
        raw.append(first_output_raw())
    cold_ws.close()
    print_table("new session -> first output", [
        row("burstlab, warm pool", pool), row("burstlab, no pool (cold kernel)", nopool),
        row("raw jupyter_client start, execute at once (to execute_reply)", raw)])
    print(ratio("warm pool vs raw jupyter_client start", median(pool), median(raw), "first output < 50 ms"))
    print(f"- warm pool first output: {median(pool) * 1e3:.1f} ms median")

    # 2. warm round trip
    session = ws.session("H100")
    api = timeit(lambda: session.execute_sync("1+1"), n_warm, warmup=10)
    kc, once = raw_client_roundtrip(session.lease.connection)
    raw_rt = timeit(once, n_warm, warmup=10)
    kc.stop_channels()

    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    import burstlab.workspace.workspace as wsmod

    wsmod._workspace = ws  # the magic uses this workspace
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "burstlab")

    def magic():
        with capture_output():
            shell.run_cell("%%gpu H100 --quiet\n1+1", store_history=False)

    magic_rt = timeit(magic, n_warm, warmup=10)
    kc2, once2 = raw_client_roundtrip(session.lease.connection)
    shell.user_ns["_raw_once"] = once2

    def raw_in_cell():
        shell.run_cell("_raw_once()", store_history=False)

    raw_cell_rt = timeit(raw_in_cell, n_warm, warmup=10)
    kc2.stop_channels()

    rows = [row("burstlab session.execute_sync('1+1')", api), row("burstlab %%gpu cell (IPython shell)", magic_rt),
            row("raw jupyter_client execute, same kernel kind", raw_rt),
            row("raw jupyter_client execute called from an IPython cell", raw_cell_rt)]
    ipp = None
    try:
        import ipyparallel as ipp_mod

        cluster = ipp_mod.Cluster(n=1, controller_args=["--HeartMonitor.period=200"], log_level=40)
        rc = cluster.start_and_connect_sync()
        rc.wait_for_engines(1, timeout=60)
        ipp = timeit(lambda: rc[0].execute("a=1+1", block=True), n_warm, warmup=10)
        rows.append(row("ipyparallel %px (rc[0].execute, block)", ipp))
        rc.close()
        cluster.stop_cluster_sync()
    except Exception as exc:  # ipyparallel is a bench extra
        print(f"(ipyparallel skipped: {exc})")
    print_table("warm cell round trip", rows)
    print(ratio("burstlab API vs raw jupyter_client", median(api), median(raw_rt), "<= 1.2x"))
    print(ratio("%%gpu magic vs raw jupyter_client", median(magic_rt), median(raw_rt)))
    print(ratio("%%gpu magic vs raw jupyter_client, both run as an IPython cell", median(magic_rt), median(raw_cell_rt),
                "<= 1.2x"))
    if ipp:
        print(ratio("burstlab API vs ipyparallel %px", median(api), median(ipp)))

    # 3. push 100 MiB
    import cloudpickle

    arr = np.random.default_rng(0).random(100 * 1024 * 1024 // 8)
    nbytes = arr.nbytes
    dst = np.empty_like(arr)
    push, inband, memcpy = [], [], []
    for _ in range(n_push):  # interleaved round-robin: the machine's load hits all three alike
        push += timeit(lambda: session.push_sync({"big": arr}), 1, warmup=0)
        inband += timeit(lambda: cloudpickle.loads(cloudpickle.dumps(arr, protocol=5)), 1, warmup=0)
        memcpy += timeit(lambda: np.copyto(dst, arr), 1, warmup=0)
    check = session.execute_sync("float(big[:1000].sum())").text
    assert abs(float(check) - float(arr[:1000].sum())) < 1e-6, check
    gbps = lambda xs: nbytes / median(xs) / 1e9  # noqa: E731
    print_table("push a 100 MiB float64 array", [
        row("burstlab push (comm, out-of-band buffers, ack'd)", push),
        row("cloudpickle dumps+loads in-band (no transport)", inband), row("memcpy (np.copyto)", memcpy)])
    print(f"- burstlab push: {gbps(push):.2f} GB/s (goal >= 1.2 GB/s); cloudpickle in-band: {gbps(inband):.2f} GB/s; "
          f"memcpy: {gbps(memcpy):.2f} GB/s")
    ws.close()


if __name__ == "__main__":
    main()
