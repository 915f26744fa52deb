"""%%gpu across a real network link: the test fleet (examples/fleet.py), side by side with raw transports.

    sudo python benchmarks/bench_fleet.py [--quick]

Builds the fleet (network namespaces on a bridge; a TLS Dask scheduler in `sched`; `burstlab worker` in
`gpuA`), then from the root namespace (the notebook side):

1. warm cell round trip: burstlab ``session.execute_sync('1+1')`` on host A, its kernel encrypted (CurveZMQ,
   the default) and in the clear (a second worker on host A with ``BURSTLAB_ENCRYPT_KERNELS=0``, serving a
   declared L4), vs a raw jupyter_client execute on an ipykernel started in host A's namespace, bound to the
   same address (the same link);
2. push of a 100 MiB array: burstlab push, encrypted and in the clear, vs one raw zmq REQ/REP round trip of the
   same bytes to host A, in the clear and with CurveZMQ (the cost of the cipher alone);
3. new session -> first output with a warm worker up (goal <= 30 ms p50, <= 100 ms p95).

The load average is printed with the figures (the machine is shared: timings under load are inflated).
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
ctx = zmq.Context(); s = ctx.socket(zmq.REP)
if len(sys.argv) > 3:  # a CurveZMQ server: argv[3] and argv[4] are its public and secret keys
    s.curve_publickey, s.curve_secretkey, s.curve_server = sys.argv[3].encode(), sys.argv[4].encode(), True
s.bind(f"tcp://{sys.argv[1]}:{sys.argv[2]}")
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
    from burstlab.remote_kernel import _curve
    from burstlab.remote_kernel._tls import dask_config

    tmp = tempfile.mkdtemp(prefix="burstlab-bench-fleet-")
    fleet = Fleet(os.path.join(tmp, "fleet")).up()
    os.environ.update(BURSTLAB_SCHEDULER=fleet.scheduler, BURSTLAB_HOME=os.path.join(tmp, "nb"))
    dask.config.set(dask_config(fleet.tls))
    from burstlab.workspace import Workspace

    ws = Workspace(notebook="bench-fleet")
    raw_proc = None
    echoes: list = []
    try:
        # A second worker on host A whose kernels run in the clear (the benchmark's "before"): a declared L4.
        fleet._start("gpuA", "gpuA", [fleet.python, "-m", "burstlab", "worker", fleet.scheduler, "--declare", "L4:1",
                                      "--give-up", "120"], extra_env={_curve.ENV: "0"}, key="gpuA-clear")
        wait_for("both GPU hosts and the clear worker", lambda: {e.type for e in ws.hosts()} >= {"H100", "A100", "L4"}, 60)
        rows = []
        # 1. warm round trip
        session = ws.session("H100")
        clear = ws.session("L4")
        assert _curve.encrypted(session.lease.connection) and not _curve.encrypted(clear.lease.connection)
        assert session.host == clear.host == "gpuA"
        session.execute_sync("1")
        clear.execute_sync("1")
        raw_proc, kc = raw_kernel_in(fleet, "gpuA", ADDRS["gpuA"], tmp)
        raw_execute(kc, "1")
        ours, ours_clear, raw = [], [], []
        for _ in range(n_warm // 10):  # interleaved, so all see the same machine load
            ours += timed(lambda: session.execute_sync("1+1"), 10)
            ours_clear += timed(lambda: clear.execute_sync("1+1"), 10)
            raw += timed(lambda: raw_execute(kc, "1+1"), 10)
        rows += [row("burstlab session.execute_sync('1+1'), host A, encrypted (CurveZMQ)", ours, "ms"),
                 row("burstlab session.execute_sync('1+1'), host A, in the clear", ours_clear, "ms"),
                 row("raw jupyter_client execute, kernel in host A (clear)", raw, "ms")]
        # 2. push 100 MiB
        data = np.ones(100 * 2**20 // 8)
        push, push_clear = [], []
        for _ in range(n_push):
            push += timed(lambda: session.push_sync({"a": data}), 1)
            push_clear += timed(lambda: clear.push_sync({"a": data}), 1)
        clear.stop()
        keys = _curve.new_keys()
        zpush = {}
        for port, curve in ((5599, None), (5598, keys)):
            argv = [] if curve is None else [curve[_curve.PUBLIC], curve[_curve.SECRET]]
            echo = subprocess.Popen(["ip", "netns", "exec", "gpuA", sys.executable, "-c", ZMQ_ECHO, ADDRS["gpuA"],
                                     str(port), *argv], stdout=subprocess.PIPE, text=True, start_new_session=True)
            echoes.append(echo)
            assert echo.stdout.readline().strip() == "ready"
            sock = zmq.Context.instance().socket(zmq.REQ)
            if curve is not None:
                _curve.secure_socket(sock, curve)
            sock.connect(f"tcp://{ADDRS['gpuA']}:{port}")

            def zmq_push(sock=sock):
                sock.send(memoryview(data), copy=False)
                sock.recv()

            zpush[curve is not None] = timed(zmq_push, n_push)
            sock.send(b"")
            sock.recv()
            sock.close()
        rows += [row("burstlab push 100 MiB to host A, encrypted (CurveZMQ)", push, "ms"),
                 row("burstlab push 100 MiB to host A, in the clear", push_clear, "ms"),
                 row("raw zmq REQ/REP 100 MiB to host A (clear)", zpush[False], "ms"),
                 row("raw zmq REQ/REP 100 MiB to host A, CurveZMQ", zpush[True], "ms")]
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
        mib_s = lambda xs: 100 / med(xs)  # noqa: E731
        print(f"- load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(f"- warm round trip vs raw jupyter_client across the link: {med(ours) / med(raw):.2f}x encrypted, "
              f"{med(ours_clear) / med(raw):.2f}x in the clear (goal <= 1.1x)")
        print(f"- encryption adds {1e3 * (med(ours) - med(ours_clear)):.2f} ms to a warm round trip")
        print(f"- push: {mib_s(push):.0f} MiB/s encrypted, {mib_s(push_clear):.0f} MiB/s clear; raw zmq "
              f"{mib_s(zpush[False]):.0f} MiB/s clear, {mib_s(zpush[True]):.0f} MiB/s CurveZMQ")
        print(f"- push vs raw zmq: {med(zpush[False]) / med(push):.2f}x of raw throughput encrypted, "
              f"{med(zpush[False]) / med(push_clear):.2f}x in the clear (goal >= 0.8x); encrypted vs raw zmq with "
              f"CurveZMQ: {med(zpush[True]) / med(push):.2f}x")
    finally:
        ws.close()
        for proc in (raw_proc, *echoes):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait(10)
        fleet.down()


if __name__ == "__main__":
    main()
