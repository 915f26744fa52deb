"""The meter: opens and closes ledger intervals, and keeps open ones heartbeating.

Opening must reach the ledger (:class:`~burstlab.errors.LedgerError` otherwise, so the caller undoes
what it acquired); closing never fails: a close the ledger cannot take is kept in the meter's
journal (billing/journal.py) and written, once, by the next write that succeeds.

Timestamps come from a monotonic clock anchored to wall time once, so an interval's length is
immune to wall-clock jumps while its endpoints stay comparable across processes. The meter also
keeps what it needs to price its own open intervals in memory, so the footer of a warm ``%%gpu``
cell costs no database round trip.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
import uuid
from typing import Callable

from burstlab.wire import UsageRecord

from ._backends import ledger_error, why_unwritable
from .gpu_use import Sample, Sampler
from .journal import Journal
from .ledger import Ledger, owner_tag
from .rates import RateCard, billed_seconds, cost_microusd


class Clock:
    """Wall-clock nanoseconds that advance monotonically."""

    def __init__(self) -> None:
        self._wall0 = time.time_ns()
        self._mono0 = time.monotonic_ns()

    def now_ns(self) -> int:
        return self._wall0 + (time.monotonic_ns() - self._mono0)


class Meter:
    """Records resource holdings into a ledger, heartbeating open intervals every ``heartbeat_s``."""

    def __init__(self, ledger: Ledger, rates: RateCard, heartbeat_s: float = 5.0):
        self.ledger = ledger
        self.rates = rates
        self.clock = Clock()
        self.owner = self._owner = owner_tag()
        self._open: dict[str, UsageRecord] = {}  # what this meter opened, as opened (priced on demand)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.heartbeat_s = heartbeat_s
        self._thread: threading.Thread | None = None
        self.beats = 0  # heartbeats written (tests and the watcher read it)
        self._beat_failed = False
        self.journal = Journal(ledger.journal_dir, ledger.where, self._owner)
        self.gpu_use = Sampler()  # NVML samples of the GPUs of watched intervals (watch_gpus)

    def rate_for(self, kind: str, resource: str, quantity: int, detail: dict | None) -> int:
        """The rate an interval opens with: the resource's, plus memory for a sandbox whose detail
        names its memory limit in bytes (shared out per CPU, see :meth:`RateCard.sandbox_rate`)."""
        memory = (detail or {}).get("memory")
        if kind == "sandbox" and isinstance(memory, int) and not isinstance(memory, bool):
            return self.rates.sandbox_rate(quantity, memory)
        return self.rates.rate(resource)

    def start(
        self, *, kind: str, user: str, notebook: str, resource: str, quantity: int = 1,
        declared: bool = False, detail: dict | None = None, id: str | None = None, start_ns: int | None = None,
    ) -> str:
        """Open an interval (now, or at ``start_ns``); returns its id. Passing the same ``id`` again
        (a retry) opens nothing new."""
        interval_id = id or uuid.uuid4().hex
        start_ns = self.clock.now_ns() if start_ns is None else int(start_ns)
        rate = self.rate_for(kind, resource, quantity, detail)
        self.settle()
        try:
            self.ledger.open_interval(
                id=interval_id, kind=kind, user=user, notebook=notebook, resource=resource, quantity=quantity,
                declared=declared, rate_nusd_per_s=rate, start_ns=start_ns, owner=self._owner, detail=detail,
            )
        except Exception as exc:
            raise ledger_error(self.ledger.where, exc, f"Nothing was started (the {kind} could not be billed).") from exc
        record = UsageRecord(id=interval_id, kind=kind, user=user, notebook=notebook, resource=resource,
                             quantity=int(quantity), declared=bool(declared), rate_nusd_per_s=rate, start_ns=start_ns,
                             heartbeat_ns=start_ns, stop_ns=None, billed_s=1, cost_microusd=0,
                             detail=dict(detail or {}))
        with self._lock:
            self._open.setdefault(interval_id, record)
            if self._thread is None and self.heartbeat_s > 0:
                self._thread = threading.Thread(target=self._beat, name="burstlab-meter", daemon=True)
                self._thread.start()
        return interval_id

    def set_start(self, interval_id: str, start_ns: int) -> None:
        """Move an open interval's start (a map's worker: to when its first input really started)."""
        try:
            moved = self.ledger.set_start(interval_id, start_ns)
        except Exception as exc:  # the ledger keeps the earlier start (more, never less, than ran)
            self._warn(f"could not move the start of interval {interval_id}", exc)
            return
        if moved:
            with self._lock:
                rec = self._open.get(interval_id)
                if rec is not None:
                    self._open[interval_id] = _replace(rec, start_ns=int(start_ns))

    def stop(self, interval_id: str, detail: dict | None = None, stop_ns: int | None = None) -> UsageRecord | None:
        """Close an interval now (or at ``stop_ns``), merging ``detail`` into it; return its final record.
        Idempotent: stopping a closed interval changes nothing and returns the record as it was closed.

        Never raises for the ledger: a close it cannot take is journaled (and this meter stops
        heartbeating the interval), written by the next write that reaches the ledger; the record
        returned is then priced from memory."""
        now = self.clock.now_ns() if stop_ns is None else int(stop_ns)
        use = self.gpu_use.finish(interval_id)
        if use is not None:
            detail = {**(detail or {}), "gpu_use": use}
        with self._lock:
            rec = self._open.pop(interval_id, None)
        try:
            self.settle(raise_=True)
            self.ledger.close_interval(interval_id, now, detail)
            return self.ledger.get(interval_id, now)
        except Exception as exc:
            on_disk = self.journal.keep(interval_id, now, detail)
            kept = f"kept in {self.journal.path}" if on_disk else f"kept in memory ({self.journal.error or 'journal full'})"
            self._warn(f"the stop of interval {interval_id} is {kept} and is written when the ledger takes writes "
                       "again; what it metered is released", exc)
            if rec is None:
                return None
            stop = max(now, rec.start_ns)
            billed = billed_seconds(rec.start_ns, stop)
            return _replace(rec, stop_ns=stop, heartbeat_ns=stop, billed_s=billed,
                            cost_microusd=cost_microusd(billed, rec.rate_nusd_per_s, rec.quantity),
                            detail={**rec.detail, **(detail or {})})

    def close_lost(self, interval_id: str, last_heartbeat_ns: int, detail: dict | None = None) -> UsageRecord | None:
        """Close an interval whose host was declared lost at the last heartbeat that host sent (never
        later than now, never before the interval started), marked ``lost`` in its detail. Same
        guarantees as :meth:`stop` (idempotent; journaled when the ledger is away)."""
        at = min(int(last_heartbeat_ns), self.clock.now_ns())
        return self.stop(interval_id, detail={"lost": True, "host_last_heartbeat_ns": int(last_heartbeat_ns),
                                              **(detail or {})}, stop_ns=at)

    def watch_gpus(self, interval_id: str, sample: "Callable[[], Sample | None]") -> None:
        """Sample the GPUs of an open interval every few seconds (``sample`` returns, per GPU,
        ``(utilisation %, memory used, memory total)``, or None when its host does not answer in time);
        the summary goes into its detail as ``gpu_use`` when it closes (see :mod:`.gpu_use`)."""
        self.gpu_use.watch(interval_id, sample)

    def pending(self) -> list[str]:
        """Ids of closes the ledger has not taken yet (journaled)."""
        return list(self.journal.pending)

    def settle(self, raise_: bool = False) -> int:
        """Write the journaled closes (each once); returns how many. Called before every write and at
        every heartbeat; a ledger still away leaves them pending (raised when ``raise_``)."""
        if not self.journal.pending:
            return 0
        try:
            done = self.journal.settle(self.ledger.close_interval)
        except Exception:
            if raise_:
                raise
            return 0
        if done:
            sys.stderr.write(f"[burstlab: the ledger at {self.ledger.where} takes writes again; "
                             f"{done} journaled stop{'s' if done != 1 else ''} written]\n")
        return done

    def _warn(self, what: str, exc: BaseException) -> None:
        sys.stderr.write(f"[burstlab: the ledger at {self.ledger.where} is not writable: {why_unwritable(exc)}; "
                         f"{what}]\n")

    def record(self, interval_id: str) -> UsageRecord | None:
        """The interval priced up to now: from memory while this meter holds it open, else the ledger."""
        with self._lock:
            rec = self._open.get(interval_id)
        now = self.clock.now_ns()
        if rec is None:
            return self.ledger.get(interval_id, now)
        billed = billed_seconds(rec.start_ns, max(now, rec.start_ns))
        return _replace(rec, billed_s=billed, cost_microusd=cost_microusd(billed, rec.rate_nusd_per_s, rec.quantity))

    def open_records(self) -> list[UsageRecord]:
        """This meter's open intervals, priced up to now."""
        with self._lock:
            ids = list(self._open)
        return [r for r in (self.record(i) for i in ids) if r is not None]

    def burn_nusd_per_s(self) -> int:
        """What this meter's open intervals cost per second, together."""
        with self._lock:
            return sum(r.rate_nusd_per_s * r.quantity for r in self._open.values())

    def heartbeat_now(self) -> None:
        """Write one heartbeat for every open interval (the heartbeat thread calls this)."""
        with self._lock:
            ids = list(self._open)
        self.settle()
        if ids:
            self.ledger.heartbeat(ids, self.clock.now_ns())
            self.beats += 1

    def close(self) -> None:
        """Close every interval this meter has open and stop heartbeating."""
        with self._lock:
            ids = list(self._open)
        for interval_id in ids:
            self.stop(interval_id)
        self._stop.set()
        self.gpu_use.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.settle()
        self.journal.close()  # closes still pending stay on disk: the next ledger opened replays them

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.heartbeat_now()
                self._beat_failed = False
            except Exception as exc:  # the database is away: keep beating; intervals stay open meanwhile
                if not self._beat_failed:
                    sys.stderr.write(f"[burstlab: ledger heartbeat failed ({exc}); retrying every "
                                     f"{self.heartbeat_s:g} s]\n")
                self._beat_failed = True


def _replace(record: UsageRecord, **changes) -> UsageRecord:
    return dataclasses.replace(record, **changes)


__all__ = ["Clock", "Meter"]
