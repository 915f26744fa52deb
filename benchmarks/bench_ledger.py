"""The ledger: heartbeat writes/s of 1,000 open intervals on SQLite and PostgreSQL, open+close rates, a
budget check's query, and the metering overhead of a warm %%gpu cell.

    python benchmarks/bench_ledger.py [--quick]

Side by side: burstlab's one-statement heartbeat (``UPDATE ... WHERE id IN (...)`` in one transaction,
``= ANY(array)`` on PostgreSQL) against the plain way (one ``UPDATE`` per interval through the driver's
``executemany``, each committed on its own, which is what the first ledger did). PostgreSQL comes
from BURSTLAB_TEST_POSTGRES_URL, or a throw-away server started with .ci/postgres (stopped at the end).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("BURSTLAB_DECLARED_GPUS", "H100:2")
os.environ.setdefault("BURSTLAB_HOME", tempfile.mkdtemp(prefix="burstlab-bench-"))

from _common import median, print_table, ratio, row, timeit  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_OPEN = 1000


def _fill(ledger, n: int, prefix: str) -> list[str]:
    ids = [f"{prefix}{i}" for i in range(n)]
    for i in ids:
        ledger.open_interval(id=i, kind="session", user="bench", notebook="bench.ipynb", resource="H100", quantity=1,
                             declared=True, rate_nusd_per_s=1_097_000, start_ns=time.time_ns(), owner="bench:1:1")
    return ids


def heartbeat_rates(ledger, rounds: int) -> tuple[float, float]:
    """(burstlab's writes/s, the plain per-row executemany's writes/s) for N_OPEN open intervals."""
    ids = _fill(ledger, N_OPEN, f"hb-{uuid.uuid4().hex[:6]}-")
    ledger.heartbeat(ids, time.time_ns())  # warm
    t = time.perf_counter()
    for _ in range(rounds):
        ledger.heartbeat(ids, time.time_ns())
    ours = rounds * N_OPEN / (time.perf_counter() - t)
    plain_rounds = max(1, rounds // 5)
    sql = "UPDATE intervals SET heartbeat_ns = ? WHERE id = ? AND stop_ns IS NULL"
    t = time.perf_counter()
    for _ in range(plain_rounds):
        now = time.time_ns()
        ledger.db.executemany(sql, [(now, i) for i in ids])
    plain = plain_rounds * N_OPEN / (time.perf_counter() - t)
    return ours, plain


def open_close_rate(ledger, n: int) -> float:
    """Intervals opened and closed per second (two idempotent writes each, the second a transaction)."""
    prefix = f"oc-{uuid.uuid4().hex[:6]}-"
    t = time.perf_counter()
    for i in range(n):
        ledger.open_interval(id=f"{prefix}{i}", kind="map", user="bench", notebook="bench.ipynb", resource="H100",
                             quantity=1, declared=True, rate_nusd_per_s=1_097_000, start_ns=time.time_ns(),
                             owner="bench:1:1")
        ledger.close_interval(f"{prefix}{i}", time.time_ns())
    return n / (time.perf_counter() - t)


def spending_ms(ledger, n: int) -> list[float]:
    """The watcher's per-budget query over a user with ``n`` intervals."""
    user = f"spender-{uuid.uuid4().hex[:6]}"
    for i in range(n):
        ledger.open_interval(id=f"{user}-{i}", kind="session", user=user, notebook="bench.ipynb", resource="H100",
                             quantity=1, declared=True, rate_nusd_per_s=1_097_000, start_ns=i * 10**9, owner="bench:1:1")
        if i % 10:
            ledger.close_interval(f"{user}-{i}", i * 10**9 + 3 * 10**9)
    return timeit(lambda: ledger.spending(user=user), 50)


def postgres_url() -> tuple[str, callable]:
    url = os.environ.get("BURSTLAB_TEST_POSTGRES_URL", "")
    if url:
        return url, lambda: None
    pg_dir = tempfile.mkdtemp(prefix="burstlab-bench-pg-")
    try:
        url = subprocess.run([os.path.join(ROOT, ".ci", "postgres"), "start", pg_dir], check=True,
                             capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"(PostgreSQL not benchmarked: {getattr(exc, 'stderr', '') or exc})")
        return "", lambda: None

    def stop():
        subprocess.run([os.path.join(ROOT, ".ci", "postgres"), "stop", pg_dir], check=False)
        subprocess.run(["rm", "-rf", pg_dir], check=False)

    return url, stop


def fresh_schema(base: str) -> str:
    import psycopg
    from urllib.parse import quote

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{base}{'&' if '?' in base else '?'}options={quote(f'-csearch_path={schema}')}"


def warm_cell_overhead(n: int) -> tuple[list[float], list[float]]:
    """(metering work a warm %%gpu cell does, in seconds per cell; the whole warm cell round trip)."""
    from IPython.core.interactiveshell import InteractiveShell

    import burstlab

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "burstlab")
    ws = burstlab.get_workspace()
    from IPython.utils.capture import capture_output

    ws.set_budget("notebook", ws.notebook, 1000)  # a budget in force: the gate reads its cached state
    with capture_output():
        shell.run_cell("%%gpu H100 --quiet\n1")
    session = ws.find("H100")

    def metering():  # the gate of a cell on a running session, and the footer's priced record
        ws.watcher.check_cached(ws.user, ws.notebook)
        ws.session_usage(session)

    meter_times = timeit(metering, n * 20)

    def cell():
        with capture_output():
            shell.run_cell("%%gpu H100\n1")

    cell_times = timeit(cell, n, warmup=3)
    ws.close()
    return meter_times, cell_times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 10 if args.quick else 50
    from burstlab.billing import open_ledger

    rows, lines = [], []
    backends = [("SQLite (WAL)", f"sqlite:///{tempfile.mkdtemp(prefix='burstlab-bench-')}/ledger.sqlite")]
    pg, stop_pg = postgres_url()
    try:
        if pg:
            backends.append(("PostgreSQL", fresh_schema(pg)))
        for label, url in backends:
            ledger = open_ledger(url)
            ours, plain = heartbeat_rates(ledger, rounds)
            rows.append([f"{label}: heartbeat writes/s, {N_OPEN} open intervals (burstlab)", "", f"{ours:,.0f}", "",
                         "writes/s"])
            rows.append([f"{label}: heartbeat writes/s, per-row executemany (plain)", "", f"{plain:,.0f}", "",
                         "writes/s"])
            lines.append(ratio(f"{label} heartbeat throughput, burstlab / plain", ours, plain))
            rows.append([f"{label}: intervals opened+closed/s", "", f"{open_close_rate(ledger, 200 if args.quick else 1000):,.0f}",
                         "", "intervals/s"])
            n = 2000 if args.quick else 10_000
            rows.append(row(f"{label}: a budget check (spending query) over {n:,} intervals", spending_ms(ledger, n)))
            ledger.close()
    finally:
        stop_pg()
    meter_times, cell_times = warm_cell_overhead(20 if args.quick else 100)
    rows.append(row("metering work per warm %%gpu cell (gate + footer record)", meter_times, unit="µs", scale=1e6))
    rows.append(row("warm %%gpu cell round trip (all of it)", cell_times))
    print_table("Ledger and metering", rows)
    print()
    for line in lines:
        print(line)
    print(f"- metering overhead on a warm cell: {median(meter_times) * 1e3:.4f} ms (goal < 0.2 ms), "
          f"{median(meter_times) / median(cell_times):.2%} of the round trip")


if __name__ == "__main__":
    main()
