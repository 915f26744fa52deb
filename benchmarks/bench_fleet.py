"""%%gpu across a real network link: the test fleet (examples/fleet.py), side by side with raw transports.

    sudo python benchmarks/bench_fleet.py [--quick]

Builds the fleet (network namespaces on a bridge; a TLS Dask scheduler in `sched`; `burstlab worker` in
`gpuA`), then from the root namespace (the notebook side):

1. warm cell round trip: burstlab ``session.execute_sync('1+1')`` on host A vs a raw jupyter_client execute
   on an ipykernel started in host A's namespace, bound to the same address (the same link);
2. push of a 100 MiB array: burstlab push vs one raw zmq REQ/REP round trip of the same bytes to host A;
3. new session -> first output with a warm worker up (goal <= 30 ms p50, <= 100 ms p95).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

from _common import print_table, row  # noqa: E402

ZMQ_ECHO = r"""
import sys, zmq
ctx = zmq.Context(); s = ctx.socket(zmq.REP); s.bind(f"tcp://{sys.argv[1]}:{sys.argv[2]}")
print("ready", flush=True)
while True:
    m = s.recv(copy=False)
    if len(m) == 0:
        break
    s.send(b"ok")
s.send(b"bye")
"""


def raw_kernel_in(fleet, name: str, ip: str, tmp: str):
    """An ipykernel in namespace ``name`` bound to ``ip``, and a client of it from here."""
    import json

    from jupyter_client import BlockingKernelClient

    conn = os.path.join(tmp, "raw-kernel.json")
    ports = dict(zip(("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"), range(47101, 47106)))
    with open(conn, "w") as f:  # (write_connection_file would try the ports here, where `ip` is not ours)
        json.dump({**ports, "ip": ip, "key": os.urandom(16).hex(), "transport": "tcp",
                   "signature_scheme": "hmac-sha256", "kernel_name": ""}, f)
    proc = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-m", "ipykernel_launcher", "-f", conn,
                             "--HistoryManager.enabled=False"], stdout=subprocess.DEVNULL, stderr=open(conn + ".log", "wb"),
                            start_new_session=True)
    kc = BlockingKernelClient()
    kc.load_connection_file(conn)
    kc.start_channels(hb=False)  # (jupyter_client's heartbeat check calls a kernel still starting dead)
    kc.wait_for_ready(timeout=60)
    return proc, kc


def raw_execute(kc, code: str) -> None:
    msg_id = kc.execute(code)
    while True:
        msg = kc.get_iopub_msg(timeout=30)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status" \
                and msg["content"]["execution_state"] == "idle":
            break
    while kc.get_shell_msg(timeout=30)["parent_header"].get("msg_id") != msg_id:
        pass


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_fleet builds network namespaces: run it as root.")
    n_warm, n_push, n_start = (100, 3, 10) if args.quick else (300, 5, 30)
    import dask
    import numpy as np
    import zmq

    from burstlab.examples.fleet import ADDRS, Fleet, wait_for
    from burstlab.remote_kernel._tls import dask_config

    tmp = tempfile.mkdtemp(prefix="burstlab-bench-fleet-")
    fleet = Fleet(os.path.join(tmp, "fleet")).up()
    os.environ.update(BURSTLAB_SCHEDULER=fleet.scheduler, BURSTLAB_HOME=os.path.join(tmp, "nb"))
    dask.config.set(dask_config(fleet.tls))
    from burstlab.workspace import Workspace

    ws = Workspace(notebook="bench-fleet")
    raw_proc = echo = None
    try:
        wait_for("both GPU hosts", lambda: len(ws.hosts()) == 2, 60)
        rows = []
        # 1. warm round trip
        session = ws.session("H100")
        session.execute_sync("1")
        raw_proc, kc = raw_kernel_in(fleet, "gpuA", ADDRS["gpuA"], tmp)
        raw_execute(kc, "1")
        ours, raw = [], []
        for _ in range(n_warm // 10):  # interleaved, so both see the same machine load
            ours += timed(lambda: session.execute_sync("1+1"), 10)
            raw += timed(lambda: raw_execute(kc, "1+1"), 10)
        rows += [row("burstlab session.execute_sync('1+1'), host A", ours, "ms"),
                 row("raw jupyter_client execute, kernel in host A", raw, "ms")]
        # 2. push 100 MiB
        data = np.ones(100 * 2**20 // 8)
        push = timed(lambda: session.push_sync({"a": data}), n_push)
        echo = subprocess.Popen(["ip", "netns", "exec", "gpuA", sys.executable, "-c", ZMQ_ECHO, ADDRS["gpuA"], "5599"],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert echo.stdout.readline().strip() == "ready"
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.connect(f"tcp://{ADDRS['gpuA']}:5599")

        def zmq_push():
            sock.send(memoryview(data), copy=False)
            sock.recv()

        zpush = timed(zmq_push, n_push)
        rows += [row("burstlab push 100 MiB to host A", push, "ms"), row("raw zmq REQ/REP 100 MiB to host A", zpush, "ms")]
        sock.send(b"")
        sock.recv()
        sock.close()
        # 3. new session, warm worker up
        session.stop()
        starts, cold = [], 0
        for _ in range(n_start):
            time.sleep(2.0)  # the pool refills (a kernel start takes ~1 s)
            t = time.perf_counter()
            s = ws.session("H100")
            s.execute_sync("print(1)")
            starts.append(time.perf_counter() - t)
            cold += not s.lease.warm
            s.stop()
        rows.append(row(f"new session -> first output, warm worker up (host A; {cold} cold)", starts, "ms"))
        print_table("burstlab across the test fleet (network namespaces, TLS scheduler)", rows)
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        print(f"- warm round trip vs raw jupyter_client across the link: {med(ours) / med(raw):.2f}x (goal <= 1.1x)")
        print(f"- push vs raw zmq: {med(zpush) / med(push):.2f}x of raw throughput (goal >= 0.8x)")
    finally:
        ws.close()
        for proc in (raw_proc, echo):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(10)
        fleet.down()


if __name__ == "__main__":
    main()
