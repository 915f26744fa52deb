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


def to_frame(records: list[UsageRecord], pd):
    from burstlab.billing.reports import day_of

    rows = []
    for r in records:
        row = r.to_json()
        row["day"] = day_of(r.start_ns)
        row["start"] = pd.Timestamp(r.start_ns, unit="ns", tz="UTC")
        row["stop"] = pd.Timestamp(r.stop_ns, unit="ns", tz="UTC") if r.stop_ns is not None else pd.NaT
        row["open"] = r.stop_ns is None
        row["cost_usd"] = r.cost_microusd / 1_000_000  # for display; sum cost_microusd for exact totals
        rows.append(row)
    columns = ["id", "day", "user", "notebook", "kind", "resource", "quantity", "declared", "start", "stop",
               "billed_s", "rate_nusd_per_s", "cost_microusd", "cost_usd", "recovered", "open", "start_ns",
               "heartbeat_ns", "stop_ns", "detail"]
    return pd.DataFrame(rows, columns=columns).astype({"stop_ns": "Int64"})


__all__ = ["group_usage", "usage", "write_csv"]
