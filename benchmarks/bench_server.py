"""The workspace as a service: REST sandbox round trips, and many agents on one standalone service.

    .venv/bin/python benchmarks/bench_server.py            # full run: 50 agents x 20 cells
    .venv/bin/python benchmarks/bench_server.py --quick    # smoke run: 10 agents x 5 cells

Starts ``jupyter burstlab`` as a subprocess on a free port, with one API token per agent (each agent
is its own user, as separate coding agents would be), and measures

1. the execute round trip of a trivial cell (``1+1``) through ``burstlab.client`` (REST, one HTTP
   request per run) against the same cell through the in-process :class:`burstlab.Sandbox` (what a
   script on the same machine would call instead), with the ratio;
2. the streamed variant (``?stream=1``, NDJSON) of the same round trip;
3. N concurrent agents, each creating its own sandbox and running M short cells one after another:
   per-cell latency p50/p95, wall time, throughput, and errors (any raised error or unexpected
   ``Execution.error``: must be zero).

Needs root, like the sandbox itself. Timings are medians unless marked; ratios are REST / in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import median, p95, print_table, row  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """``jupyter burstlab`` on a free port with a tokens file; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, users: list[str], home: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.tokens = {u: secrets.token_hex(24) for u in users}
        self.home = home
        tokens_file = os.path.join(home, "tokens.json")
        with open(tokens_file, "w") as f:
            json.dump({t: u for u, t in self.tokens.items()}, f)
        os.chmod(tokens_file, 0o600)
        env = {**os.environ, "BURSTLAB_HOME": home}
        env.setdefault("BURSTLAB_DECLARED_GPUS", "H100:2")
        self.log = open(os.path.join(home, "service.log"), "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "burstlab", f"--port={self.port}", "--ip=127.0.0.1",
             f"--BurstLabApp.tokens_file={tokens_file}", f"--BurstLabApp.max_sandboxes_per_user={len(users) + 2}"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        from burstlab.client import RemoteWorkspace
        from burstlab.errors import BurstlabError

        user = next(iter(self.tokens))
        deadline = time.monotonic() + timeout
        with RemoteWorkspace(self.url, self.tokens[user]) as ws:
            while True:
                try:
                    ws.info()
                    return
                except BurstlabError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        self.log.flush()
                        with open(self.log.name) as f:
                            tail = f.read()[-3000:]
                        raise SystemExit(f"jupyter burstlab did not come up:\n{tail}")
                    time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.log.close()


# -- 1. round trips ----------------------------------------------------------------------------------

def round_trips(service: Service, n: int) -> list[list[str]]:
    from burstlab.client import RemoteWorkspace
    from burstlab.sandbox import Sandbox

    def check(ex):
        assert ex.error is None and ex.text == "2", ex

    user = next(iter(service.tokens))
    with Sandbox(timeout=30) as sb, RemoteWorkspace(service.url, service.tokens[user]) as ws, ws.sandbox(timeout=30) as rsb:
        # interleaved, so that load from elsewhere on the machine hits every column alike
        cases = {"local": lambda: check(sb.run("1+1")), "rest": lambda: check(rsb.run("1+1")),
                 "streamed": lambda: check(rsb.run("1+1", on_output=lambda o: None)), "hosts": ws.hosts}
        times: dict[str, list[float]] = {k: [] for k in cases}
        for i in range(n + 5):
            for key, fn in cases.items():
                t = time.perf_counter()
                fn()
                if i >= 5:
                    times[key].append(time.perf_counter() - t)
    local, rest, streamed, hosts = times["local"], times["rest"], times["streamed"], times["hosts"]
    rows = [row("in-process Sandbox.run('1+1')", local), row("REST execute (burstlab.client)", rest),
            row("REST execute ?stream=1 (NDJSON)", streamed), row("REST GET hosts", hosts)]
    print_table("Execute round trip: REST vs the in-process API", rows)
    print(f"\n- REST / in-process (median): {median(rest) / median(local):.2f}x; "
          f"added by HTTP + JSON: {(median(rest) - median(local)) * 1e3:.2f} ms")
    print(f"- streamed / plain REST (median): {median(streamed) / median(rest):.2f}x")
    return rows


# -- 2. many agents ----------------------------------------------------------------------------------

async def agents(service: Service, n_agents: int, n_cells: int) -> dict:
    from burstlab.client import RemoteWorkspace

    latencies: list[float] = []
    errors: list[str] = []
    creates: list[float] = []

    async def agent(user: str, token: str) -> None:
        async with RemoteWorkspace(service.url, token) as ws:
            try:
                t = time.perf_counter()
                sb = await ws.asandbox(timeout=60)
                creates.append(time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001 - counted, the benchmark reports every failure
                errors.append(f"{user} create: {type(exc).__name__}: {exc}")
                return
            for i in range(n_cells):
                code = f"x = {i} if {i} == 0 else x + 1\nx * 2"
                t = time.perf_counter()
                try:
                    ex = await sb.arun(code)
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"{user} cell {i}: {type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.perf_counter() - t)
                if ex.error is not None or ex.text != str(2 * i):
                    errors.append(f"{user} cell {i}: {ex.error or ex.text!r}")
            await sb.aclose()

    users = list(service.tokens.items())[:n_agents]
    t0 = time.perf_counter()
    await asyncio.gather(*(agent(u, tok) for u, tok in users))
    wall = time.perf_counter() - t0
    return {"latencies": latencies, "errors": errors, "creates": creates, "wall": wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10 agents x 5 cells, 30 round trips")
    ap.add_argument("--agents", type=int, default=None)
    ap.add_argument("--cells", type=int, default=None)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_server: sandboxes need root; skipped.")
        return 0
    n_agents = args.agents or (10 if args.quick else 50)
    n_cells = args.cells or (5 if args.quick else 20)
    n_rt = 30 if args.quick else 200
    with tempfile.TemporaryDirectory(prefix="burstlab-bench-server-") as home:
        service = Service([f"agent-{i:02d}" for i in range(max(n_agents, 1))], home)
        try:
            print(f"standalone service: {service.url} (pid {service.proc.pid}); {os.cpu_count()} CPUs")
            round_trips(service, n_rt)
            result = asyncio.run(agents(service, n_agents, n_cells))
        finally:
            service.stop()
    lat, errors = result["latencies"], result["errors"]
    rows = [row(f"cell latency, {n_agents} agents concurrently", lat)]
    if result["creates"]:
        rows.append(row("sandbox create (concurrent)", result["creates"]))
    print_table(f"{n_agents} concurrent agents x {n_cells} cells on one standalone service", rows)
    print(f"\n- cells: {len(lat)} of {n_agents * n_cells} ran; p50 {median(lat) * 1e3:.1f} ms, "
          f"p95 {p95(lat) * 1e3:.1f} ms" if lat else "\n- no cell ran")
    print(f"- wall {result['wall']:.1f} s, throughput {len(lat) / result['wall']:.0f} cells/s")
    print(f"- errors: {len(errors)} (goal: 0)")
    for e in errors[:10]:
        print(f"  - {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
