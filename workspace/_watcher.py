"""The workspace's side of billing: budgets it enforces and GPU up-time it records.

The decisions are pure (``burstlab.billing.budgets``); this module acts on them. One watcher thread
per workspace wakes at every heartbeat (sooner when a budget will run out before the next one),
reads the budgets that apply to what this workspace runs, warns once at the soft fraction, and at
the limit stops the sessions, cancels the maps and closes the sandboxes in that scope, saying why.
Starting a session, a map or a sandbox asks :meth:`Watcher.admit` first, which refuses with the
numbers when the budget is spent. A budget may have a period (day, week, month): only what was spent
since the period's start (UTC, by ``Watcher.now_ns``, a clock tests may replace) counts. Setting a
budget below what is already spent says what it stops.

For the embedded cluster the watcher also records each GPU worker's up-time as ``provisioned``
intervals (the operator's cost, never a user's), from a scheduler plugin that notes when workers
come and go: utilisation is leased GPU-seconds over provisioned GPU-seconds.
"""

from __future__ import annotations

import sys
import threading
import time
import uuid
import weakref
from typing import Any

from burstlab.billing import budgets as policy
from burstlab.billing._backends import ledger_error
from burstlab.billing.ledger import PROVISIONED, BudgetRow
from burstlab.billing.rates import usd_to_microusd
from burstlab.errors import BudgetExceeded, ConfigError
from burstlab.wire import BudgetStatus

class Watcher:
    """Budgets and up-time for one workspace (``ws.watcher``)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.maps: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self.stopped: dict[str, BudgetExceeded] = {}  # session id -> why the watcher stopped it
        self.closed_sandboxes: dict[int, BudgetExceeded] = {}  # id(sandbox) -> why the watcher closed it
        self.last_stops: list[str] = []  # what the last set() below spending stopped
        self.states: dict[tuple[str, str, str], str] = {}  # (scope, name, owner) -> last state seen
        self._warned: set[tuple[str, str, str, int]] = set()
        self._lock = threading.Lock()
        self._stoppers: list[threading.Thread] = []  # stops under way (close() waits for them)
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._uptime_ready = False
        self._provisioned: dict[tuple[str, int], str] = {}  # (worker name, since_ns) -> interval id
        self._uptime_backlog: list[tuple] = []  # workers' comings and goings not yet in the ledger
        self.checks = 0
        self.clock: Any = None  # a callable returning ns since the epoch, replacing the meter's (tests)

    def now_ns(self) -> int:
        """Now, for budget periods and pricing open intervals: the meter's clock unless replaced."""
        return int(self.clock()) if self.clock is not None else self.ws.meter.clock.now_ns()

    # -- budgets: the API the Workspace exposes ---------------------------------------------------

    def status(self, row: BudgetRow, now_ns: int | None = None) -> BudgetStatus:
        spent, _ = self.ws.ledger.budget_spending(row, self.now_ns() if now_ns is None else now_ns)
        return _status(row, spent)

    def statuses(self, user: str) -> list[BudgetStatus]:
        return [self.status(row) for row in self.ws.ledger.budgets(owner=user)]

    def set(self, scope: str, name: str, limit_usd: float, soft_fraction: float, owner: str,
            period: str = "") -> BudgetStatus:
        """Set a budget. One set at or below what is already spent stops what runs in its scope at
        once: the message saying what (also kept as ``last_stops``) goes to stderr."""
        if scope not in ("user", "notebook"):
            raise ConfigError(f"Budget scope {scope!r}: use 'user' or 'notebook'.")
        if not name:
            raise ConfigError("A budget needs the name of the user or notebook it limits.")
        limit = usd_to_microusd(limit_usd)
        if limit <= 0:
            raise ConfigError(f"A budget of ${limit_usd} would refuse everything: give an amount above 0, or "
                              "remove the budget.")
        try:
            soft = policy.soft_ppm(soft_fraction)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        try:
            period = policy.check_period(period)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        row = self.ws.ledger.set_budget(scope, name, owner, limit, soft, period=period)
        with self._lock:
            self._warned = {w for w in self._warned if w[:3] != (scope, name, owner)}
        status = self.status(row)
        self.last_stops = []
        if status.state == policy.EXCEEDED:
            self.last_stops = [what for what, _ in self._in_scope(row)]
            if self.last_stops:
                sys.stderr.write(f"[burstlab: {stopping_note(row, status.spent_microusd, self.last_stops)}]\n")
        self.wake()
        return status

    def _in_scope(self, row: BudgetRow) -> list[tuple[str, Any]]:
        """``(description, thing)`` of what runs now in a budget's scope: sessions, maps, sandboxes."""
        sessions, maps, sandboxes = self._running()
        out: list[tuple[str, Any]] = []
        for s in sessions:
            if _applies(row, getattr(s, "user", "") or self.ws.user, getattr(s, "notebook", "") or self.ws.notebook):
                out.append((f"the {s.label} session {getattr(s, 'id', '')}".rstrip(), s))
        if _applies(row, self.ws.user, self.ws.notebook):
            out += [(f"the map {m.name}", m) for m in maps]
        for sb in sandboxes:
            if _applies(row, sb.user, sb.notebook):
                out.append((f"the sandbox with kernel pid {sb.kernel_pid}", sb))
        return out

    def remove(self, scope: str, name: str, owner: str) -> bool:
        removed = self.ws.ledger.remove_budget(scope, name, owner)
        self.states.pop((scope, name, owner), None)
        return removed

    def _applicable(self, user: str, notebook: str) -> list[BudgetRow]:
        return [b for b in self.ws.ledger.budgets()
                if (b.scope == "user" and b.name == user) or (b.scope == "notebook" and (b.name, b.owner) == (notebook, user))]

    def admit(self, *, user: str, notebook: str, what: str, start_microusd: int) -> None:
        """Raise BudgetExceeded, with the numbers, if starting ``what`` (which costs at least
        ``start_microusd``) would pass a budget of ``user`` or ``notebook``; LedgerError if the ledger
        cannot be read (nothing may start that cannot be checked and billed)."""
        try:
            now = self.now_ns()
            spending = [(row, self.ws.ledger.budget_spending(row, now)[0]) for row in self._applicable(user, notebook)]
        except Exception as exc:
            raise ledger_error(self.ws.ledger.where, exc, f"Nothing was started ({what}: its budgets cannot "
                                                          "be checked).") from exc
        for row, spent in spending:
            if not policy.admit(spent, row.limit_microusd, start_microusd):
                raise _refusal(row, spent, what, start_microusd)

    def check_cached(self, user: str, notebook: str) -> None:
        """Refuse at once (no database read) if the last check found a budget of this scope exceeded:
        the gate of a cell on a session that is already running."""
        for (scope, name, owner), state in list(self.states.items()):
            if state == policy.EXCEEDED and ((scope == "user" and name == user)
                                             or (scope == "notebook" and (name, owner) == (notebook, user))):
                row = next((r for r in self._applicable(user, notebook) if (r.scope, r.name) == (scope, name)), None)
                if row is not None:
                    spent, _ = self.ws.ledger.budget_spending(row, self.now_ns())
                    if spent >= row.limit_microusd:
                        raise _refusal(row, spent, "this cell", 0)

    def estimate_note(self, *, user: str, notebook: str, name: str, estimate_microusd: int) -> str:
        """A line to show when a map's estimate passes what is left of a budget ("" when it fits, or
        when the ledger cannot be read just now: a hint never stops a running map)."""
        try:
            now = self.now_ns()
            spending = [(row, self.ws.ledger.budget_spending(row, now)[0]) for row in self._applicable(user, notebook)]
        except Exception:
            return ""
        for row, spent in spending:
            left = row.limit_microusd - spent
            if estimate_microusd > left:
                return (f"{name} is estimated to cost {policy.usd(estimate_microusd)} more, but the "
                        f"{policy.describe(row.scope, row.name, spent, row.limit_microusd)} leaves "
                        f"{policy.usd(max(0, left))}: it will be stopped when the budget is spent. "
                        f"Raise it with `%gpu budget` or pass fewer inputs.")
        return ""

    # -- the thread ---------------------------------------------------------------------------

    def track(self, run) -> None:
        """A map started: watch it (it stops being watched when it is garbage or untracked)."""
        self.maps.add(run)
        self.start()

    def untrack(self, run) -> None:
        self.maps.discard(run)

    def start(self) -> None:
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._loop, name="burstlab-budgets", daemon=True)
                self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _spawn(self, target, args: tuple, name: str) -> None:
        """A stop on a thread of its own (it may wait on Dask), which ``close()`` waits for."""
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        with self._lock:
            self._stoppers = [t for t in self._stoppers if t.is_alive()] + [thread]
        thread.start()

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        deadline = time.monotonic() + 10  # stops already under way finish while the cluster is still there
        with self._lock:
            stoppers = list(self._stoppers)
        for thread in stoppers:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
        try:
            self._sync_uptime(final=True)
        except Exception:  # the cluster is already gone: the meter closes its intervals anyway
            pass

    def _loop(self) -> None:
        heartbeat = max(0.05, float(self.ws.config.heartbeat_interval) or 5.0)
        while not self._closed:
            try:
                until = self.check()
            except Exception as exc:  # the ledger is away: try again at the next heartbeat
                sys.stderr.write(f"[burstlab: budget check failed ({exc}); retrying]\n")
                until = []
            try:
                self._sync_uptime()
            except Exception:
                pass
            self._wake.wait(policy.next_check(heartbeat, until))
            self._wake.clear()

    def _running(self) -> tuple[list, list, list]:
        sessions = [s for s in list(self.ws.sessions.values()) if s.state == "running"]
        maps = [m for m in list(self.maps) if not getattr(m, "_closed", False)]
        held = getattr(getattr(self.ws, "_sandboxes", None), "held", None)
        sandboxes = [sb for sb in (held() if held is not None else []) if sb.started]
        return sessions, maps, sandboxes

    def check(self) -> list[float | None]:
        """One pass: warn or stop per budget; returns seconds until each budget runs out."""
        self.checks += 1
        sessions, maps, sandboxes = self._running()
        scopes = {(getattr(s, "user", "") or self.ws.user, getattr(s, "notebook", "") or self.ws.notebook)
                  for s in sessions}
        scopes |= {(self.ws.user, self.ws.notebook) for _ in maps[:1]}
        scopes |= {(sb.user, sb.notebook) for sb in sandboxes}
        if not scopes:
            return []
        rows = self.ws.ledger.budgets()
        now = self.now_ns()
        until = []
        for row in rows:
            hit = [(u, n) for u, n in scopes
                   if (row.scope == "user" and row.name == u) or (row.scope == "notebook" and (row.name, row.owner) == (n, u))]
            if not hit:
                continue
            spent, burn = self.ws.ledger.budget_spending(row, now)
            state = policy.decide(spent, row.limit_microusd, row.soft_ppm)
            self.states[(row.scope, row.name, row.owner)] = state
            until.append(policy.seconds_until(spent, row.limit_microusd, burn))
            if state == policy.WARNING:
                self._warn(row, spent)
            elif state == policy.EXCEEDED:
                self._enforce(row, spent, sessions, maps, sandboxes)
        return until

    def _warn(self, row: BudgetRow, spent: int) -> None:
        key = (row.scope, row.name, row.owner, row.limit_microusd)
        if key in self._warned:
            return
        self._warned.add(key)
        sys.stderr.write(f"[burstlab: {row.soft_ppm / 1e4:g}% of the {policy.describe(row.scope, row.name, spent, row.limit_microusd)}."
                         f" At the limit, running cells and maps stop.]\n")

    def _enforce(self, row: BudgetRow, spent: int, sessions: list, maps: list, sandboxes: list = ()) -> None:
        def mine(user: str, notebook: str) -> bool:
            return (row.scope == "user" and row.name == user) or (row.scope == "notebook" and (row.name, row.owner) == (notebook, user))

        for s in sessions:
            if getattr(s, "id", s.key) in self.stopped:
                continue
            if mine(getattr(s, "user", "") or self.ws.user, getattr(s, "notebook", "") or self.ws.notebook):
                exc = _stop_error(row, spent, f"the {s.label} session was stopped and its GPUs released; "
                                              "its state is gone")
                self.stopped[getattr(s, "id", s.key)] = exc
                self._spawn(_stop_session, (s, exc), "burstlab-budget-stop")
        for m in maps:
            if mine(self.ws.user, self.ws.notebook):
                m.stop_for(_stop_error(row, spent, f"the map {m.name} was cancelled and its workers released "
                                                   f"after {m.done} of {m.total if m.total is not None else '?'} inputs"))
        for sb in sandboxes:
            if id(sb) not in self.closed_sandboxes and mine(sb.user, sb.notebook):
                exc = _stop_error(row, spent, "this sandbox was closed and its state is gone")
                self.closed_sandboxes[id(sb)] = exc
                self._spawn(_close_sandbox, (sb, exc), "burstlab-budget-close")

    # -- provisioned GPU time (embedded cluster only) ------------------------------------------------

    def _sync_uptime(self, final: bool = False) -> None:
        ws = self.ws
        if ws._cluster is None or ws._client is None:
            return
        from ._uptime import UptimeLog, drain

        if not self._uptime_ready:
            if final:
                return
            ws._client.register_plugin(UptimeLog(), name=UptimeLog.name)
            self._uptime_ready = True
        try:
            drained = ws._client.run_on_scheduler(drain)
        except Exception:
            drained = None
        if drained is not None:  # what the ledger could not take last time goes first
            self._uptime_backlog += [("up", *e) for e in drained[0]] + [("ended", *e) for e in drained[1]]
        meter = ws.meter
        while self._uptime_backlog:
            what, name, gpu_type, count, since, *until = self._uptime_backlog[0]
            interval = self._open_provisioned(name, gpu_type, count, since)  # LedgerError: kept for next time
            if what == "ended":
                meter.stop(interval, stop_ns=until[0])
                self._provisioned.pop((name, since), None)
            self._uptime_backlog.pop(0)
        if final:
            for interval in list(self._provisioned.values()):
                meter.stop(interval)
            self._provisioned.clear()

    def _open_provisioned(self, name: str, gpu_type: str, count: int, since: int) -> str:
        interval = self._provisioned.get((name, since))
        if interval is None:
            interval = uuid.uuid5(uuid.NAMESPACE_URL, f"burstlab-provisioned:{name}:{since}").hex
            self.ws.meter.start(kind=PROVISIONED, user="", notebook="", resource=gpu_type, quantity=count,
                                declared=name.endswith("/declared"), detail={"worker": name}, id=interval,
                                start_ns=since)
            self._provisioned[(name, since)] = interval
        return interval


def _applies(row: BudgetRow, user: str, notebook: str) -> bool:
    return (row.scope == "user" and row.name == user) or (row.scope == "notebook" and (row.name, row.owner) == (notebook, user))


def _stop_session(session, exc: BaseException) -> None:
    """Stop a session over budget; a failure (the cluster going away meanwhile) is said, not raised."""
    try:
        session.stop(str(exc))
    except Exception as err:  # noqa: BLE001 - the stop has released what it could
        sys.stderr.write(f"[burstlab: stopping a session over budget failed: {err}]\n")


def _close_sandbox(sb, exc: BaseException) -> None:
    """Close a sandbox (its public ``aclose``, on burstlab's loop) with why, for its next caller."""
    from burstlab import _sync

    try:
        _sync.run_sync(sb.aclose(f" ({exc})"))
    except Exception as err:  # already closing, or the loop is gone: nothing left to stop
        sys.stderr.write(f"[burstlab: closing a sandbox over budget failed: {err}]\n")


def stopping_note(row: BudgetRow, spent: int, stops: list[str]) -> str:
    """What a budget set at or below its spending stops, in one sentence."""
    return (f"the {_described(row, spent)} is already spent: setting it stops {', '.join(stops)} now. "
            f"{_fix(row)}")


def _described(row: BudgetRow, spent: int) -> str:
    text = policy.describe(row.scope, row.name, spent, row.limit_microusd)
    return text + (f"{policy.describe_period(row.period)}" if row.period else "")


def _status(row: BudgetRow, spent: int) -> BudgetStatus:
    return BudgetStatus(scope=row.scope, name=row.name, limit_microusd=row.limit_microusd,
                        soft_fraction=row.soft_ppm / policy.PPM, spent_microusd=spent,
                        remaining_microusd=max(0, row.limit_microusd - spent),
                        state=policy.decide(spent, row.limit_microusd, row.soft_ppm), period=row.period or "")


def _fix(row: BudgetRow) -> str:
    flag = " --user" if row.scope == "user" else ""
    return (f"Raise it with `%gpu budget{flag} AMOUNT` (or ws.set_budget({row.scope!r}, {row.name!r}, AMOUNT)), "
            f"or remove it with `%gpu budget{flag} --remove`.")


def _refusal(row: BudgetRow, spent: int, what: str, start_microusd: int) -> BudgetExceeded:
    cost = f" {what} would cost at least {policy.usd(start_microusd)} (one second)." if start_microusd else ""
    exc = BudgetExceeded(f"Refused: the {_described(row, spent)}, "
                         f"{policy.usd(max(0, row.limit_microusd - spent))} left.{cost} {_fix(row)}")
    exc.status = _status(row, spent)  # type: ignore[attr-defined]
    return exc


def _stop_error(row: BudgetRow, spent: int, what: str) -> BudgetExceeded:
    exc = BudgetExceeded(f"Stopped at the limit: the {_described(row, spent)}; "
                         f"{what}. {_fix(row)}")
    exc.status = _status(row, spent)  # type: ignore[attr-defined]
    return exc


__all__ = ["Watcher"]
