import subprocess
import sys
import time

import pytest

from burstlab.billing import Meter, RateCard, billed_seconds, cost_microusd, open_ledger
from burstlab.billing.ledger import Ledger
from burstlab.billing.rates import NS_PER_S
from burstlab.errors import ConfigError


@pytest.mark.parametrize(
    "length_ns, billed", [(0, 1), (1, 1), (NS_PER_S, 1), (NS_PER_S + 1, 2), (59 * NS_PER_S + 5, 60), (-5, 1)]
)
def test_billed_seconds_round_up_minimum_one(length_ns, billed):
    assert billed_seconds(1000, 1000 + length_ns) == billed


def test_cost_is_integer_microdollars_rounded_up():
    h100 = RateCard.from_config().rate("H100")
    assert h100 == 1_097_000  # $0.001097/s in nano-dollars
    assert cost_microusd(1, h100) == 1097
    assert cost_microusd(3600, h100, quantity=2) == 7_898_400
    assert cost_microusd(1, 1) == 1  # a fraction of a micro-dollar rounds up
    assert RateCard.from_config({"h100": 0.002}).rate("H100") == 2_000_000


def _open(ledger, id, start, **kw):
    ledger.open_interval(id=id, kind="session", user="u", notebook="n", resource="H100", quantity=1,
                         declared=True, rate_nusd_per_s=1_097_000, start_ns=start, owner=kw.pop("owner", "x:1:1"), **kw)


def test_ledger_idempotent_open_and_close(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    _open(ledger, "a", 0)
    _open(ledger, "a", 5 * NS_PER_S)  # a retried open changes nothing
    assert ledger.close_interval("a", 2 * NS_PER_S + 1)
    assert not ledger.close_interval("a", 99 * NS_PER_S, {"x": 1})  # a retried stop never double-bills
    [rec] = ledger.usage()
    assert (rec.start_ns, rec.stop_ns, rec.billed_s, rec.cost_microusd) == (0, 2 * NS_PER_S + 1, 3, 3 * 1097)
    assert rec.detail == {}


def test_stop_merges_detail(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    _open(ledger, "a", 0, detail={"host": "h"})
    ledger.close_interval("a", NS_PER_S, {"usage": {"cpu_s": 1.5}})
    assert ledger.get("a").detail == {"host": "h", "usage": {"cpu_s": 1.5}}


def test_rate_in_force_is_kept_when_prices_change(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    meter = Meter(ledger, RateCard.from_config({"H100": 0.001}), heartbeat_s=0)
    first = meter.start(kind="session", user="u", notebook="n", resource="H100")
    meter.stop(first)
    meter.rates = RateCard.from_config({"H100": 0.005})
    second = meter.start(kind="session", user="u", notebook="n", resource="H100")
    meter.stop(second)
    assert [r.rate_nusd_per_s for r in ledger.usage()] == [1_000_000, 5_000_000]


def test_usage_filters(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    _open(ledger, "a", 10)
    ledger.open_interval(id="b", kind="map", user="v", notebook="m", resource="CPU", quantity=2, declared=False,
                         rate_nusd_per_s=13_100, start_ns=20, owner="x:1:1")
    assert [r.id for r in ledger.usage(user="u")] == ["a"]
    assert [r.id for r in ledger.usage(kind="map")] == ["b"]
    assert [r.id for r in ledger.usage(notebook="m")] == ["b"]
    assert [r.id for r in ledger.usage(until_ns=15)] == ["a"]


def test_crashed_owner_intervals_are_recovered_at_last_heartbeat(tmp_path):
    """kill -9 of the process that holds an interval: the next ledger open closes it at its heartbeat."""
    path = tmp_path / "l.sqlite"
    code = (
        "import os, time\n"
        "from burstlab.billing import Meter, RateCard, open_ledger\n"
        f"m = Meter(open_ledger('sqlite:///{path}'), RateCard.from_config(), heartbeat_s=0.1)\n"
        "m.start(kind='session', user='u', notebook='n', resource='H100')\n"
        "print('started', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.5)  # a few heartbeats
    proc.kill()
    proc.wait()
    ledger = open_ledger(f"sqlite:///{path}")
    [before] = ledger.usage()
    assert before.stop_ns is None
    assert ledger.recover() == [before.id]
    [after] = ledger.usage()
    assert after.recovered and after.stop_ns == after.heartbeat_ns > after.start_ns
    assert ledger.recover() == []  # nothing left to recover; closing again changes nothing


def test_live_owner_is_not_recovered(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    meter = Meter(ledger, RateCard.from_config(), heartbeat_s=0)
    meter.start(kind="session", user="u", notebook="n", resource="H100")
    assert ledger.recover() == []
    meter.close()
    assert all(r.stop_ns is not None for r in ledger.usage())


def test_unsupported_ledger_url_names_the_fix():
    with pytest.raises(ConfigError, match="sqlite:///"):
        open_ledger("mysql://x")
