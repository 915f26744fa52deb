"""Stops the ledger could not record, kept until it can.

When a close cannot be written (a full disk, a read-only file, PostgreSQL away), the meter still
releases what it metered and keeps the close here: in memory, and in a small file it preallocated
when it started (so a full disk does not stop it being written), one fixed-size slot per close.
The next write that reaches the ledger settles every pending close first; a close is an idempotent
``UPDATE ... WHERE stop_ns IS NULL``, so settling twice bills once. A process that dies with closes
pending leaves its file behind: the next ledger opened on the same database replays it in
:meth:`Ledger.recover`, before closing orphans at their last heartbeat, so the stop time is exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import uuid
from pathlib import Path
from typing import Callable

SLOT = 1024  # bytes per pending close
SLOTS = 64  # closes the file holds; more are kept in memory until the ledger takes them
SUFFIX = ".journal"


def ledger_tag(where: str) -> str:
    """A short name for the database a journal belongs to (its files name it)."""
    return hashlib.sha1(where.encode()).hexdigest()[:12]


def _pack(entry: dict) -> bytes | None:
    data = json.dumps(entry, sort_keys=True).encode()
    if len(data) >= SLOT:
        data = json.dumps({**entry, "detail": {}}, sort_keys=True).encode()  # the stop time is what matters
    if len(data) >= SLOT:
        return None
    return data + b"\n" + b" " * (SLOT - len(data) - 1)


def read_entries(path: Path) -> tuple[dict, list[tuple[int, dict]]]:
    """``(header, [(slot, entry), ...])`` of a journal file; empty slots are left out."""
    raw = path.read_bytes()
    header = json.loads(raw[:SLOT].strip() or b"{}")
    entries = []
    for slot in range(1, len(raw) // SLOT):
        text = raw[slot * SLOT:(slot + 1) * SLOT].strip(b" \n\0")
        if text:
            try:
                entries.append((slot, json.loads(text)))
            except ValueError:  # a slot torn by a crash mid-write: its close is lost, recovery uses the heartbeat
                continue
    return header, entries


class Journal:
    """One meter's pending closes: memory, mirrored into a preallocated file when there is one."""

    def __init__(self, directory: Path | None, where: str, owner: str):
        self.where = where
        self.owner = owner
        self.path: Path | None = None
        self.error = ""  # why there is no file (closes are then kept in memory only)
        self.pending: dict[str, dict] = {}  # interval id -> {"id", "stop_ns", "detail"}
        self._slots: dict[str, int] = {}
        self._lock = threading.Lock()
        self._fd: int | None = None
        if directory is None:
            self.error = "the ledger is in memory"
            return
        # One file per meter (a process may run several on one ledger); the header names its process.
        name = owner.replace(":", "-").replace("/", "-") + f"-{uuid.uuid4().hex[:8]}-{ledger_tag(where)}{SUFFIX}"
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = directory / name
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, SLOT * (SLOTS + 1))  # room reserved now, while there is room
                header = json.dumps({"ledger": where, "owner": owner}).encode()
                os.pwrite(fd, header + b"\n" + b" " * (SLOT - len(header) - 1), 0)
                os.pwrite(fd, b" " * (SLOT * SLOTS), SLOT)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                path.unlink(missing_ok=True)
                raise
            self._fd, self.path = fd, path
        except OSError as exc:
            self.error = f"cannot keep a journal in {directory}: {exc.strerror or exc}"

    def keep(self, interval_id: str, stop_ns: int, detail: dict | None) -> bool:
        """Keep a close; True when it is on disk (else in memory only)."""
        entry = {"id": interval_id, "stop_ns": int(stop_ns), "detail": detail or {}}
        with self._lock:
            self.pending[interval_id] = entry
            if self._fd is None:
                return False
            slot = self._slots.get(interval_id)
            if slot is None:
                used = set(self._slots.values())
                slot = next((s for s in range(1, SLOTS + 1) if s not in used), None)
                if slot is None:
                    return False
            data = _pack(entry)
            if data is None:
                return False
            try:
                os.pwrite(self._fd, data, slot * SLOT)
                os.fsync(self._fd)
            except OSError:
                return False
            self._slots[interval_id] = slot
            return True

    def settle(self, close: Callable[[str, int, dict], object]) -> int:
        """Write every pending close through ``close(id, stop_ns, detail)``; stops at the first that
        fails (the ledger is still away) and raises it. Returns how many were settled."""
        with self._lock:
            entries = list(self.pending.values())
        done = 0
        for entry in entries:
            close(entry["id"], entry["stop_ns"], entry["detail"])
            self.forget(entry["id"])
            done += 1
        return done

    def forget(self, interval_id: str) -> None:
        with self._lock:
            self.pending.pop(interval_id, None)
            slot = self._slots.pop(interval_id, None)
            if slot is not None and self._fd is not None:
                try:
                    os.pwrite(self._fd, b" " * SLOT, slot * SLOT)
                    os.fsync(self._fd)
                except OSError:
                    pass  # replaying a settled close later changes nothing

    def close(self) -> None:
        """Drop the file when nothing is pending (else leave it for the next ledger's recovery)."""
        with self._lock:
            if self._fd is None:
                return
            os.close(self._fd)
            self._fd = None
            if not self.pending and self.path is not None:
                self.path.unlink(missing_ok=True)


def replay(directory: Path | None, where: str, close: Callable[[str, int, dict], object],
           alive: Callable[[str], bool]) -> list[str]:
    """Settle the journals that dead processes left for the ledger at ``where``; returns the ids
    closed. A journal whose process still runs is its own meter's to settle."""
    if directory is None or not directory.is_dir():
        return []
    closed = []
    for path in sorted(directory.glob(f"*-{ledger_tag(where)}{SUFFIX}")):
        try:
            header, entries = read_entries(path)
        except (OSError, ValueError):
            continue
        if header.get("ledger") != where or alive(str(header.get("owner", ""))):
            continue
        for _, entry in entries:
            if close(entry["id"], int(entry["stop_ns"]), entry.get("detail") or {}):
                closed.append(entry["id"])
        path.unlink(missing_ok=True)
    return closed


__all__ = ["Journal", "read_entries", "replay"]
