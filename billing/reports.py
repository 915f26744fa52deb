"""Reports over usage records: totals grouped by notebook, kind, resource and day; CSV; utilisation.

Pure functions over :class:`~burstlab.wire.UsageRecord` lists (no database): the magics, the Python
API and the REST API shape the same rows. Days are UTC dates of an interval's start; an interval is
never split (it is billed whole, rounded up once).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

from burstlab.wire import UsageRecord

from .gpu_use import combine
from .ledger import PROVISIONED
from .rates import NS_PER_S

GROUP_KEYS = ("notebook", "kind", "resource", "day")
CSV_COLUMNS = ("id", "day", "user", "notebook", "kind", "resource", "quantity", "declared", "start", "stop",
               "billed_s", "rate_nusd_per_s", "cost_microusd", "cost_usd", "recovered", "open")


def day_of(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns / NS_PER_S, _dt.timezone.utc).strftime("%Y-%m-%d")


def iso(ns: int | None) -> str:
    if ns is None:
        return ""
    return _dt.datetime.fromtimestamp(ns / NS_PER_S, _dt.timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class BillRow:
    """Totals of one group: the group's key values, then counts and money."""

    key: tuple[str, ...]
    intervals: int
    billed_s: int  # unit-seconds: a 2-GPU session held 10 s counts 20
    cost_microusd: int
    open: int
    recovered: int
    gpu_use: str = ""  # what the group's GPUs did (gpu_use.combine): "" for no GPU, "unknown (declared)"


def _value(record: UsageRecord, key: str) -> str:
    if key == "day":
        return day_of(record.start_ns)
    if key == "resource":
        return record.resource + (" (declared)" if record.declared else "")
    return str(getattr(record, key))


def group(records: Iterable[UsageRecord], by: Sequence[str] = GROUP_KEYS) -> list[BillRow]:
    """One row per distinct ``by`` value, sorted by key."""
    for key in by:
        if key not in GROUP_KEYS + ("user",):
            raise ValueError(f"cannot group by {key!r}: use {', '.join(GROUP_KEYS + ('user',))}")
    sums: dict[tuple[str, ...], list[int]] = {}
    members: dict[tuple[str, ...], list[UsageRecord]] = {}
    for r in records:
        key = tuple(_value(r, k) for k in by)
        s = sums.setdefault(key, [0, 0, 0, 0, 0])
        s[0] += 1
        s[1] += r.billed_s * r.quantity
        s[2] += r.cost_microusd
        s[3] += r.stop_ns is None
        s[4] += r.recovered
        members.setdefault(key, []).append(r)
    return [BillRow(k, *v, gpu_use=combine(members[k])) for k, v in sorted(sums.items())]


def totals(records: Iterable[UsageRecord]) -> dict:
    """docs/api.md's ``totals``: billed seconds, cost, and cost by kind, notebook and day."""
    out: dict = {"billed_s": 0, "cost_microusd": 0, "by_kind": {}, "by_notebook": {}, "by_day": {}}
    for r in records:
        out["billed_s"] += r.billed_s * r.quantity
        out["cost_microusd"] += r.cost_microusd
        for field, value in (("by_kind", r.kind), ("by_notebook", r.notebook), ("by_day", day_of(r.start_ns))):
            out[field][value] = out[field].get(value, 0) + r.cost_microusd
    return out


def csv_rows(records: Iterable[UsageRecord]) -> list[list]:
    return [[r.id, day_of(r.start_ns), r.user, r.notebook, r.kind, r.resource, r.quantity, r.declared,
             iso(r.start_ns), iso(r.stop_ns), r.billed_s, r.rate_nusd_per_s, r.cost_microusd,
             f"{r.cost_microusd // 1_000_000}.{r.cost_microusd % 1_000_000:06d}", r.recovered, r.stop_ns is None]
            for r in records]


def write_csv(records: Iterable[UsageRecord], target: str | os.PathLike | io.TextIOBase) -> int:
    """Write records as CSV (header first) to a path or an open text file; returns the row count.
    Money is exact: integer micro-dollars, and dollars written from them as a decimal string."""
    rows = csv_rows(records)
    if hasattr(target, "write"):
        writer = csv.writer(target)  # type: ignore[arg-type]
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
        return len(rows)
    with open(target, "w", newline="", encoding="utf-8") as f:
        return write_csv(records, f)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Utilisation:
    """GPU-seconds of one type within a window: leased to users versus provisioned (workers up)."""

    resource: str
    leased_s: float
    provisioned_s: float

    @property
    def fraction(self) -> float | None:
        return None if self.provisioned_s <= 0 else self.leased_s / self.provisioned_s


def _overlap_s(r: UsageRecord, since_ns: int, until_ns: int) -> float:
    stop = r.stop_ns if r.stop_ns is not None else until_ns
    return max(0, min(stop, until_ns) - max(r.start_ns, since_ns)) * r.quantity / NS_PER_S


def utilisation(records: Iterable[UsageRecord], since_ns: int, until_ns: int) -> list[Utilisation]:
    """Per GPU type: leased GPU-seconds (sessions and maps) / provisioned GPU-seconds (kind
    ``provisioned``), each clipped to ``[since_ns, until_ns)``. CPU and sandbox time is left out."""
    leased: dict[str, float] = {}
    provisioned: dict[str, float] = {}
    for r in records:
        if r.resource in ("CPU", "MEM") or r.kind == "sandbox":
            continue
        target = provisioned if r.kind == PROVISIONED else leased
        target[r.resource] = target.get(r.resource, 0.0) + _overlap_s(r, since_ns, until_ns)
    return [Utilisation(t, leased.get(t, 0.0), provisioned.get(t, 0.0)) for t in sorted(set(leased) | set(provisioned))]


__all__ = ["CSV_COLUMNS", "GROUP_KEYS", "BillRow", "Utilisation", "day_of", "group", "iso", "totals",
           "utilisation", "write_csv"]
