"""Budget decisions: pure functions over integers (micro-dollars, nano-dollars per second).

The workspace's watcher asks these and acts (warns, stops sessions, cancels maps); the ledger stores
the budgets. Nothing here does I/O.
"""

from __future__ import annotations

import datetime as _dt
import math

from burstlab.wire import usd  # the one money formatter (re-exported: budget messages use it as policy.usd)

OK, WARNING, EXCEEDED = "ok", "warning", "exceeded"
PPM = 1_000_000
DEFAULT_SOFT_FRACTION = 0.8


def soft_ppm(fraction: float) -> int:
    """A soft-warning fraction (0 < f <= 1) as integer parts per million; ValueError naming the range."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction) \
            or not 0 < fraction <= 1:
        raise ValueError(f"soft_fraction {fraction!r}: give a number above 0 and at most 1 (e.g. 0.8 warns at 80%).")
    return int(round(fraction * PPM))


def decide(spent_microusd: int, limit_microusd: int, soft_ppm: int) -> str:
    """``ok``, ``warning`` (spent reached the soft fraction of the limit) or ``exceeded`` (reached the limit)."""
    if spent_microusd >= limit_microusd:
        return EXCEEDED
    if spent_microusd * PPM >= limit_microusd * soft_ppm:
        return WARNING
    return OK


def admit(spent_microusd: int, limit_microusd: int, start_microusd: int) -> bool:
    """Whether something that costs at least ``start_microusd`` (one billed second) may start."""
    return spent_microusd + start_microusd <= limit_microusd


def seconds_until(spent_microusd: int, limit_microusd: int, burn_nusd_per_s: int) -> float | None:
    """Seconds until spending at ``burn`` nano-dollars per second reaches the limit (None: never)."""
    if spent_microusd >= limit_microusd:
        return 0.0
    if burn_nusd_per_s <= 0:
        return None
    return (limit_microusd - spent_microusd) * 1000 / burn_nusd_per_s


def next_check(heartbeat_s: float, until_limit_s: list[float | None], floor_s: float = 0.05) -> float:
    """How long the watcher sleeps: a heartbeat, or less when a budget will run out sooner."""
    soonest = min((s for s in until_limit_s if s is not None), default=None)
    if soonest is None:
        return heartbeat_s
    return max(floor_s, min(heartbeat_s, soonest))


def map_estimate_microusd(total: int | None, finished: int, per_item_s: float | None, rate_nusd_per_s: int,
                          quantity: int = 1) -> int | None:
    """What the inputs of a map not yet finished will cost, from the measured seconds per input.

    Worker-seconds are what is billed, however many workers share them, so the estimate is
    ``remaining inputs x seconds per input x rate``, rounded up to a whole second; None while nothing
    has been measured or the input count is unknown.
    """
    if total is None or per_item_s is None:
        return None
    remaining = max(0, int(total) - int(finished))
    seconds = math.ceil(remaining * max(0.0, per_item_s))
    return -(-seconds * int(rate_nusd_per_s) * int(quantity) // 1000)


PERIODS = ("", "day", "week", "month")  # "": no period, everything ever spent counts


def check_period(period: str | None) -> str:
    """A budget period as stored ("" for none), or ValueError naming the valid ones."""
    period = (period or "").strip().lower()
    if period in ("none", "total"):
        period = ""
    if period not in PERIODS:
        raise ValueError(f"period {period!r}: use 'day', 'week' or 'month' (spending resets at its start, UTC), "
                         "or leave it out for a budget that never resets.")
    return period


def period_start_ns(period: str, now_ns: int) -> int | None:
    """When the current ``period`` began, in UTC: midnight; Monday's midnight (ISO weeks); the 1st's
    midnight. None for no period. Integer arithmetic on the calendar, no local time."""
    if not period:
        return None
    day_ns = 86_400 * 10**9
    days = int(now_ns) // day_ns  # whole days since 1970-01-01, a Thursday
    if period == "day":
        return days * day_ns
    if period == "week":
        return (days - (days + 3) % 7) * day_ns  # back to Monday
    date = _dt.date(1970, 1, 1) + _dt.timedelta(days=days)
    return (date.replace(day=1) - _dt.date(1970, 1, 1)).days * day_ns


def describe_period(period: str) -> str:
    """`` this month (UTC)`` and the like, for messages ("" for no period)."""
    return {"day": " today (UTC)", "week": " this week (UTC, from Monday)", "month": " this month (UTC)"}.get(period, "")


def describe(scope: str, name: str, spent_microusd: int, limit_microusd: int) -> str:
    """``notebook budget for 'a.ipynb': $5.0123 spent of $5.0000`` (pure text, used in every message)."""
    return f"{scope} budget for {name!r}: {usd(spent_microusd)} spent of {usd(limit_microusd)}"


__all__ = ["DEFAULT_SOFT_FRACTION", "EXCEEDED", "OK", "PERIODS", "PPM", "WARNING", "admit", "check_period", "decide",
           "describe", "describe_period", "map_estimate_microusd", "next_check", "period_start_ns", "seconds_until",
           "soft_ppm", "usd"]
