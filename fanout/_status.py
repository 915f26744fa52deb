"""What a running map shows and answers: progress, cost and estimate, its record on the scheduler, the
workers that could not start. A mixin of ``_engine.MapRun`` (kept apart so each file does one thing)."""

from __future__ import annotations

import sys
import time

from burstlab.billing.budgets import map_estimate_microusd
from burstlab.errors import FanoutError


def _scheduler_start_errors(since: float, dask_scheduler=None) -> dict[str, str]:
    """Runs on the scheduler: worker name -> error, for the workers that failed to start since ``since``."""
    errors = getattr(dask_scheduler, "_burstlab_start_errors", None) or {}
    return {name: error for name, (when, error) in errors.items() if when >= since}


def _scheduler_hosts(resource: str | None, dask_scheduler=None) -> tuple[list, bool]:
    """Runs on the scheduler: ``(name, address, seconds since last heard)`` of each worker that carries
    ``resource`` (every worker when None), and whether a cluster manager can start one (its catalogue)."""
    from distributed.metrics import time as now

    t = now()
    rows = [(str(ws.name), ws.address, max(0.0, t - ws.last_seen)) for ws in dask_scheduler.workers.values()
            if resource is None or resource in ws.resources]
    catalogue = dask_scheduler.plugins.get("burstlab-catalogue")
    startable = catalogue is not None and any(resource is None or resource in r for r in catalogue.workers.values())
    return rows, startable


def _host(name: str) -> str:
    """The host label in a burstlab worker name (``burstlab/HOST/TYPE/INDEX/SOURCE``), else the name."""
    parts = name.split("/")
    return parts[1] if len(parts) == 5 else name


HOSTS_EVERY_S = 1.0  # how often a map with work in flight asks the scheduler whether its hosts are alive
FIRST_LOOK_S = 0.3  # a map this young is not yet polled or listed: a short map costs no scheduler calls for it


class MapStatus:
    """Progress, money and visibility of a map (``self`` is a ``MapRun``)."""

    _hosts_checked = 0.0  # when _check_hosts last asked the scheduler
    _hosts_lost = False  # every host of the map's kind was lost: nothing is left to stop there
    _hosts_startable = False  # a cluster manager starts workers of the map's kind on demand: never lost

    def cost_microusd(self) -> int:
        """What the map has cost so far (its workers' open intervals priced up to now)."""
        return self.metering.cost_microusd()

    def estimate_microusd(self) -> int | None:
        """What the inputs not yet finished should cost, from the measured seconds per input."""
        return map_estimate_microusd(self.total, self.done + self.failed, self._per_item_s, self.rate, self.quantity)

    def eta_s(self) -> float | None:
        """Seconds until the last input, from the rate since the first computed result."""
        if self.total is None or self._first_result_at is None:
            return None
        computed = self.done - self.reused + self.failed
        left = self.total - self.done - self.failed
        elapsed = time.monotonic() - self._first_result_at
        if left <= 0:
            return 0.0
        if computed <= 0 or elapsed <= 0:
            return None
        return left * elapsed / computed

    def workers_up(self, fresh: bool = False) -> int:
        now = time.monotonic()
        if fresh or now - self._workers_checked > 1.0:
            from burstlab.remote_kernel.cluster import supply

            self._workers_checked = now
            try:
                self._workers_up = int(supply(self.client).get(self.resource, (0, 0))[1])
            except Exception:  # noqa: BLE001 - a progress figure: keep the last count until the scheduler answers
                pass
        return self._workers_up

    def _check_workers(self) -> None:
        """Raise at once if no worker of this map's kind is up and one failed to start since the map began
        (a crashing preload, a missing package): waiting would never end."""
        now = time.monotonic()
        if now - self._starts_checked < 0.5 or self.done - self.reused + self.failed:
            return
        self._starts_checked = now
        try:
            errors = self.client.run_on_scheduler(_scheduler_start_errors, self.started_wall - 1.0)
        except Exception:
            return
        mine = {n: e for n, e in errors.items() if (n.split("/") + ["", "", ""])[2] == self.resource}
        if mine and not self.workers_up(fresh=True):
            name, error = sorted(mine.items())[0]
            self._stop_reason = f"the worker {name} could not start"
            self.cancel()
            raise FanoutError(
                f"The map {self.name} cannot run: no {self.resource} worker is up, and the worker {name} failed to "
                f"start: {error}. Fix what its start-up runs (a worker preload, the environment, an installed "
                "package) and run the map again; the cluster retries the worker on the next demand."
            )

    def _check_hosts(self) -> None:
        """Raise once no host that can run this map's inputs has been heard from for ``host_lost_timeout``
        seconds (the only host of its type died, or its network is down), when no cluster manager can start
        another: Dask would wait for one forever. The lost hosts' intervals close at their last heartbeat."""
        lost_after = float(getattr(self.ws.config, "host_lost_timeout", 0) or 0)
        now = time.monotonic()
        if lost_after <= 0 or self._hosts_startable or not self._inflight or now - self._hosts_checked < HOSTS_EVERY_S:
            return
        self._hosts_checked = now
        try:
            rows, startable = self.client.run_on_scheduler(
                _scheduler_hosts, self.resource if self.resources else None, callback_timeout=5)
        except Exception:  # noqa: BLE001 - the scheduler itself is away: the workspace reports that on its next call
            return
        if startable:  # the embedded cluster or a cluster manager starts a worker on demand (its catalogue stays)
            self._hosts_startable = True
            return
        wall = time.time_ns()
        heard = self.__dict__.setdefault("_hosts_heard", {})  # worker name -> (address, last heard, ns)
        for name, address, age in rows:
            heard[name] = (address, max(heard.get(name, ("", 0))[1], wall - int(age * 1e9)))
        for name, span in self.metering.spans.items():  # a chunk that came back: its worker was alive then
            address, at = heard.get(name, ("", 0))
            heard[name] = (address, max(at, span.stop_ns))
        if any(age < lost_after for _, _, age in rows):
            return
        last = max((at for _, at in heard.values()), default=0)
        last = max(last, int(self.started_wall * 1e9))
        if wall - last < lost_after * 1e9:
            return
        alive = {name for name, _, _ in rows}
        gone = {name: v for name, v in heard.items() if name not in alive}
        stale = {name: v for name, v in heard.items() if name in alive}
        self._hosts_lost = True
        for name, (_, at) in heard.items():
            if name in self.metering.intervals:
                self.metering.lost(name, at)
        what = []
        if gone:
            what.append(", ".join(f"{_host(n)} ({a.split('://')[-1].rsplit(':', 1)[0] or '?'})"
                                  for n, (a, _) in sorted(gone.items()))
                        + " left the scheduler (the host died, or its worker stopped)")
        if stale:
            what.append(", ".join(f"{_host(n)} ({a.split('://')[-1].rsplit(':', 1)[0]})" for n, (a, _) in
                                  sorted(stale.items()))
                        + f" has not been heard from for {(wall - max(at for _, at in stale.values())) / 1e9:.0f} s "
                          "(its network is down, or it hangs)")
        kind = f"{self.resource} " if self.resources else ""
        self._stop_reason = f"its only {kind}host was lost"
        self.cancel()
        total = self.total if self.total is not None else "?"
        kept = (f"their results are in {self.store.path} (rerun the same call to compute only the rest)"
                if self.store is not None else
                "their results are in this error's .partial ({index: result}); pass checkpoint='runs/NAME' to keep "
                "them across runs")
        raise FanoutError(
            f"The map {self.name} ({self.id}) lost every {kind}host it could run on: "
            f"{'; '.join(what) or f'none has been up for {lost_after:g} s'}. "
            f"No other host has {'an ' + self.resource if self.resources else 'a worker'}. {self.done} of {total} "
            f"inputs had finished; {kept}. Start `burstlab worker` on that host again (or another host with "
            f"{'an ' + self.resource if self.resources else 'workers'}), or ask for another GPU type "
            "(gpu=[...] with fallbacks), then run the map again."
        )

    def _publish(self, final: bool = False) -> None:
        """Keep this map's record on the scheduler current (at most once a second), so the lab and
        the REST API list it; learn there whether someone asked it to stop."""
        now = time.monotonic()
        if not final and now - max(self._published, self.started - 1.0 + FIRST_LOOK_S) < 1.0:
            return
        self._published = now
        from burstlab.remote_kernel import registry

        if final:
            state = "cancelled" if (self._stop_reason or self._cut_short) else ("failed" if self.failed else "done")
        else:
            state = "running"
        record = {
            "id": self.id, "name": self.name, "user": self.ws.user, "notebook": self.ws.notebook,
            "gpu": self.resource, "total": self.total, "done": self.done, "failed": self.failed,
            "running": self._inflight_inputs, "state": state, "started": self.started_wall,
            "cost_microusd": self.cost_microusd(), "owner": self.client.id,
        }
        if self.store is not None:
            record["checkpoint"] = str(self.store.path)
            try:
                self.store.set_meta(state=state, done=self.done, failed=self.failed, total=self.total)
            except Exception:  # noqa: BLE001 - the results are stored per chunk; this is only the summary row
                pass
        try:
            reason = registry.publish(self.client, "map", self.id, record)
        except Exception:  # the listing is a view: a map never fails because it cannot be shown
            return
        if reason and not final:
            self._stop_reason = reason

    def _tick(self, final: bool = False) -> None:
        if not final and time.monotonic() - self.started > FIRST_LOOK_S:  # chunk reports open intervals too
            self.metering.poll(self.client)
        self._publish(final)
        estimate = None if final else self.estimate_microusd()
        if estimate is not None and not self._estimate_noted and self._watcher is not None:
            self._estimate_noted = True  # checked once, from the first measured inputs
            note = self._watcher.estimate_note(user=self.ws.user, notebook=self.ws.notebook, name=self.name,
                                               estimate_microusd=estimate)
            if note:
                (self.progress.stream if self.progress is not None else sys.stderr).write(f"[burstlab: {note}]\n")
        if self.progress is not None:
            self.progress.update(done=self.done, failed=self.failed, retried=self.retried,
                                 workers=self.workers_up(final), elapsed=time.monotonic() - self.started,
                                 cost_microusd=self.cost_microusd(), final=final, estimate_microusd=estimate,
                                 setup_s=self.setup_s, eta_s=None if final else self.eta_s(), reused=self.reused)


__all__ = ["MapStatus"]
