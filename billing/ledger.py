"""The ledger: metered intervals and budgets, in SQLite (WAL) by default or PostgreSQL.

Each interval is a resource held from ``start_ns`` to ``stop_ns`` (integer nanoseconds since the
epoch), with the rate in force when it opened stored beside it, so changing prices never rewrites
history. Writes are idempotent: opening an id twice or closing a closed interval changes nothing, so
a retried write never double-bills. An interval left open by a process that died is closed at its
last heartbeat and marked ``recovered`` the next time a ledger is opened on the same host (or on any
host, once its heartbeat is older than ``stale_after_s``).

The schema is versioned: ``MIGRATIONS[i]`` takes a ledger from version ``i`` to ``i + 1``, once, under a
lock (``BEGIN IMMEDIATE`` in SQLite, an advisory lock in PostgreSQL), in the same transaction that
records the new version.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import psutil

from burstlab.wire import UsageRecord

from ._backends import MIGRATION_LOCK, backend_for
from .budgets import check_period, period_start_ns
from .rates import NS_PER_S, billed_seconds, cost_microusd

# Version 1 is the schema SQLite ledgers were created with; its text was made portable (BIGINT,
# the "user" column quoted) without changing what it means in SQLite, where BIGINT is INTEGER.
MIGRATIONS = [
    """
    CREATE TABLE intervals (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        "user" TEXT NOT NULL,
        notebook TEXT NOT NULL,
        resource TEXT NOT NULL,
        quantity BIGINT NOT NULL,
        declared INTEGER NOT NULL,
        rate_nusd_per_s BIGINT NOT NULL,
        start_ns BIGINT NOT NULL,
        heartbeat_ns BIGINT NOT NULL,
        stop_ns BIGINT,
        recovered INTEGER NOT NULL DEFAULT 0,
        owner TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX intervals_open ON intervals (stop_ns) WHERE stop_ns IS NULL;
    CREATE INDEX intervals_user ON intervals ("user", start_ns);
    """,
    """
    CREATE TABLE budgets (
        scope TEXT NOT NULL,
        name TEXT NOT NULL,
        owner TEXT NOT NULL,
        limit_microusd BIGINT NOT NULL,
        soft_ppm BIGINT NOT NULL,
        updated_ns BIGINT NOT NULL,
        PRIMARY KEY (scope, name, owner)
    );
    CREATE INDEX intervals_notebook ON intervals (notebook, "user");
    """,
    """
    ALTER TABLE budgets ADD COLUMN period TEXT NOT NULL DEFAULT ''
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = ('id, kind, "user", notebook, resource, quantity, declared, rate_nusd_per_s, start_ns, heartbeat_ns, '
            "stop_ns, recovered, detail")
PROVISIONED = "provisioned"  # a GPU worker's up-time: the operator's cost, never billed to a user
SCOPES = ("user", "notebook")


def owner_tag(pid: int | None = None) -> str:
    """``host:pid:create_time`` of a process: identifies it even after its pid is reused."""
    proc = psutil.Process(pid or os.getpid())
    return f"{socket.gethostname()}:{proc.pid}:{int(proc.create_time())}"


def owner_alive(tag: str) -> bool:
    """Whether the process an owner tag names still runs (always True for another host's)."""
    host, _, rest = tag.partition(":")
    if host != socket.gethostname():
        return True
    pid_text, _, created = rest.partition(":")
    try:
        proc = psutil.Process(int(pid_text))
        return int(proc.create_time()) == int(created)
    except (psutil.NoSuchProcess, ValueError):
        return False


def is_orphan(owner: str, heartbeat_ns: int, now_ns: int, stale_after_ns: int,
              alive: Callable[[str], bool] = owner_alive, host: str | None = None) -> bool:
    """Whether an open interval's owner is gone: on this host, its process is dead; on another host
    (we cannot see its processes), it has not heartbeaten for ``stale_after_ns``."""
    if owner.partition(":")[0] == (host or socket.gethostname()):
        return not alive(owner)
    return now_ns - heartbeat_ns > stale_after_ns


@dataclass(frozen=True)
class BudgetRow:
    """A budget as stored: who it limits (``scope``/``name``, set by ``owner``), in micro-dollars."""

    scope: str
    name: str
    owner: str
    limit_microusd: int
    soft_ppm: int
    period: str = ""  # "", "day", "week" or "month": spending counts from the period's start (UTC)


def _billed_sql(end: str, start: str = "start_ns") -> str:
    """SQL for billed_seconds(start, end): rounded up, minimum 1 (integer division in both databases)."""
    length = f"({end} - {start})"
    return f"(CASE WHEN {length} <= {NS_PER_S} THEN 1 ELSE ({length} + {NS_PER_S - 1}) / {NS_PER_S} END)"


class Ledger:
    """Intervals and budgets in one database; safe to share between threads, and between processes."""

    def __init__(self, path_or_url: str | os.PathLike | None = "", home: str | os.PathLike = ""):
        """``Ledger(path)`` opens SQLite at ``path``; ``Ledger("postgresql://...")`` a PostgreSQL ledger."""
        url = "" if path_or_url is None else str(path_or_url)  # None: the default, never a file named "None"
        if url and "://" not in url:
            url = "sqlite://" + (url if url == ":memory:" else os.path.abspath(url))
        self.db = backend_for(url, home)
        self.home = str(home)
        self.dialect = self.db.dialect
        self.where = self.db.where
        self.path = self.where  # kept for callers that printed it
        self._migrate()

    def _migrate(self) -> None:
        with self.db.transaction():
            if self.dialect == "postgresql":
                self.db.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
            self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = self.db.query("SELECT MAX(version) FROM schema_version")[0][0] or 0
            for version, script in enumerate(MIGRATIONS, start=1):
                if version > current:
                    for statement in filter(str.strip, script.split(";")):
                        self.db.execute(statement)
                    self.db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))

    @property
    def journal_dir(self) -> Path | None:
        """Where meters keep the closes this ledger could not take (billing/journal.py): beside a
        SQLite file, under BURSTLAB_HOME for PostgreSQL, nowhere for an in-memory ledger."""
        if self.dialect == "sqlite":
            return None if self.where == ":memory:" else Path(self.where).parent / "journal"
        home = self.home or os.environ.get("BURSTLAB_HOME") or str(Path.home() / ".local" / "share" / "burstlab")
        return Path(home) / "journal"

    def version(self) -> int:
        return int(self.db.query("SELECT MAX(version) FROM schema_version")[0][0] or 0)

    def close(self) -> None:
        self.db.close()

    # -- intervals: writes ----------------------------------------------------------------------

    def open_interval(
        self,
        *,
        id: str,
        kind: str,
        user: str,
        notebook: str,
        resource: str,
        quantity: int,
        declared: bool,
        rate_nusd_per_s: int,
        start_ns: int,
        owner: str,
        detail: dict | None = None,
    ) -> bool:
        """Open an interval; False (and nothing changes) if ``id`` exists already (a retried open)."""
        changed = self.db.execute(
            'INSERT INTO intervals (id, kind, "user", notebook, resource, quantity, declared, rate_nusd_per_s, '
            "start_ns, heartbeat_ns, owner, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (id) DO NOTHING",
            (id, kind, user, notebook, resource, int(quantity), int(bool(declared)), int(rate_nusd_per_s),
             int(start_ns), int(start_ns), owner, json.dumps(detail or {}, sort_keys=True)),
        )
        return changed == 1

    def heartbeat(self, ids: Iterable[str], now_ns: int) -> None:
        """Mark open intervals as still held at ``now_ns`` (one statement for all of them)."""
        ids = list(ids)
        if ids:
            self.db.touch("UPDATE intervals SET heartbeat_ns = ? WHERE id IN (?) AND stop_ns IS NULL", ids, int(now_ns))

    def set_start(self, id: str, start_ns: int) -> bool:
        """Move an open interval's start (a map learns when its first input really started)."""
        start_ns = int(start_ns)
        return self.db.execute(
            "UPDATE intervals SET start_ns = ?, heartbeat_ns = CASE WHEN heartbeat_ns < ? THEN ? ELSE heartbeat_ns END "
            "WHERE id = ? AND stop_ns IS NULL", (start_ns, start_ns, start_ns, id),
        ) == 1

    def close_interval(self, id: str, stop_ns: int, detail: dict | None = None) -> bool:
        """Close an open interval, merging ``detail`` into its detail (e.g. CPU seconds used);
        returns False (and changes nothing) if it was already closed: a retried stop never double-bills."""
        with self.db.transaction():
            lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
            rows = self.db.query(f"SELECT start_ns, detail FROM intervals WHERE id = ? AND stop_ns IS NULL{lock}", (id,))
            if not rows:
                return False
            start_ns, old = rows[0]
            merged = {**json.loads(old or "{}"), **(detail or {})}
            stop_ns = max(int(stop_ns), int(start_ns))
            return self.db.execute(
                "UPDATE intervals SET stop_ns = ?, heartbeat_ns = ?, detail = ? WHERE id = ? AND stop_ns IS NULL",
                (stop_ns, stop_ns, json.dumps(merged, sort_keys=True), id),
            ) == 1

    def recover(self, alive: Callable[[str], bool] = owner_alive, now_ns: int | None = None,
                stale_after_s: float = 3600.0) -> list[str]:
        """Close every open interval whose owner is gone at its last heartbeat, marked recovered.

        On this host an owner is gone when its process is; on another host (a shared PostgreSQL
        ledger) when its heartbeat is older than ``stale_after_s``. Returns the ids closed now.
        """
        from .journal import replay

        # Closes a dead meter could not write are exact: they go first, heartbeats only for the rest.
        closed = replay(self.journal_dir, self.where,
                        lambda i, stop, detail: self.close_interval(i, stop, {**detail, "journaled": True}), alive)
        now_ns = time.time_ns() if now_ns is None else now_ns
        stale = int(stale_after_s * NS_PER_S)
        rows = self.db.query("SELECT id, owner, heartbeat_ns FROM intervals WHERE stop_ns IS NULL")
        dead = [i for i, owner, beat in rows if is_orphan(owner, beat, now_ns, stale, alive)]
        for interval_id in dead:
            if self.db.execute("UPDATE intervals SET stop_ns = heartbeat_ns, recovered = 1 "
                               "WHERE id = ? AND stop_ns IS NULL", (interval_id,)) == 1:
                closed.append(interval_id)
        return closed

    # -- intervals: reads -----------------------------------------------------------------------

    def usage(
        self,
        *,
        user: str | None = None,
        notebook: str | None = None,
        kind: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        now_ns: int | None = None,
        include_provisioned: bool = False,
    ) -> list[UsageRecord]:
        """Intervals matching the filters, oldest first. Open ones are billed up to ``now_ns``.

        ``since_ns``/``until_ns`` keep intervals that overlap that window (an interval is billed whole).
        Provisioned GPU time (the operator's, kind ``provisioned``) is left out unless asked for.
        """
        where, args = self._filters(user, notebook, kind, include_provisioned)
        if since_ns is not None:
            where.append("(stop_ns IS NULL OR stop_ns >= ?)")
            args.append(_clamp(since_ns))
        if until_ns is not None:
            where.append("start_ns < ?")
            args.append(_clamp(until_ns))
        sql = f"SELECT {_COLUMNS} FROM intervals"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_ns, id"
        rows = self.db.query(sql, args)
        now_ns = time.time_ns() if now_ns is None else now_ns
        return [_record(row, now_ns) for row in rows]

    def get(self, id: str, now_ns: int | None = None) -> UsageRecord | None:
        rows = self.db.query(f"SELECT {_COLUMNS} FROM intervals WHERE id = ?", (id,))
        return _record(rows[0], time.time_ns() if now_ns is None else now_ns) if rows else None

    def open_ids(self, owner: str | None = None) -> list[str]:
        if owner is None:
            return [r[0] for r in self.db.query("SELECT id FROM intervals WHERE stop_ns IS NULL")]
        return [r[0] for r in self.db.query("SELECT id FROM intervals WHERE stop_ns IS NULL AND owner = ?", (owner,))]

    @staticmethod
    def _filters(user, notebook, kind, include_provisioned=False) -> tuple[list[str], list]:
        where, args = [], []
        for column, value in (('"user"', user), ("notebook", notebook), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if kind is None and not include_provisioned:
            where.append("kind <> ?")
            args.append(PROVISIONED)
        return where, args

    def spending(self, *, user: str | None = None, notebook: str | None = None,
                 now_ns: int | None = None, since_ns: int | None = None) -> tuple[int, int]:
        """``(spent_microusd, burn_nusd_per_s)`` of the matching intervals, in one query.

        Spent is exactly the sum of ``usage(...)``'s ``cost_microusd`` (open intervals priced up to
        ``now_ns``); the burn rate is what the open ones add per second. With ``since_ns`` (a budget
        period's start) only time from then on counts: an interval that began earlier is billed from
        ``since_ns``, one that ended by then not at all.
        """
        now_ns = time.time_ns() if now_ns is None else int(now_ns)
        where, args = self._filters(user, notebook, None)
        end = f"COALESCE(stop_ns, CASE WHEN start_ns > {now_ns} THEN start_ns ELSE {now_ns} END)"
        billed = _billed_sql(end)
        if since_ns is not None:
            since = _clamp(since_ns)
            billed = _billed_sql(end, f"(CASE WHEN start_ns < {since} THEN {since} ELSE start_ns END)")
            where.append(f"{end} > {since}")
        sql = (f"SELECT COALESCE(SUM(({billed} * rate_nusd_per_s * quantity + 999) / 1000), 0), "
               "COALESCE(SUM(CASE WHEN stop_ns IS NULL THEN rate_nusd_per_s * quantity ELSE 0 END), 0) "
               "FROM intervals")
        if where:
            sql += " WHERE " + " AND ".join(where)
        spent, burn = self.db.query(sql, args)[0]
        return int(spent), int(burn)

    # -- budgets --------------------------------------------------------------------------------

    def set_budget(self, scope: str, name: str, owner: str, limit_microusd: int, soft_ppm: int,
                   now_ns: int | None = None, period: str = "") -> BudgetRow:
        """Create or replace a budget (idempotent). ``period`` ("", "day", "week", "month") resets its
        spending at each period's start, in UTC."""
        if scope not in SCOPES:
            raise ValueError(f"scope {scope!r}: use one of {', '.join(SCOPES)}")
        period = check_period(period)
        args = (int(limit_microusd), int(soft_ppm), time.time_ns() if now_ns is None else int(now_ns), period)
        self.db.execute(
            "INSERT INTO budgets (scope, name, owner, limit_microusd, soft_ppm, updated_ns, period) "
            "VALUES (?,?,?,?,?,?,?) ON CONFLICT (scope, name, owner) DO UPDATE SET limit_microusd = ?, "
            "soft_ppm = ?, updated_ns = ?, period = ?",
            (scope, name, owner, *args, *args),
        )
        return BudgetRow(scope, name, owner, int(limit_microusd), int(soft_ppm), period)

    def remove_budget(self, scope: str, name: str, owner: str) -> bool:
        return self.db.execute("DELETE FROM budgets WHERE scope = ? AND name = ? AND owner = ?",
                               (scope, name, owner)) == 1

    def budgets(self, owner: str | None = None) -> list[BudgetRow]:
        sql = "SELECT scope, name, owner, limit_microusd, soft_ppm, period FROM budgets"
        rows = self.db.query(sql + " WHERE owner = ? ORDER BY scope, name" if owner is not None
                             else sql + " ORDER BY scope, name, owner", (owner,) if owner is not None else ())
        return [BudgetRow(s, n, o, int(lim), int(soft), p or "") for s, n, o, lim, soft, p in rows]

    def budget_spending(self, row: BudgetRow, now_ns: int | None = None) -> tuple[int, int]:
        """``(spent, burn)`` of what a budget limits: the user's usage, or the notebook's (its owner's),
        since the start of the budget's period (UTC) if it has one."""
        now_ns = time.time_ns() if now_ns is None else int(now_ns)
        since = period_start_ns(row.period, now_ns)
        if row.scope == "user":
            return self.spending(user=row.name, now_ns=now_ns, since_ns=since)
        return self.spending(user=row.owner, notebook=row.name, now_ns=now_ns, since_ns=since)


def _clamp(ns: int) -> int:
    """A time filter within BIGINT's range (a window far in the past or future means "everything")."""
    return max(-(2**63), min(2**63 - 1, int(ns)))


def _record(row: tuple, now_ns: int) -> UsageRecord:
    (id, kind, user, notebook, resource, quantity, declared, rate, start_ns, heartbeat_ns, stop_ns, recovered, detail) = row
    billed = billed_seconds(start_ns, stop_ns if stop_ns is not None else max(now_ns, start_ns))
    return UsageRecord(
        id=id, kind=kind, user=user, notebook=notebook, resource=resource, quantity=int(quantity),
        declared=bool(declared), rate_nusd_per_s=int(rate), start_ns=int(start_ns), heartbeat_ns=int(heartbeat_ns),
        stop_ns=None if stop_ns is None else int(stop_ns), billed_s=billed,
        cost_microusd=cost_microusd(billed, rate, quantity), recovered=bool(recovered), detail=json.loads(detail or "{}"),
    )


def open_ledger(url: str = "", home: str | os.PathLike = "") -> Ledger:
    """The ledger a URL names: empty -> ``home/ledger.sqlite``; ``sqlite:///path``; ``sqlite://:memory:``;
    ``postgresql://user:password@host:port/dbname`` (needs ``pip install 'burstlab[postgresql]'``)."""
    return Ledger(url, home=home)


__all__ = ["MIGRATIONS", "PROVISIONED", "SCHEMA_VERSION", "BudgetRow", "Ledger", "is_orphan", "open_ledger",
           "owner_alive", "owner_tag"]
