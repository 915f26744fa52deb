"""The arithmetic of money, property-based: rounding, rates, budgets, estimates, reports. No I/O."""

import csv
import io
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from burstlab.billing import budgets, reports
from burstlab.billing.rates import GIB, NS_PER_S, RateCard, billed_seconds, cost_microusd, usd_to_microusd, usd_to_nusd
from burstlab.errors import ConfigError
from burstlab.wire import UsageRecord

ns = st.integers(min_value=0, max_value=10 * 365 * 86400 * NS_PER_S)
lengths = st.integers(min_value=-10 * NS_PER_S, max_value=30 * 86400 * NS_PER_S)
rates = st.integers(min_value=0, max_value=50_000_000)  # up to $0.05 per unit-second
quantities = st.integers(min_value=1, max_value=64)


@given(ns, lengths)
def test_billed_seconds_is_the_length_rounded_up_minimum_one(start, length):
    billed = billed_seconds(start, start + length)
    assert billed >= 1
    assert billed * NS_PER_S >= length  # never less than held
    if length > NS_PER_S:
        assert (billed - 1) * NS_PER_S < length  # never a whole second more than held
    else:
        assert billed == 1


@given(ns, lengths, lengths)
def test_billed_seconds_grow_with_the_length(start, a, b):
    a, b = sorted((a, b))
    assert billed_seconds(start, start + a) <= billed_seconds(start, start + b)


@given(st.integers(min_value=1, max_value=10**8), rates, quantities)
def test_cost_is_the_exact_nano_dollar_amount_rounded_up_to_a_micro_dollar(billed, rate, quantity):
    cost = cost_microusd(billed, rate, quantity)
    nano = billed * rate * quantity
    assert isinstance(cost, int)
    assert cost * 1000 >= nano > (cost - 1) * 1000


@given(st.integers(min_value=1, max_value=10**6), st.integers(min_value=1, max_value=10**6), rates, quantities)
def test_billing_two_intervals_costs_at_most_a_micro_dollar_more_each_than_one(a, b, rate, quantity):
    whole = cost_microusd(a + b, rate, quantity)
    parts = cost_microusd(a, rate, quantity) + cost_microusd(b, rate, quantity)
    assert whole <= parts <= whole + 1


@given(st.decimals(min_value=0, max_value=1000, places=9, allow_nan=False, allow_infinity=False))
def test_rates_from_config_are_exact_decimals(usd):
    assert usd_to_nusd(usd) == int(usd * 10**9)
    assert usd_to_nusd(str(usd)) == int(usd * 10**9)


@given(st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False, allow_infinity=False))
def test_budget_amounts_are_exact_decimals(usd):
    assert usd_to_microusd(usd) == int(usd * 10**6)
    assert usd_to_microusd(float(usd)) == int(usd * 10**6)  # a float's shortest repr is its decimal digits


@pytest.mark.parametrize("bad", [-1, "x", float("nan"), float("inf")])
def test_bad_amounts_name_the_fix(bad):
    with pytest.raises(ConfigError, match="dollars"):
        usd_to_microusd(bad)


def test_known_prices():
    card = RateCard.from_config()
    assert card.rate("H100") == 1_097_000 and card.rate("h100") == 1_097_000
    assert cost_microusd(3600, card.rate("H100"), 2) == 7_898_400  # two H100s for an hour: $7.8984
    assert RateCard.from_config({"h100": 0.002}).rate("H100") == 2_000_000
    assert card.rate("NEVER-HEARD-OF") == card.rate("H100")  # unknown types bill at the fallback until priced


@given(st.integers(min_value=1, max_value=64), st.integers(min_value=0, max_value=1 << 40))
def test_sandbox_rate_covers_cpu_and_memory(cpus, memory):
    card = RateCard.from_config()
    per_cpu = card.sandbox_rate(cpus, memory)
    exact = card.rate("CPU") * cpus + Decimal(card.rate("MEM")) * memory / GIB  # nano-dollars per second
    assert per_cpu * cpus >= exact  # never under-charges
    assert per_cpu * cpus < exact + cpus  # over by less than a nano-dollar per CPU-second


# -- budgets -------------------------------------------------------------------------------------

money = st.integers(min_value=0, max_value=10**12)
limits = st.integers(min_value=1, max_value=10**12)
softs = st.integers(min_value=1, max_value=budgets.PPM)


@given(money, limits, softs)
def test_decide(spent, limit, soft):
    state = budgets.decide(spent, limit, soft)
    assert (state == budgets.EXCEEDED) == (spent >= limit)
    if state == budgets.OK:
        assert spent * budgets.PPM < limit * soft
    if state == budgets.WARNING:
        assert limit * soft <= spent * budgets.PPM and spent < limit


@given(money, money, limits, softs)
def test_decide_only_gets_worse_as_spending_grows(a, b, limit, soft):
    order = [budgets.OK, budgets.WARNING, budgets.EXCEEDED]
    a, b = sorted((a, b))
    assert order.index(budgets.decide(a, limit, soft)) <= order.index(budgets.decide(b, limit, soft))


def test_decide_examples():
    five = 5_000_000
    assert budgets.decide(3_999_999, five, 800_000) == "ok"
    assert budgets.decide(4_000_000, five, 800_000) == "warning"
    assert budgets.decide(five, five, 800_000) == "exceeded"
    assert budgets.soft_ppm(0.8) == 800_000
    for bad in (0, 1.5, -0.1, float("nan"), True):
        with pytest.raises(ValueError, match="at most 1"):
            budgets.soft_ppm(bad)


@given(money, limits, st.integers(min_value=1, max_value=10**9))
def test_seconds_until_the_limit(spent, limit, burn):
    t = budgets.seconds_until(spent, limit, burn)
    if spent >= limit:
        assert t == 0
    else:
        assert spent + t * burn / 1000 == pytest.approx(limit, rel=1e-9)
    assert budgets.seconds_until(0, limit, 0) is None


def test_admit_and_next_check():
    assert budgets.admit(4_998_903, 5_000_000, 1097)
    assert not budgets.admit(4_998_904, 5_000_000, 1097)
    assert budgets.next_check(5.0, [None, 2.5, 9.0]) == 2.5
    assert budgets.next_check(5.0, [None]) == 5.0
    assert budgets.next_check(5.0, [0.0]) == 0.05


@given(st.integers(min_value=0, max_value=10**6), st.integers(min_value=0, max_value=10**6),
       st.floats(min_value=0, max_value=100), rates, quantities)
def test_map_estimate(total, finished, per_item_s, rate, quantity):
    est = budgets.map_estimate_microusd(total, finished, per_item_s, rate, quantity)
    remaining = max(0, total - finished)
    assert est * 1000 >= remaining * per_item_s * rate * quantity * (1 - 1e-12)
    assert budgets.map_estimate_microusd(None, 0, 1.0, rate) is None
    assert budgets.map_estimate_microusd(10, 0, None, rate) is None


def test_usd_text():
    assert budgets.usd(5_000_000) == "$5.0000"
    assert budgets.usd(1_234_567_891) == "$1,234.5679"  # rounded up, as billing rounds (burstlab.wire.usd)
    assert budgets.usd(99_901) == "$0.1000" and budgets.usd(99_900) == "$0.0999"
    assert budgets.describe("notebook", "a.ipynb", 4_100_000, 5_000_000) == \
        "notebook budget for 'a.ipynb': $4.1000 spent of $5.0000"


# -- reports ------------------------------------------------------------------------------------

def _record(i, start, length, rate, quantity, kind="session", notebook="n", resource="H100", stop=True):
    billed = billed_seconds(start, start + length)
    return UsageRecord(id=f"r{i}", kind=kind, user="u", notebook=notebook, resource=resource, quantity=quantity,
                       declared=False, rate_nusd_per_s=rate, start_ns=start, heartbeat_ns=start + length,
                       stop_ns=start + length if stop else None, billed_s=billed,
                       cost_microusd=cost_microusd(billed, rate, quantity))


records = st.lists(
    st.builds(lambda i, s, l, r, q, k, n: _record(i, s, l, r, q, k, n), st.integers(0, 10**6), ns,
              st.integers(0, 10**6 * NS_PER_S), rates, quantities, st.sampled_from(["session", "map", "sandbox"]),
              st.sampled_from(["a.ipynb", "b.ipynb"])),
    max_size=30,
)


@settings(max_examples=50)
@given(records)
def test_groups_add_up_to_the_totals(rs):
    rows = reports.group(rs)
    assert sum(r.cost_microusd for r in rows) == sum(r.cost_microusd for r in rs) == reports.totals(rs)["cost_microusd"]
    assert sum(r.intervals for r in rows) == len(rs)
    by_kind = reports.totals(rs)["by_kind"]
    assert sum(by_kind.values()) == sum(r.cost_microusd for r in rs)


@settings(max_examples=50)
@given(records)
def test_csv_is_exact(rs):
    out = io.StringIO()
    assert reports.write_csv(rs, out) == len(rs)
    parsed = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [int(p["cost_microusd"]) for p in parsed] == [r.cost_microusd for r in rs]
    assert all(Decimal(p["cost_usd"]) * 10**6 == int(p["cost_microusd"]) for p in parsed)


def test_utilisation_clips_to_the_window():
    s = NS_PER_S
    rs = [
        _record(1, 0, 100 * s, 1, 2, kind="provisioned"),  # 2 GPUs up for 100 s
        _record(2, 10 * s, 20 * s, 1, 1),  # a session on one of them, 20 s
        _record(3, 90 * s, 40 * s, 1, 1, kind="map"),  # a map worker, 10 s of it inside the window
        _record(4, 0, 50 * s, 1, 1, kind="sandbox", resource="CPU"),  # not a GPU
    ]
    [u] = reports.utilisation(rs, 0, 100 * s)
    assert (u.resource, u.leased_s, u.provisioned_s, u.fraction) == ("H100", 30.0, 200.0, 0.15)
