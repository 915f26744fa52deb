"""A map's checkpoint: every finished chunk's results, appended to a local SQLite file as they arrive.

``burstlab.map(f, xs, checkpoint="runs/eval-7")`` keeps ``runs/eval-7/results.sqlite`` (a path ending
in ``.sqlite`` or ``.db`` is the file itself). One row per chunk that came back: the input indices it
covers, a digest of the function and of those inputs (as pickled to travel), and the results buffer
exactly as the worker sent it (no re-pickling). A rerun of the same call reads the rows, re-pickles
the new inputs at each row's indices and reuses a row only if its digest matches: an edited function
or a changed input is computed again, never served stale. SQLite in WAL mode survives the notebook's
process being killed (kill -9) at any point (a row is whole or absent); it does not fsync, so an OS
crash or power loss may lose recent rows (they are computed again).
"""

from __future__ import annotations

import hashlib
import marshal
import os
import pickle
import sqlite3
import time
from array import array
from pathlib import Path
from typing import Any, Iterator

import cloudpickle

from burstlab.errors import FanoutError

SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    first INTEGER NOT NULL,      -- first input index (rows are read in this order)
    count INTEGER NOT NULL,
    indices BLOB,                -- NULL: first .. first+count-1; else array('q') bytes
    digest BLOB NOT NULL,        -- blake2b(function digest + the inputs' pickle)
    results BLOB NOT NULL        -- the worker's pickled list of results, one per index
);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
"""


def dumps(value: Any) -> bytes:
    """Pickle as inputs and results travel: the C pickler, cloudpickle for what it cannot do."""
    try:
        return pickle.dumps(value, protocol=5)
    except Exception:
        return cloudpickle.dumps(value, protocol=5)


def function_digest(fn: Any, fn_blob: bytes) -> bytes:
    """What identifies a function across processes: its code (and its closure's and defaults' values),
    not cloudpickle's bytes, which carry per-process ids for classes defined in a notebook."""
    h = hashlib.blake2b(digest_size=16)
    h.update(getattr(fn, "_burstlab_identity", b""))
    code = getattr(fn, "__code__", None)
    if code is None:
        h.update(fn_blob)
        return h.digest()
    h.update(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', '')}".encode())
    h.update(marshal.dumps(code))
    extra = (fn.__defaults__, fn.__kwdefaults__,
             tuple(c.cell_contents for c in (fn.__closure__ or ()) if _filled(c)))
    try:
        h.update(dumps(extra))
    except Exception:
        h.update(fn_blob)
    return h.digest()


def _filled(cell) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


def chunk_digest(fn_digest: bytes, items_blob: bytes) -> bytes:
    return hashlib.blake2b(fn_digest + items_blob, digest_size=16).digest()


def store_path(location: str | os.PathLike) -> Path:
    path = Path(location).expanduser()
    if path.suffix in (".sqlite", ".db"):
        return path
    return path / "results.sqlite"


class Checkpoint:
    """The results store of one map (see the module docstring). Used from the map's own thread."""

    def __init__(self, location: str | os.PathLike, fn_digest: bytes, *, readonly: bool = False):
        self.path = store_path(location)
        self.fn_digest = fn_digest
        if not readonly:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise FanoutError(f"Cannot create the checkpoint folder {self.path.parent}: {exc}. "
                                  "Pass checkpoint= a path you can write.") from exc
        elif not self.path.exists():
            raise FanoutError(f"No checkpoint at {self.path}: was the map started with this checkpoint?")
        self.db = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
        try:
            # No fsync: a committed row is in the OS's cache, which a kill -9 of the notebook does not lose (an OS
            # crash may; the store is a cache of results). With fsync, a fresh store's first write costs ~20 ms.
            self.db.execute("PRAGMA synchronous=OFF")
            if not readonly:
                self.db.executescript(SCHEMA)
            self.db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise FanoutError(f"The checkpoint {self.path} cannot be read ({exc}); delete it (its results are "
                              "computed again) or pass another checkpoint=.") from exc
        self.written = 0

    # -- writing ------------------------------------------------------------------------------------

    def append(self, indices, digest: bytes, results_blob: bytes) -> None:
        """One finished chunk: ``indices`` (a range or a list) and its results buffer, as one row."""
        if isinstance(indices, range) and indices.step == 1:
            first, count, packed = indices.start, len(indices), None
        else:
            first, count, packed = min(indices), len(indices), array("q", indices).tobytes()
        self.db.execute("INSERT INTO chunks(first, count, indices, digest, results) VALUES (?, ?, ?, ?, ?)",
                        (first, count, packed, digest, results_blob))
        self.written += count

    def set_meta(self, **values: Any) -> None:
        self.db.executemany("INSERT OR REPLACE INTO meta(k, v) VALUES (?, ?)",
                            [(k, str(v)) for k, v in values.items()])

    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT k, v FROM meta"))

    # -- reading ------------------------------------------------------------------------------------

    def rows(self) -> list[tuple[int, Any, bytes]]:
        """``(row id, indices, digest)`` of every stored chunk, by first index."""
        out = []
        for rowid, first, count, packed, digest in self.db.execute(
                "SELECT id, first, count, indices, digest FROM chunks ORDER BY first, id"):
            out.append((rowid, range(first, first + count) if packed is None else array("q", packed).tolist(),
                        bytes(digest)))
        return out

    def results(self, rowid: int) -> list:
        (blob,) = self.db.execute("SELECT results FROM chunks WHERE id = ?", (rowid,)).fetchone()
        return pickle.loads(blob)

    def iterate(self, limit: int | None = None) -> Iterator[tuple[int, Any]]:
        """``(index, result)`` for every stored input below ``limit``, in index order (one row in memory)."""
        valid: dict[int, int] = {}
        for rowid, indices, _ in self.rows():
            for i in indices:
                if limit is None or i < limit:
                    valid.setdefault(i, rowid)
        cache_id, cache = None, {}
        for index in sorted(valid):
            rowid = valid[index]
            if rowid != cache_id:
                cache_id, cache = rowid, self._row_map(rowid)
            yield index, cache[index]

    def _row_map(self, rowid: int) -> dict[int, Any]:
        first, count, packed = self.db.execute("SELECT first, count, indices FROM chunks WHERE id = ?",
                                               (rowid,)).fetchone()
        indices = range(first, first + count) if packed is None else array("q", packed).tolist()
        return dict(zip(indices, self.results(rowid)))

    def close(self) -> None:
        try:
            self.db.close()
        except Exception:  # noqa: BLE001 - closing twice, or a store already gone: nothing is left to write
            pass


class Resume:
    """Which stored rows a rerun may reuse: each row is checked against the new inputs at its indices,
    once every one of them has been read from the (lazy) input iterable."""

    def __init__(self, store: Checkpoint):
        self.store = store
        self.rows = store.rows()
        self.owner: dict[int, int] = {}  # input index -> position in self.rows (first row wins)
        for pos, (_, indices, _) in enumerate(self.rows):
            for i in indices:
                self.owner.setdefault(i, pos)
        self.waiting: dict[int, dict[int, Any]] = {}  # row position -> index -> value read so far
        self.reused = 0

    def __bool__(self) -> bool:
        return bool(self.owner)

    def offer(self, index: int, value: Any) -> tuple[list, list] | bool:
        """An input was read. False: compute it. True: held for its row. ``(indices, values)``: its row
        is complete: the stored results (values) to reuse, or, when the row's inputs changed, the
        indices and values to compute (returned as ``([], [(index, value), ...])``)."""
        pos = self.owner.get(index)
        if pos is None:
            return False
        rowid, indices, digest = self.rows[pos]
        held = self.waiting.setdefault(pos, {})
        held[index] = value
        mine = [i for i in indices if self.owner.get(i) == pos]
        if len(held) < len(mine):
            return True
        del self.waiting[pos]
        values = [held[i] for i in mine]
        same = len(mine) == len(indices) and chunk_digest(self.store.fn_digest, dumps(values)) == digest
        if same:
            results = self.store.results(rowid)
            self.reused += len(mine)
            return list(indices), results
        self.store.db.execute("DELETE FROM chunks WHERE id = ?", (rowid,))  # stale: replaced by the new results
        return [], list(zip(mine, values))

    def leftovers(self) -> list[tuple[int, Any]]:
        """Inputs held for rows that never completed (the inputs got shorter): compute them."""
        out = [(i, v) for held in self.waiting.values() for i, v in held.items()]
        self.waiting.clear()
        return sorted(out, key=lambda p: p[0])


def wait_for(store: Checkpoint, timeout: float | None, poll: float = 0.2) -> dict[str, str]:
    """Wait until a spawned map's store says it ended; its meta."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        meta = store.meta()
        if meta.get("state") in ("done", "failed", "cancelled"):
            return meta
        if not _owner_alive(meta):
            raise FanoutError(
                f"The map {meta.get('name', '?')} ({meta.get('id', '?')}) stopped: the process that ran it "
                f"(pid {meta.get('pid')}) is gone. Its finished results are in {store.path}: run the same map "
                f"with checkpoint={str(store.path.parent)!r} to compute only the rest.")
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"The map {meta.get('name', '?')} ({meta.get('id', '?')}) has not finished after "
                               f"{timeout:g} s ({store.written or '?'} results stored so far); wait longer.")
        time.sleep(poll)


def _owner_alive(meta: dict[str, str]) -> bool:
    """Whether the process running a map is still there (unknown owners, or another host's, count as alive)."""
    import socket

    pid = meta.get("pid")
    if not pid or meta.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


__all__ = ["Checkpoint", "Resume", "chunk_digest", "dumps", "function_digest", "store_path", "wait_for"]
