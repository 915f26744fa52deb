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


FIRST_LOOK_S = 0.3  # a map this young is not yet polled or listed: a short map costs no scheduler calls for it


class MapStatus:
    """Progress, money and visibility of a map (``self`` is a ``MapRun``)."""

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
