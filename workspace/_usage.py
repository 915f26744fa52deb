"""``burstlab.usage()``: the ledger's rows for a user, as a pandas DataFrame (or a list), and CSV export."""

from __future__ import annotations

import datetime as _dt
import os
from typing import Any

from burstlab.billing.reports import group as group_usage
from burstlab.billing.reports import write_csv
from burstlab.wire import UsageRecord


def _ns(when: Any) -> int | None:
    """None, epoch seconds, an ISO date/time string, a date or a datetime (naive = UTC) -> epoch ns."""
    if when is None:
        return None
    if isinstance(when, (int, float)) and not isinstance(when, bool):
        return int(when * 1_000_000_000)
    if isinstance(when, str):
        when = _dt.datetime.fromisoformat(when)
    if isinstance(when, _dt.date) and not isinstance(when, _dt.datetime):
        when = _dt.datetime(when.year, when.month, when.day)
    if isinstance(when, _dt.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=_dt.timezone.utc)
        return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000
    raise TypeError(f"since/until {when!r}: give epoch seconds, an ISO date ('2026-11-24'), a date or a datetime.")


def usage(*, user: str | None = None, notebook: str | None = None, kind: str | None = None, since: Any = None,
          until: Any = None, all_users: bool = False, csv: str | os.PathLike | None = None,
          as_frame: bool | None = None, workspace=None):
    """Metered usage: one row per interval (sessions, map workers, sandboxes), open ones priced up to now.

    By default the rows of this workspace's user, every notebook; ``user=``/``all_users=True`` for
    others' (operators), ``notebook=``, ``kind=`` (``session``/``map``/``sandbox``/``provisioned``),
    ``since=``/``until=`` (epoch seconds, ISO dates, dates or datetimes; intervals overlapping the
    window) narrow it. Returns a pandas DataFrame when pandas is installed (``as_frame=False`` for a
    list of :class:`UsageRecord`). ``csv=PATH`` also writes the rows there, money exact.
    """
    if workspace is None:
        from burstlab.workspace.workspace import get_workspace

        workspace = get_workspace()
    who = None if all_users else (user or workspace.user)
    records = workspace.usage(user=who, notebook=notebook, kind=kind, since_ns=_ns(since), until_ns=_ns(until))
    if csv is not None:
        write_csv(records, csv)
    if as_frame is False:
        return records
    try:
        import pandas as pd
    except ImportError:
        if as_frame:
            raise
        return records
    return to_frame(records, pd)


INT_COLUMNS = ("quantity", "billed_s", "rate_nusd_per_s", "cost_microusd", "start_ns", "heartbeat_ns", "stop_ns")


def to_frame(records: list[UsageRecord], pd):
    """The records as a DataFrame whose integers stay exact: nanoseconds, rates and money are pandas
    ``Int64`` columns (``stop_ns`` is <NA> while open), built column by column so that no value ever
    passes through a float. ``cost_usd`` alone is a float, for display; sum ``cost_microusd``."""
    from burstlab.billing.reports import day_of

    columns: dict = {
        "id": [r.id for r in records],
        "day": [day_of(r.start_ns) for r in records],
        "user": [r.user for r in records],
        "notebook": [r.notebook for r in records],
        "kind": [r.kind for r in records],
        "resource": [r.resource for r in records],
        "quantity": [r.quantity for r in records],
        "declared": pd.array([r.declared for r in records], dtype=bool),
        "start": pd.to_datetime(pd.array([r.start_ns for r in records], dtype="Int64"), unit="ns", utc=True),
        "stop": pd.to_datetime(pd.array([r.stop_ns for r in records], dtype="Int64"), unit="ns", utc=True),
        "billed_s": [r.billed_s for r in records],
        "rate_nusd_per_s": [r.rate_nusd_per_s for r in records],
        "cost_microusd": [r.cost_microusd for r in records],
        "cost_usd": [r.cost_microusd / 1_000_000 for r in records],
        "recovered": pd.array([r.recovered for r in records], dtype=bool),
        "open": pd.array([r.stop_ns is None for r in records], dtype=bool),
        "start_ns": [r.start_ns for r in records],
        "heartbeat_ns": [r.heartbeat_ns for r in records],
        "stop_ns": [r.stop_ns for r in records],
        "detail": [r.detail for r in records],
    }
    for name in INT_COLUMNS:
        columns[name] = pd.array(columns[name], dtype="Int64")
    columns["cost_usd"] = pd.array(columns["cost_usd"], dtype="float64")
    return pd.DataFrame(columns)


__all__ = ["group_usage", "usage", "write_csv"]
