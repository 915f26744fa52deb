"""Sandbox benchmark, side by side with the floor a user would otherwise start from.

    .venv/bin/python benchmarks/bench_sandbox.py            # full run (~2 minutes)
    .venv/bin/python benchmarks/bench_sandbox.py --quick    # smoke run (~30 s)
    .venv/bin/python benchmarks/bench_sandbox.py --doors    # create -> first result through each front door
    .venv/bin/python benchmarks/bench_sandbox.py --agent [--quick]   # exec round trip, snapshot/restore/fork (issue 18)
    .venv/bin/python benchmarks/bench_sandbox.py --template         # a template's sandbox from its pool -> first result
    .venv/bin/python benchmarks/bench_sandbox.py --snapshot-sizes 100,500   # snapshot / restore of large state

Rows: create -> first result (from the pool, without the pool, and the very first one that also
starts the fork server) against ``bwrap ... python -c pass`` and a raw ipykernel start (jupyter_client
KernelManager, execute sent right after start_channels); the warm run round trip against a raw
jupyter_client execute; PSS per idle sandbox (N sandboxes alive at once). Needs root, like the
sandbox itself. Timings are medians (p95 beside them); ratios are burstlab / floor.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def stats(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


# -- floors ------------------------------------------------------------------------------------------
def floor_python(n: int) -> list[float]:
    return timed(lambda: subprocess.run([sys.executable, "-S", "-c", "pass"], check=True), n)


def floor_bwrap(n: int) -> list[float] | None:
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return None
    real = os.path.realpath(sys.executable)
    cmd = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--tmpfs", "/tmp",
           "--dev", "/dev", "--proc", "/proc", real, "-S", "-c", "pass"]
    return timed(lambda: subprocess.run(cmd, check=True), n)


def floor_raw_kernel(n: int, warm_n: int) -> tuple[list[float], list[float]]:
    from jupyter_client import KernelManager

    starts, warm = [], []
    for i in range(n):
        km = KernelManager()
        t = time.perf_counter()
        km.start_kernel(extra_arguments=["--HistoryManager.enabled=False"])
        kc = km.client()
        kc.start_channels()
        msg_id = kc.execute("1+1")
        while True:
            m = kc.get_shell_msg(timeout=60)
            if m["parent_header"].get("msg_id") == msg_id:
                break
        starts.append((time.perf_counter() - t) * 1000)
        if i == 0:
            kc.wait_for_ready(timeout=30)
            for _ in range(5):
                kc.execute_interactive("1+1", output_hook=lambda m: None)
            warm = timed(lambda: kc.execute_interactive("1+1", output_hook=lambda m: None), warm_n)
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    return starts, warm


# -- burstlab ----------------------------------------------------------------------------------------
def bench_burstlab(n: int, warm_n: int, idle_n: int) -> dict:
    from burstlab._sync import run_sync
    from burstlab.sandbox import Sandbox, SandboxPool
    from burstlab.sandbox._sandbox import stop_template, template

    out: dict = {}
    t = time.perf_counter()
    with Sandbox() as sb:
        sb.run("1+1")
        out["first_ever"] = [(time.perf_counter() - t) * 1000]
        for _ in range(5):
            sb.run("1+1")
        out["warm"] = timed(lambda: sb.run("1+1"), warm_n)

    def cold():
        with Sandbox() as s:
            s.run("1+1")

    def cold_first_result():
        s = Sandbox()
        t0 = time.perf_counter()
        s.start()
        s.run("1+1")
        dt = (time.perf_counter() - t0) * 1000
        s.close()
        return dt

    out["cold"] = [cold_first_result() for _ in range(n)]
    pool = SandboxPool(size=4).start()
    samples = []
    for _ in range(n):
        pool.start()  # wait until refilled, so each sample finds a ready sandbox
        t0 = time.perf_counter()
        s = pool.acquire()
        s.run("1+1")
        samples.append((time.perf_counter() - t0) * 1000)
        s.close()
    pool.close()
    out["pool"] = samples

    # memory: idle_n sandboxes alive at once, PSS summed over each one's processes
    boxes = []
    t0 = time.perf_counter()
    for _ in range(idle_n):
        s = Sandbox(memory="128MiB")
        s.start()
        s.run("1+1")
        boxes.append(s)
    out["idle_start_s"] = time.perf_counter() - t0
    time.sleep(1)
    per = []
    for s in boxes:
        per.append(sum(pss_kib(p) for p in s._cgroup.pids()) / 1024)
    out["pss"] = per
    tpl = template().proc
    out["template_pss"] = pss_kib(tpl.pid) / 1024 if tpl else 0
    out["rss_kernel"] = rss_kib(max(boxes[0]._cgroup.pids())) / 1024
    out["idle_n"] = len(boxes)
    for s in boxes:
        s.close()
    run_sync(stop_template())
    return out


def _smaps(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid: int) -> int:
    return _smaps(pid, "Pss")


def rss_kib(pid: int) -> int:
    return _smaps(pid, "Rss")


# -- issue 18: exec, snapshot, restore, fork ---------------------------------------------------------
def floor_bwrap_true(n: int) -> list[float] | None:
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return None
    cmd = [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/", "--tmpfs", "/tmp",
           "--dev", "/dev", "--proc", "/proc", "true"]
    return timed(lambda: subprocess.run(cmd, check=True), n)


def bench_template(n: int) -> tuple[float, float, list[float], list[float]]:
    """Template build (first, cached), then ``n`` times: a sandbox from the template's warm pool -> first result,
    and the hand-out alone (``tpl.sandbox()``), each taken with a ready sandbox in the pool."""
    from burstlab.sandbox import SandboxTemplate

    kw = dict(setup="import numpy as np\nw = np.ones(1000)", memory="512MiB", timeout=60)
    tpl = SandboxTemplate(**kw)
    t = time.perf_counter()
    tpl.build()
    build = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    SandboxTemplate(**kw).build()
    cached = (time.perf_counter() - t) * 1000
    firsts, handouts = [], []
    tpool = tpl.pool(2)
    tpool.start(wait=True)
    try:
        for _ in range(n):
            deadline = time.monotonic() + 60
            while tpool.ready < tpool.size:  # none filling: nothing else runs meanwhile
                if time.monotonic() > deadline:
                    raise RuntimeError("the template's pool made no sandbox within 60 s")
                time.sleep(0.01)
            t = time.perf_counter()
            s = tpl.sandbox(meter=None)
            handouts.append((time.perf_counter() - t) * 1000)
            ex = s.run("float(w.sum())")
            assert ex.text == "1000.0", ex
            firsts.append((time.perf_counter() - t) * 1000)
            s.close()
    finally:
        tpl.close()
    return build, cached, firsts, handouts


def bench_snapshot_sizes(sizes_mb: list[int], n: int) -> None:
    """Namespace snapshot and restore of a kernel holding ``size`` MB of numpy state: time to snapshot, its size,
    restore -> first result (a new sandbox), and from a warm pool."""
    import tempfile

    from burstlab.sandbox import Sandbox, SandboxPool

    os.environ["BURSTLAB_HOME"] = tempfile.mkdtemp(prefix="bench-snap-")
    print("| state | snapshot ms | size MiB | restore -> first result ms | from a warm pool -> first result ms |")
    print("|---:|---:|---:|---:|---:|")
    for mb in sizes_mb:
        # the variables are pickled into the work dir (a tmpfs charged to the sandbox's memory) before the copy out
        memory, work = f"{max(1024, 3 * mb + 512)}MiB", f"{max(256, mb + 128)}MiB"
        snaps, firsts, pooled, size = [], [], [], 0
        with Sandbox(timeout=300, memory=memory, work_size=work, meter=None) as sb, \
                SandboxPool(size=1, memory=memory, work_size=work, timeout=300) as pool:
            sb.run(f"import numpy as np\nstate = np.random.default_rng(0).random({mb} * 2**20 // 8)")
            want = sb.run("float(state[-3:].sum())").text
            pool.start(wait=True)
            for _ in range(n):
                t = time.perf_counter()
                snap = sb.snapshot(mode="namespace")
                snaps.append((time.perf_counter() - t) * 1000)
                size = snap.size_bytes
                t = time.perf_counter()
                with Sandbox.restore(snap, meter=None) as r:
                    assert r.run("float(state[-3:].sum())").text == want
                    firsts.append((time.perf_counter() - t) * 1000)
                deadline = time.monotonic() + 120
                while pool.ready < 1:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the pool made no sandbox within 120 s")
                    time.sleep(0.02)
                t = time.perf_counter()
                with Sandbox.restore(snap, pool=pool, meter=None) as r:
                    assert r.run("float(state[-3:].sum())").text == want
                    pooled.append((time.perf_counter() - t) * 1000)
                snap.delete()

        def cell(xs):
            return f"{statistics.median(xs):.0f} (max {max(xs):.0f})"

        print(f"| {mb} MB | {cell(snaps)} | {size / 2**20:.1f} | {cell(firsts)} | {cell(pooled)} |", flush=True)


def bench_agent(n: int) -> None:
    import tempfile

    from burstlab.sandbox import Sandbox, SandboxPool

    os.environ["BURSTLAB_HOME"] = tempfile.mkdtemp(prefix="bench-snap-")
    bw = floor_bwrap_true(n)
    with Sandbox(timeout=60, memory="1GiB", meter=None) as sb:
        sb.run("1")
        sb.exec(["true"])
        ex = timed(lambda: sb.exec(["true"]), n)
        run_none = timed(lambda: sb.run("None"), n)
        sb.run("import numpy as np\nstate = np.random.default_rng(0).random(10 * 2**20 // 8)")
        snaps, restores, firsts, sizes = [], [], [], []
        for _ in range(max(3, n // 4)):
            t = time.perf_counter()
            snap = sb.snapshot(mode="namespace")
            snaps.append((time.perf_counter() - t) * 1000)
            sizes.append(snap.size_bytes)
            t = time.perf_counter()
            r = Sandbox.restore(snap, meter=None)
            restores.append((time.perf_counter() - t) * 1000)
            assert r.run("float(state[:3].sum())").text == sb.run("float(state[:3].sum())").text
            firsts.append((time.perf_counter() - t) * 1000)
            r.close()
            snap.delete()
        t = time.perf_counter()
        forks = sb.fork(8)
        fork8 = (time.perf_counter() - t) * 1000
        for f in forks:
            f.close()
        pool_firsts, fork8_pool = [], None
        with SandboxPool(size=8, memory="1GiB", timeout=60) as pool:
            pool.start(wait=True)
            snap = sb.snapshot(mode="namespace")
            for _ in range(max(3, n // 4)):
                t = time.perf_counter()
                r = Sandbox.restore(snap, pool=pool, meter=None)
                r.run("float(state[:3].sum())")
                pool_firsts.append((time.perf_counter() - t) * 1000)
                r.close()
            snap.delete()
            while pool.ready < 8:
                time.sleep(0.05)
            t = time.perf_counter()
            forks = sb.fork(8, pool=pool)
            fork8_pool = (time.perf_counter() - t) * 1000
            for f in forks:
                f.close()

    tpl_build, tpl_cached, tpl_firsts, _ = bench_template(n)

    def cell(xs):
        m, p = stats(xs)
        return f"{m:.1f} (p95 {p:.1f})"

    print("| burstlab | ms | floor | ms |")
    print("|---|---:|---|---:|")
    print(f"| exec(['true']) round trip | {cell(ex)} | bwrap --unshare-all ... true | {cell(bw) if bw else 'bwrap not installed'} |")
    print(f"| exec(['true']) round trip | {cell(ex)} | run('None') in the same sandbox | {cell(run_none)} |")
    print(f"| snapshot(mode='namespace'), 10 MB numpy state | {cell(snaps)} | | |")
    print(f"| restore -> sandbox ready | {cell(restores)} | | |")
    print(f"| restore -> first result | {cell(firsts)} | | |")
    print(f"| restore from a warm pool -> first result | {cell(pool_firsts)} | | |")
    print(f"| fork(8), 10 MB state | {fork8:.1f} | | |")
    print(f"| fork(8) from a warm pool of 8 | {fork8_pool:.1f} | | |")
    print(f"| template build (first / cached) | {tpl_build:.1f} / {tpl_cached:.1f} | | |")
    print(f"| template sandbox from its pool -> first result | {cell(tpl_firsts)} | | |")
    print(f"\nsnapshot size {statistics.median(sizes) / 2**20:.1f} MiB; goals (issue 18): restore -> first result "
          "<= 150 ms for 10 MB; fork n=8 <= 0.5 s; template create from pool <= 20 ms p50")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few repetitions, 10 idle sandboxes (a smoke run)")
    ap.add_argument("--doors", action="store_true",
                    help="only create -> first result through each front door against the pool itself (_doors.py)")
    ap.add_argument("--agent", action="store_true", help="only exec, snapshot, restore and fork (issue 18)")
    ap.add_argument("--template", action="store_true", help="only a template's sandbox from its pool -> first result")
    ap.add_argument("--snapshot-sizes", metavar="MB,MB", default=None,
                    help="only namespace snapshot / restore of a kernel holding this much numpy state, e.g. 100,500")
    args = ap.parse_args()
    if (args.template or args.snapshot_sizes) and os.geteuid() != 0:
        sys.exit("The sandbox needs root (cgroups, mounts, a per-sandbox uid); run this as root.")
    if args.template:
        import tempfile

        os.environ["BURSTLAB_HOME"] = tempfile.mkdtemp(prefix="bench-tpl-")
        print(f"# template from its pool; {os.cpu_count()} cpus, loadavg {os.getloadavg()[0]:.2f}\n", flush=True)
        build, cached, firsts, handouts = bench_template(5 if args.quick else 40)
        (m, p), (hm, hp) = stats(firsts), stats(handouts)
        print(f"template build {build:.0f} ms, cached {cached:.1f} ms; template sandbox from its pool -> first result "
              f"p50 {m:.1f} ms (p95 {p:.1f}); the hand-out alone p50 {hm:.1f} ms (p95 {hp:.1f}); goal <= 20 ms p50; "
              f"loadavg now {os.getloadavg()[0]:.2f}")
        return
    if args.snapshot_sizes:
        print(f"# namespace snapshots by state size; {os.cpu_count()} cpus, loadavg {os.getloadavg()[0]:.2f}\n",
              flush=True)
        bench_snapshot_sizes([int(x) for x in args.snapshot_sizes.split(",")], 2 if args.quick else 3)
        print(f"\nloadavg now {os.getloadavg()[0]:.2f}")
        return
    if args.agent:
        if os.geteuid() != 0:
            sys.exit("The sandbox needs root (cgroups, mounts, a per-sandbox uid); run this as root.")
        print(f"# burstlab agent features; {os.cpu_count()} cpus, loadavg {os.getloadavg()[0]:.2f}\n", flush=True)
        bench_agent(5 if args.quick else 20)
        return
    if args.doors:
        if os.geteuid() != 0:
            sys.exit("The sandbox needs root (cgroups, mounts, a per-sandbox uid); run this as root.")
        sys.path.insert(0, HERE)
        from _doors import run as doors

        doors(5 if args.quick else 20)
        return
    n, warm_n, idle_n, kn = (5, 50, 10, 2) if args.quick else (20, 300, 100, 5)
    if os.geteuid() != 0:
        sys.exit("The sandbox needs root (cgroups, mounts, a per-sandbox uid); run this as root.")
    print(f"# burstlab sandbox benchmark ({'quick' if args.quick else 'full'}); python {sys.version.split()[0]}, "
          f"{os.cpu_count()} cpus, loadavg {os.getloadavg()[0]:.2f}\n", flush=True)
    py = floor_python(n)
    bw = floor_bwrap(n)
    raw_start, raw_warm = floor_raw_kernel(kn, warm_n)
    b = bench_burstlab(n, warm_n, idle_n)

    def cell(xs):
        m, p = stats(xs)
        return f"{m:.1f} (p95 {p:.1f})"

    def ratio(a, f):
        return f"{statistics.median(a) / statistics.median(f):.2f}x"

    rows = [
        ("create -> first result, from the pool", b["pool"], "bwrap + python -c pass", bw or py),
        ("create -> first result, from the pool", b["pool"], "raw ipykernel start -> first execute_reply", raw_start),
        ("create -> first result, no pool (fork server warm)", b["cold"], "raw ipykernel start -> first execute_reply", raw_start),
        ("create -> first result, very first (starts the fork server)", b["first_ever"], "raw ipykernel start -> first execute_reply", raw_start),
        ("warm run('1+1') round trip", b["warm"], "raw jupyter_client execute_interactive('1+1')", raw_warm),
    ]
    print("| burstlab | ms | floor | ms | ratio |")
    print("|---|---:|---|---:|---:|")
    for name, xs, fname, fs in rows:
        print(f"| {name} | {cell(xs)} | {fname} | {cell(fs)} | {ratio(xs, fs)} |")
    print(f"\nplain `python -S -c pass`: {cell(py)} ms; bwrap floor: {cell(bw) if bw else 'bwrap not installed'} ms")
    m, p = stats(b["pss"])
    print(f"\nidle sandboxes alive at once: {b['idle_n']} (started in {b['idle_start_s']:.1f} s); "
          f"PSS per idle sandbox (outer + pid 1 + kernel): median {m:.1f} MiB, p95 {p:.1f} MiB, "
          f"max {max(b['pss']):.1f} MiB; the kernel's RSS {b['rss_kernel']:.1f} MiB; "
          f"fork-server template PSS {b['template_pss']:.1f} MiB (shared by all)")
    print("goals (issue 7): pool create -> first result < 30 ms p50; warm round trip <= 1.2x raw; <= 25 MiB PSS per idle sandbox")


if __name__ == "__main__":
    main()
