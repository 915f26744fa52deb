"""The two databases a ledger can live in, behind one small interface.

SQL is written once, with ``?`` placeholders and portable syntax (``ON CONFLICT DO NOTHING``, partial
indexes, ``BIGINT``, the ``"user"`` column quoted); each backend adapts placeholders and knows how to
open a transaction that locks out other writers. Driver exceptions become :class:`~burstlab.errors.ConfigError` here,
at one boundary, with a message that names the fix.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from burstlab.errors import ConfigError

MIGRATION_LOCK = 0x6275_7273  # "burs": the PostgreSQL advisory lock held while migrating


def _tighten(path: Path, mode: int) -> None:
    """``path`` to ``mode`` if it is ours and looser (the ledger holds every user's usage)."""
    try:
        st = path.stat()
        if st.st_uid == os.geteuid() and st.st_mode & 0o777 & ~mode:
            path.chmod(mode)
    except OSError:
        pass


def _private_file(path: Path) -> None:
    """The ledger's folder 0700 (when we make it) and the file itself 0600, before SQLite opens it."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Only ever a file we create (O_EXCL): opening and closing a database file that a connection of this
        # process already has open drops every POSIX lock SQLite holds on it (fcntl's rule), and the next
        # reader then fails with "disk I/O error".
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        return  # SQLite says what is wrong, in the ConfigError below
    _tighten(path, 0o600)


def _set_wal(db: sqlite3.Connection, deadline_s: float = 30.0) -> None:
    """WAL mode. Several processes opening a new ledger at once race to switch it, and SQLite answers the losers
    "database is locked" at once, without its busy handler: try again for up to ``deadline_s`` seconds."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqliteBackend:
    """SQLite in WAL mode: one connection, shared by this process's threads under a lock."""

    dialect = "sqlite"

    def __init__(self, path: str):
        self.where = path
        if path != ":memory:":
            _private_file(Path(path))
        self.lock = threading.RLock()
        try:
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            _set_wal(self._db)
            self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise ConfigError(f"Cannot open the SQLite ledger at {path}: {exc}. Check that the directory is "
                              "writable, or set BURSTLAB_LEDGER_URL / c.BurstLab.ledger_url elsewhere.") from exc
        if path != ":memory:":  # SQLite makes -wal and -shm with the database's mode; older ones may be looser
            for suffix in ("-wal", "-shm"):
                _tighten(Path(path + suffix), 0o600)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction: other writers (threads and processes) wait until it commits."""
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if self._db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        with self.lock:
            return self._db.execute(sql, args).rowcount

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.lock:
            self._db.executemany(sql, rows)

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self.lock:
            return self._db.execute(sql, args).fetchall()

    def touch(self, sql_in: str, ids: list[str], now_ns: int) -> None:
        """``UPDATE ... SET heartbeat_ns = now WHERE id IN ids`` in one transaction."""
        with self.transaction():
            for start in range(0, len(ids), 500):  # SQLite's default limit is 999 parameters
                part = ids[start:start + 500]
                self._db.execute(sql_in.replace("(?)", "(" + ",".join("?" * len(part)) + ")"), [now_ns, *part])

    def close(self) -> None:
        with self.lock:
            self._db.close()


class PostgresBackend:
    """PostgreSQL through psycopg 3: one autocommit connection shared under a lock, reconnecting once
    if the server dropped it (every ledger write is idempotent, so repeating one is safe)."""

    dialect = "postgresql"

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError(
                f"BURSTLAB_LEDGER_URL names PostgreSQL ({_redact(url)}) but its driver is not installed: "
                "pip install 'burstlab[postgresql]' (or 'psycopg[binary]')."
            ) from exc
        self._psycopg = psycopg
        self.url = url
        self.where = _redact(url)
        self.lock = threading.RLock()
        self._in_transaction = False
        self._conn = self._connect()

    def _connect(self):
        try:
            return self._psycopg.connect(self.url, autocommit=True, connect_timeout=10)
        except self._psycopg.Error as exc:
            raise ConfigError(f"Cannot connect to the PostgreSQL ledger at {self.where}: {exc}. Check that the "
                              "server runs and the URL (user, password, port, database) is right.") from exc

    def _run(self, fn):
        psycopg = self._psycopg
        with self.lock:
            try:
                try:
                    return fn(self._conn)
                except psycopg.OperationalError:
                    if self._in_transaction or (not self._conn.closed and not self._conn.broken):
                        raise
                    self._conn = self._connect()  # the server restarted or the network blinked: once more
                    return fn(self._conn)
            except psycopg.Error as exc:
                if self._in_transaction:
                    raise  # transaction() rolls back and translates
                raise ConfigError(f"The PostgreSQL ledger at {self.where} failed: {exc}") from exc

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self.lock:
            if self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            self._in_transaction = True
            try:
                with self._conn.transaction():
                    yield
            except self._psycopg.Error as exc:
                raise ConfigError(f"The PostgreSQL ledger at {self.where} refused a write: {exc}") from exc
            finally:
                self._in_transaction = False

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("?", "%s")

    def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        return self._run(lambda c: c.execute(self._sql(sql), tuple(args)).rowcount)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._run(lambda c: c.cursor().executemany(self._sql(sql), [tuple(r) for r in rows]))

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        return self._run(lambda c: c.execute(self._sql(sql), tuple(args)).fetchall())

    def touch(self, sql_in: str, ids: list[str], now_ns: int) -> None:
        sql = self._sql(sql_in.replace("IN (?)", "= ANY(?)"))
        self._run(lambda c: c.execute(sql, (now_ns, ids)))

    def close(self) -> None:
        with self.lock:
            self._conn.close()


def why_unwritable(exc: BaseException) -> str:
    """A failed write in words: ``disk full (database or disk is full)``, ``read-only (...)``,
    ``the server does not answer (...)``; the driver's own text stays in brackets."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = text.lower()
    if "disk is full" in low or "no space left" in low or "disk full" in low or "could not extend file" in low:
        reason = "disk full"
    elif "readonly" in low or "read-only" in low or "permission denied" in low:
        reason = "read-only"
    elif any(w in low for w in ("connection refused", "server closed", "terminating connection", "connection failed",
                                "cannot connect", "the connection is lost", "connection is closed", "timeout")):
        reason = "the server does not answer"
    else:
        reason = "the write failed"
    return f"{reason} ({text})"


def ledger_error(where: str, exc: BaseException, consequence: str) -> "LedgerError":
    """The error for a ledger that refused what must come first, naming it, why, and the fix."""
    from burstlab.errors import LedgerError

    return LedgerError(
        f"The ledger at {where} is not writable: {why_unwritable(exc)}. {consequence} Free space there or start "
        "the database, or point BURSTLAB_LEDGER_URL / c.BurstLab.ledger_url at a writable ledger; then run it again."
    )


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


def backend_for(url: str, home: str | os.PathLike) -> SqliteBackend | PostgresBackend:
    """Empty -> ``home/ledger.sqlite``; ``sqlite:///path``; ``sqlite://:memory:``; ``postgresql://...``."""
    if not url:
        return SqliteBackend(str(Path(home) / "ledger.sqlite"))
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://"):]
        return SqliteBackend(":memory:" if rest in ("", ":memory:", "/:memory:") else rest)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresBackend(url)
    raise ConfigError(
        f"Ledger URL {_redact(url)!r} is not supported: use sqlite:///path/to/ledger.sqlite, "
        "postgresql://user:password@host:5432/dbname, or leave it empty for the default SQLite ledger "
        "under BURSTLAB_HOME."
    )


__all__ = ["PostgresBackend", "SqliteBackend", "backend_for", "ledger_error", "why_unwritable"]
