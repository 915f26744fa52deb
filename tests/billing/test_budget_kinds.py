"""Budgets cover every kind and every period: sandboxes count and a hard stop closes them; a budget
may reset each day, week or month (UTC, on a clock the test controls); one set below what is
already spent says what it stops."""

import datetime as dt
import os
import time

import pytest
from waiting import wait_for as _wait  # tests/waiting.py

import burstlab
from burstlab.billing.budgets import check_period, period_start_ns
from burstlab.errors import BudgetExceeded, ConfigError, SandboxError

S = 10**9
H100_PER_S = 1_097_000  # nano-dollars


def _ns(text: str) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()) * S




@pytest.mark.parametrize("now, period, start", [
    ("2026-11-28T17:45:12", "day", "2026-11-28T00:00:00"),
    ("2026-11-28T17:45:12", "week", "2026-11-23T00:00:00"),  # a Saturday: back to Monday
    ("2026-11-23T00:00:00", "week", "2026-11-23T00:00:00"),
    ("2026-11-28T17:45:12", "month", "2026-11-01T00:00:00"),
    ("2024-02-29T23:59:59", "month", "2024-02-01T00:00:00"),
    ("2027-01-01T00:00:00", "month", "2027-01-01T00:00:00"),
    ("1970-01-01T05:00:00", "week", "1969-12-29T00:00:00"),
])
def test_period_starts_are_utc_calendar_boundaries(now, period, start):
    assert period_start_ns(period, _ns(now) + 123) == _ns(start)
    assert period_start_ns("", _ns(now)) is None


def test_a_period_must_be_one_of_day_week_month():
    assert check_period("Month") == "month" and check_period(None) == ""
    with pytest.raises(ValueError, match="use 'day', 'week' or 'month'"):
        check_period("fortnight")


def test_a_daily_budget_counts_today_only_and_resets_at_midnight_utc(tmp_path, ledger_url):
    ws = burstlab.Workspace(home=str(tmp_path), ledger_url=ledger_url, notebook="daily.ipynb", heartbeat_interval=0)
    try:
        clock = [_ns("2026-11-28T10:30:00")]
        ws.watcher.clock = lambda: clock[0]
        nb = ws.notebook
        # 23:59 -> 00:01 (one minute of it today), then 10:00 -> 10:10 today
        for start, stop in (("2026-11-27T23:59:00", "2026-11-28T00:01:00"), ("2026-11-28T10:00:00", "2026-11-28T10:10:00")):
            interval = ws.meter.start(kind="session", user=ws.user, notebook=nb, resource="H100", start_ns=_ns(start))
            ws.meter.stop(interval, stop_ns=_ns(stop))
        whole = ws.set_budget("notebook", nb, 100)
        assert whole.spent_microusd == 720 * H100_PER_S // 1000  # no period: everything ever spent
        daily = ws.set_budget("notebook", nb, 0.70, period="day")
        assert daily.spent_microusd == 660 * H100_PER_S // 1000  # 60 s after midnight + 600 s
        assert daily.state == "exceeded"
        with pytest.raises(BudgetExceeded, match=r"spent of \$0\.7000 today \(UTC\)"):
            ws.watcher.admit(user=ws.user, notebook=nb, what="a new H100 session", start_microusd=1097)
        clock[0] = _ns("2026-11-29T00:00:05")  # the next day: the budget starts again
        assert ws.budgets()[0].spent_microusd == 0
        ws.watcher.admit(user=ws.user, notebook=nb, what="a new H100 session", start_microusd=1097)
        monthly = ws.set_budget("notebook", nb, 0.70, period="month")
        assert monthly.spent_microusd == 720 * H100_PER_S // 1000 and monthly.state == "exceeded"
        clock[0] = _ns("2026-12-01T00:00:00")
        assert ws.budgets()[0].state == "ok"
        assert ws.ledger.budgets()[0].period == "month"
        with pytest.raises(ConfigError, match="period 'hourly'"):
            ws.set_budget("notebook", nb, 1, period="hourly")
    finally:
        ws.close()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root (namespaces and cgroups)")


@needs_root
def test_a_budget_closes_an_open_sandbox_at_its_limit_and_refuses_the_next(tmp_path):
    ws = burstlab.Workspace(home=str(tmp_path), notebook="sandboxed.ipynb", heartbeat_interval=0.2,
                            sandbox_pool_size=0)
    try:
        sb = ws.sandbox(timeout=30)
        assert sb.run("print(6 * 7)").stdout == "42\n"
        (row,) = ws.usage(kind="sandbox")
        burn = row.rate_nusd_per_s * row.quantity
        spent = ws.ledger.spending(user=ws.user, notebook=ws.notebook)[0]
        limit = spent + 3 * burn // 1000  # about three more seconds of this sandbox
        ws.set_budget("notebook", ws.notebook, limit / 1e6)
        _wait(lambda: not sb.started, 30, "the watcher to close the sandbox at the limit")
        with pytest.raises(SandboxError, match="Stopped at the limit"):
            sb.run("1")
        (row,) = ws.usage(kind="sandbox")
        assert row.stop_ns is not None
        total = ws.ledger.spending(user=ws.user, notebook=ws.notebook)[0]
        assert limit <= total <= limit + 2 * burn // 1000 + 1  # closed within its second at the limit
        with pytest.raises(BudgetExceeded, match="Refused.*a new sandbox"):
            ws.sandbox(timeout=30)
    finally:
        ws.close()


@needs_root
def test_a_budget_set_below_spending_says_what_it_stops(tmp_path, capsys):
    ws = burstlab.Workspace(home=str(tmp_path), notebook="lowered.ipynb", heartbeat_interval=0.2,
                            sandbox_pool_size=0)
    try:
        sb = ws.sandbox(timeout=30)
        assert sb.run("x = 1").error is None
        _wait(lambda: ws.ledger.spending(user=ws.user, notebook=ws.notebook)[0] > 0, 10, "spending")
        status = ws.set_budget("notebook", ws.notebook, 0.000001)
        assert status.state == "exceeded"
        assert ws.watcher.last_stops == [f"the sandbox with kernel pid {sb.kernel_pid}"]
        err = capsys.readouterr().err
        assert f"setting it stops the sandbox with kernel pid {sb.kernel_pid} now" in err
        _wait(lambda: not sb.started, 30, "the sandbox to be closed")
        assert ws.set_budget("notebook", ws.notebook, 0.000001).state == "exceeded"
        assert ws.watcher.last_stops == []  # nothing left to stop: nothing said
    finally:
        ws.close()
