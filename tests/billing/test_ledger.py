"""The ledger suite: every case runs on SQLite and on a real PostgreSQL server (see conftest.py)."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from burstlab.billing import Meter, RateCard, open_ledger
from burstlab.billing.ledger import MIGRATIONS, SCHEMA_VERSION, Ledger, owner_tag
from burstlab.billing.rates import NS_PER_S
from burstlab.errors import ConfigError

H100 = 1_097_000
HOST = socket.gethostname()


def _open(ledger, id, start, owner="elsewhere:1:1", **kw):
    kw = {"kind": "session", "user": "u", "notebook": "n", "resource": "H100", "quantity": 1, "declared": True,
          "rate_nusd_per_s": H100, **kw}
    return ledger.open_interval(id=id, start_ns=start, owner=owner, **kw)


@pytest.fixture
def ledger(ledger_url):
    led = open_ledger(ledger_url)
    yield led
    led.close()


def test_schema_is_migrated_once(ledger_url):
    first = open_ledger(ledger_url)
    assert first.version() == SCHEMA_VERSION == len(MIGRATIONS)
    _open(first, "a", 0)
    first.close()
    again = open_ledger(ledger_url)  # a second open migrates nothing and loses nothing
    assert again.version() == SCHEMA_VERSION and [r.id for r in again.usage()] == ["a"]
    again.close()


def test_concurrent_first_opens_migrate_once(ledger_url):
    errors, ledgers = [], []

    def opener():
        try:
            ledgers.append(open_ledger(ledger_url))
        except Exception as exc:  # pragma: no cover - the failure this test looks for
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rows = ledgers[0].db.query("SELECT version FROM schema_version ORDER BY version")
    assert [r[0] for r in rows] == list(range(1, SCHEMA_VERSION + 1))
    for led in ledgers:
        led.close()


def test_a_version_1_sqlite_ledger_is_upgraded_in_place(tmp_path):
    """A ledger written by the first release (schema 1, created with its original text) keeps its rows."""
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);"
        "CREATE TABLE intervals (id TEXT PRIMARY KEY, kind TEXT NOT NULL, user TEXT NOT NULL, notebook TEXT NOT NULL,"
        " resource TEXT NOT NULL, quantity INTEGER NOT NULL, declared INTEGER NOT NULL, rate_nusd_per_s INTEGER NOT NULL,"
        " start_ns INTEGER NOT NULL, heartbeat_ns INTEGER NOT NULL, stop_ns INTEGER, recovered INTEGER NOT NULL DEFAULT 0,"
        " owner TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '{}');"
        "INSERT INTO intervals VALUES ('old', 'session', 'u', 'n', 'H100', 1, 1, 1097000, 0, 0, 2000000000, 0, 'h:1:1', '{}');"
    )
    db.commit()
    db.close()
    led = Ledger(path)
    assert led.version() == SCHEMA_VERSION
    [rec] = led.usage()
    assert (rec.id, rec.billed_s, rec.cost_microusd) == ("old", 2, 2194)
    led.set_budget("user", "u", "u", 1, 800_000)  # the new table is there


def test_idempotent_open_and_close(ledger):
    assert _open(ledger, "a", 0)
    assert not _open(ledger, "a", 5 * NS_PER_S)  # a retried open changes nothing
    assert ledger.close_interval("a", 2 * NS_PER_S + 1)
    assert not ledger.close_interval("a", 99 * NS_PER_S, {"x": 1})  # a retried stop never double-bills
    [rec] = ledger.usage()
    assert (rec.start_ns, rec.stop_ns, rec.billed_s, rec.cost_microusd) == (0, 2 * NS_PER_S + 1, 3, 3 * 1097)
    assert rec.detail == {}


def test_concurrent_stops_close_once(ledger):
    _open(ledger, "a", 0)
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(ledger.close_interval("a", (i + 1) * NS_PER_S)))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]


def test_stop_merges_detail_and_never_goes_before_the_start(ledger):
    _open(ledger, "a", 10 * NS_PER_S, detail={"host": "h"})
    ledger.close_interval("a", 5 * NS_PER_S, {"usage": {"cpu_s": 1.5}})
    rec = ledger.get("a")
    assert rec.detail == {"host": "h", "usage": {"cpu_s": 1.5}}
    assert rec.stop_ns == rec.start_ns and rec.billed_s == 1  # minimum one second


def test_rate_in_force_is_kept_when_prices_change(ledger):
    meter = Meter(ledger, RateCard.from_config({"H100": 0.001}), heartbeat_s=0)
    first = meter.start(kind="session", user="u", notebook="n", resource="H100")
    meter.stop(first)
    meter.rates = RateCard.from_config({"H100": 0.005})
    second = meter.start(kind="session", user="u", notebook="n", resource="H100")
    meter.stop(second)
    assert [r.rate_nusd_per_s for r in ledger.usage()] == [1_000_000, 5_000_000]


def test_a_sandbox_is_priced_for_its_cpus_and_its_memory(ledger):
    card = RateCard.from_config()
    meter = Meter(ledger, card, heartbeat_s=0)
    sandbox = meter.start(kind="sandbox", user="u", notebook="n", resource="CPU", quantity=2,
                          detail={"memory": 512 << 20})
    fanout = meter.start(kind="map", user="u", notebook="n", resource="CPU", quantity=2)
    assert ledger.get(sandbox).rate_nusd_per_s == card.sandbox_rate(2, 512 << 20) > card.rate("CPU")
    assert ledger.get(fanout).rate_nusd_per_s == card.rate("CPU")  # CPU fan-out has no memory limit to price
    meter.close()


def test_usage_filters_and_windows(ledger):
    _open(ledger, "a", 10)
    ledger.close_interval("a", 20)
    _open(ledger, "b", 30, kind="map", user="v", notebook="m", resource="CPU", quantity=2, rate_nusd_per_s=13_100)
    _open(ledger, "p", 0, kind="provisioned", user="", notebook="")
    assert [r.id for r in ledger.usage(user="u")] == ["a"]
    assert [r.id for r in ledger.usage(kind="map")] == ["b"]
    assert [r.id for r in ledger.usage(notebook="m")] == ["b"]
    assert [r.id for r in ledger.usage(until_ns=15)] == ["a"]
    assert [r.id for r in ledger.usage(since_ns=25)] == ["b"]  # a ended before; b is still open
    assert [r.id for r in ledger.usage()] == ["a", "b"]  # provisioned time is the operator's, not a user's
    assert [r.id for r in ledger.usage(include_provisioned=True)] == ["p", "a", "b"]
    assert [r.id for r in ledger.usage(kind="provisioned")] == ["p"]
    assert [r.id for r in ledger.usage(since_ns=-10**30, until_ns=10**30)] == ["a", "b"]  # beyond BIGINT: all


def test_open_intervals_are_priced_up_to_now(ledger):
    _open(ledger, "a", 0)
    assert ledger.get("a", now_ns=10 * NS_PER_S).cost_microusd == 10 * 1097
    assert ledger.get("a", now_ns=10 * NS_PER_S + 1).billed_s == 11


def test_heartbeats_touch_every_open_interval_in_one_call(ledger):
    ids = [f"i{n}" for n in range(1200)]  # more than SQLite's parameter limit in one statement
    for n, i in enumerate(ids):
        _open(ledger, i, n)
    ledger.close_interval("i7", 100)
    ledger.heartbeat(ids, 5 * NS_PER_S)
    beats = {r.id: r.heartbeat_ns for r in ledger.usage()}
    assert all(beats[i] == 5 * NS_PER_S for i in ids if i != "i7")
    assert beats["i7"] == 100  # a closed interval is not touched


def test_set_start_moves_an_open_interval_only(ledger):
    _open(ledger, "a", 5 * NS_PER_S)
    assert ledger.set_start("a", 2 * NS_PER_S)
    assert ledger.get("a").start_ns == 2 * NS_PER_S
    assert ledger.set_start("a", 9 * NS_PER_S)  # later than its last heartbeat: the heartbeat follows
    assert ledger.get("a").heartbeat_ns == 9 * NS_PER_S
    ledger.close_interval("a", 10 * NS_PER_S)
    assert not ledger.set_start("a", 0)


def test_recover_closes_dead_owners_at_their_last_heartbeat(ledger):
    _open(ledger, "dead", 0, owner=f"{HOST}:1:1")
    _open(ledger, "live", 0, owner=f"{HOST}:2:2")
    _open(ledger, "far-fresh", 0, owner="otherhost:3:3")
    _open(ledger, "far-stale", 0, owner="otherhost:4:4")
    ledger.heartbeat(["dead", "live"], 7 * NS_PER_S)
    ledger.heartbeat(["far-fresh"], 3599 * NS_PER_S)
    closed = ledger.recover(alive=lambda owner: owner.endswith(":2:2"), now_ns=3700 * NS_PER_S)
    assert sorted(closed) == ["dead", "far-stale"]
    recs = {r.id: r for r in ledger.usage()}
    assert recs["dead"].recovered and recs["dead"].stop_ns == 7 * NS_PER_S
    assert recs["far-stale"].recovered and recs["far-stale"].stop_ns == 0
    assert recs["live"].stop_ns is None and recs["far-fresh"].stop_ns is None
    assert ledger.recover(alive=lambda owner: owner.endswith(":2:2"), now_ns=3700 * NS_PER_S) == []


def test_live_owner_is_not_recovered(ledger):
    meter = Meter(ledger, RateCard.from_config(), heartbeat_s=0)
    meter.start(kind="session", user="u", notebook="n", resource="H100")
    assert ledger.recover() == []
    meter.close()
    assert all(r.stop_ns is not None for r in ledger.usage())


def test_crashed_process_intervals_are_recovered_at_last_heartbeat(ledger_url):
    """kill -9 of the process that holds an interval: the next ledger open closes it at its last heartbeat."""
    code = textwrap.dedent(f"""
        import time
        from burstlab.billing import Meter, RateCard, open_ledger
        m = Meter(open_ledger({ledger_url!r}), RateCard.from_config(), heartbeat_s=0.1)
        m.start(kind='session', user='u', notebook='n', resource='H100')
        print('started', flush=True)
        while m.beats < 3:
            time.sleep(0.02)
        print('beating', flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        assert proc.stdout.readline().strip() == "beating"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    ledger = open_ledger(ledger_url)
    [before] = ledger.usage()
    assert before.stop_ns is None and before.heartbeat_ns > before.start_ns
    assert ledger.recover() == [before.id]
    [after] = ledger.usage()
    assert after.recovered and after.stop_ns == before.heartbeat_ns
    assert ledger.recover() == []  # nothing left to recover; closing again changes nothing
    ledger.close()


# -- money in SQL equals money in Python ---------------------------------------------------------

intervals = st.lists(st.tuples(st.integers(0, 10**6 * NS_PER_S), st.integers(-NS_PER_S, 10**5 * NS_PER_S),
                               st.integers(0, 10**7), st.integers(1, 8), st.booleans(),
                               st.sampled_from(["session", "map", "provisioned"])), max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(intervals, st.integers(0, 2 * 10**6 * NS_PER_S))
def test_spending_in_sql_equals_the_sum_of_usage_records(ledger, rows, now):
    user = os.urandom(6).hex()  # each example its own user, in the one ledger of this test
    for n, (start, length, rate, quantity, closed, kind) in enumerate(rows):
        _open(ledger, f"{user}-{n}", start, user=user, rate_nusd_per_s=rate, quantity=quantity, kind=kind)
        if closed:
            ledger.close_interval(f"{user}-{n}", start + length)
    spent, burn = ledger.spending(user=user, now_ns=now)
    recs = ledger.usage(user=user, now_ns=now)
    assert spent == sum(r.cost_microusd for r in recs)
    assert burn == sum(r.rate_nusd_per_s * r.quantity for r in recs if r.stop_ns is None)


# -- budgets -------------------------------------------------------------------------------------

def test_budgets_are_stored_replaced_and_removed(ledger):
    ledger.set_budget("notebook", "a.ipynb", "u", 5_000_000, 800_000)
    ledger.set_budget("notebook", "a.ipynb", "u", 7_000_000, 900_000)  # replaces
    ledger.set_budget("notebook", "a.ipynb", "v", 1_000_000, 800_000)  # another user's notebook of that name
    ledger.set_budget("user", "u", "u", 20_000_000, 800_000)
    mine = ledger.budgets(owner="u")
    assert [(b.scope, b.name, b.limit_microusd, b.soft_ppm) for b in mine] == [
        ("notebook", "a.ipynb", 7_000_000, 900_000), ("user", "u", 20_000_000, 800_000)]
    assert len(ledger.budgets()) == 3
    assert ledger.remove_budget("notebook", "a.ipynb", "u")
    assert not ledger.remove_budget("notebook", "a.ipynb", "u")
    with pytest.raises(ValueError, match="scope"):
        ledger.set_budget("team", "x", "u", 1, 1)


def test_budget_spending_counts_the_scope(ledger):
    _open(ledger, "a", 0, user="u", notebook="a.ipynb")
    ledger.close_interval("a", 10 * NS_PER_S)
    _open(ledger, "b", 0, user="u", notebook="b.ipynb")
    ledger.close_interval("b", 5 * NS_PER_S)
    _open(ledger, "c", 0, user="v", notebook="a.ipynb")  # someone else's notebook of the same name
    ledger.close_interval("c", 100 * NS_PER_S)
    [nb] = [b for b in [ledger.set_budget("notebook", "a.ipynb", "u", 10**6, 800_000)]]
    user = ledger.set_budget("user", "u", "u", 10**6, 800_000)
    assert ledger.budget_spending(nb)[0] == 10 * 1097
    assert ledger.budget_spending(user)[0] == 15 * 1097


# -- the databases themselves ------------------------------------------------------------------

def test_unsupported_ledger_url_names_the_fix():
    with pytest.raises(ConfigError, match="sqlite:///.*postgresql://"):
        open_ledger("mysql://x")


def test_unreachable_postgresql_names_the_url_without_its_password():
    pytest.importorskip("psycopg")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here
    with pytest.raises(ConfigError, match=f"Cannot connect to the PostgreSQL ledger at postgresql://me:\\*\\*\\*@127.0.0.1:{port}"):
        open_ledger(f"postgresql://me:secret@127.0.0.1:{port}/db")


def test_postgresql_connection_dropped_by_the_server_is_reopened(postgres_url):
    import psycopg

    ledger_url = postgres_url
    ledger = open_ledger(ledger_url)
    _open(ledger, "a", 0)
    pid = ledger.db.query("SELECT pg_backend_pid()")[0][0]
    with psycopg.connect(ledger_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.1)
    ledger.heartbeat(["a"], 5 * NS_PER_S)  # reconnects once and writes
    assert ledger.close_interval("a", 6 * NS_PER_S)
    assert ledger.get("a").billed_s == 6
    ledger.close()


def test_owner_tag_names_this_process():
    host, pid, created = owner_tag().split(":")
    assert host == HOST and int(pid) == os.getpid() and int(created) > 0


def test_no_url_means_the_home_ledger_never_a_file_named_none(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ledger = open_ledger(None, tmp_path / "home")
    try:
        assert ledger.where.endswith("ledger.sqlite") and str(tmp_path / "home") in ledger.where
        assert not (tmp_path / "None").exists()
    finally:
        ledger.close()
