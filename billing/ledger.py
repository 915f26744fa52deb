"""The ledger: one table of metered intervals, in SQLite (WAL) by default.

Each interval is a resource held from ``start_ns`` to ``stop_ns`` (integer nanoseconds since the
epoch), with the rate in force when it opened stored beside it, so changing prices never rewrites
history. Writes are idempotent: opening an id twice or closing a closed interval changes nothing.
An interval left open by a process that died is closed at its last heartbeat and marked
``recovered`` the next time a ledger is opened on the same host.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterable

import psutil

from burstlab.errors import ConfigError
from burstlab.wire import UsageRecord

from .rates import billed_seconds, cost_microusd

MIGRATIONS = [
    """
    CREATE TABLE intervals (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        user TEXT NOT NULL,
        notebook TEXT NOT NULL,
        resource TEXT NOT NULL,
        quantity INTEGER NOT NULL,
        declared INTEGER NOT NULL,
        rate_nusd_per_s INTEGER NOT NULL,
        start_ns INTEGER NOT NULL,
        heartbeat_ns INTEGER NOT NULL,
        stop_ns INTEGER,
        recovered INTEGER NOT NULL DEFAULT 0,
        owner TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX intervals_open ON intervals (stop_ns) WHERE stop_ns IS NULL;
    CREATE INDEX intervals_user ON intervals (user, start_ns);
    """,
]

_COLUMNS = (
    "id, kind, user, notebook, resource, quantity, declared, rate_nusd_per_s, start_ns, heartbeat_ns, stop_ns, recovered, "
    "detail"
)


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


class Ledger:
    """SQLite ledger. Safe to share between threads; several processes may open one file."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
                current = row[0] or 0
                for version, script in enumerate(MIGRATIONS, start=1):
                    if version > current:
                        for statement in filter(str.strip, script.split(";")):
                            self._db.execute(statement)
                        self._db.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writes ---------------------------------------------------------------------------------

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
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO intervals (id, kind, user, notebook, resource, quantity, declared, "
                "rate_nusd_per_s, start_ns, heartbeat_ns, owner, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (id, kind, user, notebook, resource, int(quantity), int(bool(declared)), int(rate_nusd_per_s),
                 int(start_ns), int(start_ns), owner, json.dumps(detail or {})),
            )

    def heartbeat(self, ids: Iterable[str], now_ns: int) -> None:
        ids = list(ids)
        if not ids:
            return
        with self._lock:
            self._db.executemany(
                "UPDATE intervals SET heartbeat_ns = ? WHERE id = ? AND stop_ns IS NULL",
                [(int(now_ns), i) for i in ids],
            )

    def close_interval(self, id: str, stop_ns: int, detail: dict | None = None) -> bool:
        """Close an open interval, merging ``detail`` into its detail (e.g. CPU seconds used);
        returns False (and changes nothing) if it was already closed."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE intervals SET stop_ns = MAX(?, start_ns), heartbeat_ns = MAX(?, start_ns), "
                "detail = json_patch(detail, ?) WHERE id = ? AND stop_ns IS NULL",
                (int(stop_ns), int(stop_ns), json.dumps(detail or {}), id),
            )
            return cur.rowcount == 1

    def recover(self, alive: Callable[[str], bool] = owner_alive) -> list[str]:
        """Close every open interval whose owning process is gone, at its last heartbeat."""
        with self._lock:
            rows = self._db.execute("SELECT id, owner FROM intervals WHERE stop_ns IS NULL").fetchall()
            dead = [i for i, owner in rows if not alive(owner)]
            self._db.executemany(
                "UPDATE intervals SET stop_ns = heartbeat_ns, recovered = 1 WHERE id = ? AND stop_ns IS NULL",
                [(i,) for i in dead],
            )
        return dead

    # -- reads ----------------------------------------------------------------------------------

    def usage(
        self,
        *,
        user: str | None = None,
        notebook: str | None = None,
        kind: str | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
        now_ns: int | None = None,
    ) -> list[UsageRecord]:
        """Intervals matching the filters, oldest first. Open ones are billed up to ``now_ns``."""
        where, args = [], []
        for column, value in (("user", user), ("notebook", notebook), ("kind", kind)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since_ns is not None:
            where.append("COALESCE(stop_ns, ?) >= ?")
            args += [2**62, int(since_ns)]
        if until_ns is not None:
            where.append("start_ns < ?")
            args.append(int(until_ns))
        sql = f"SELECT {_COLUMNS} FROM intervals"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY start_ns, id"
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
        now_ns = time.time_ns() if now_ns is None else now_ns
        return [_record(row, now_ns) for row in rows]

    def get(self, id: str, now_ns: int | None = None) -> UsageRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM intervals WHERE id = ?", (id,)).fetchone()
        return None if row is None else _record(row, time.time_ns() if now_ns is None else now_ns)


def _record(row: tuple, now_ns: int) -> UsageRecord:
    (id, kind, user, notebook, resource, quantity, declared, rate, start_ns, heartbeat_ns, stop_ns, recovered, detail) = row
    billed = billed_seconds(start_ns, stop_ns if stop_ns is not None else max(now_ns, start_ns))
    return UsageRecord(
        id=id, kind=kind, user=user, notebook=notebook, resource=resource, quantity=quantity,
        declared=bool(declared), rate_nusd_per_s=rate, start_ns=start_ns, heartbeat_ns=heartbeat_ns,
        stop_ns=stop_ns, billed_s=billed, cost_microusd=cost_microusd(billed, rate, quantity),
        recovered=bool(recovered), detail=json.loads(detail or "{}"),
    )


def open_ledger(url: str = "", home: str | os.PathLike = "") -> Ledger:
    """The ledger a URL names: empty -> ``home/ledger.sqlite``; ``sqlite:///path``; ``sqlite://:memory:``."""
    if not url:
        return Ledger(Path(home) / "ledger.sqlite")
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://"):]
        return Ledger(":memory:" if rest in ("", ":memory:", "/:memory:") else rest)
    raise ConfigError(
        f"Ledger URL {url!r} is not supported: use sqlite:///path/to/ledger.sqlite or leave it empty "
        "for the default SQLite ledger under BURSTLAB_HOME."
    )


__all__ = ["Ledger", "open_ledger", "owner_alive", "owner_tag"]
