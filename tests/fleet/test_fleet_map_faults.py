"""A map whose only host of its GPU type dies (every process killed) or is cut off ends within seconds
with an error naming the host and the fix; the results that finished before are kept (``.partial``, the
checkpoint); nothing is billed after the host's last heartbeat; nothing hangs."""

from __future__ import annotations

import threading
import time

import pytest

import burstlab
from burstlab.errors import FanoutError
from burstlab.examples.fleet import ADDRS, wait_for

from fleet_helpers import wait_workers

pytestmark = pytest.mark.slow

LOST_AFTER = 2.0  # the tests' host_lost_timeout (the default is 10 s)


@pytest.fixture
def ws(fleet, notebook):
    fleet.restore()
    notebook.config.host_lost_timeout = LOST_AFTER
    wait_workers(notebook.client, {"gpuA", "gpuB"})
    yield notebook
    notebook.stop("all")


def _slow():
    def slow(i):  # defined in a function: pickled by value (the hosts cannot import this test module)
        import time

        time.sleep(0.25)
        return i * 10
    return slow


slow = _slow()


def _map_until_fault(ws, fault, **options) -> tuple[FanoutError, float, int, list]:
    """Run a 30-input H100 map (only gpuA has an H100); apply ``fault`` once 4 inputs have finished
    (the map's own record on the scheduler says so: no sleeps). Returns the error, how long after the
    fault it came, when the fault struck (ns), and the map's ledger rows."""
    at: dict = {}

    def finished() -> int:
        maps = [m for m in ws.list_maps() if (m.name or "").endswith("slow") and m.state == "running"]
        return max((m.done or 0 for m in maps), default=0)

    def watch():
        try:
            wait_for("4 inputs finished", lambda: finished() >= 4, 60, interval=0.1)
        except Exception as exc:  # noqa: BLE001 - reported by the test below
            at["error"] = exc
            return
        at["t"], at["ns"] = time.monotonic(), time.time_ns()
        fault()

    striker = threading.Thread(target=watch, daemon=True)
    striker.start()
    before = {r.id for r in ws.usage()}
    with pytest.raises(FanoutError) as info:
        burstlab.map(slow, range(30), gpu="H100", progress=False, **options)
    striker.join(60)
    assert "t" in at, at.get("error")
    took = time.monotonic() - at["t"]
    rows = [r for r in ws.usage() if r.id not in before and r.kind == "map"]
    return info.value, took, at["ns"], rows


def _check_error_and_meter(error, took, fault_ns, rows, what):
    text = str(error)
    assert "gpuA" in text and ADDRS["gpuA"] in text, text
    assert what in text and "burstlab worker" in text, text  # what happened, and the fix
    assert took < LOST_AFTER + 6, f"the map learned of the lost host after {took:.1f} s"
    assert rows and all(r.stop_ns is not None for r in rows), rows
    lost = [r for r in rows if r.detail.get("lost")]
    assert lost, [r.detail for r in rows]
    for r in lost:  # closed at the host's last heartbeat, not when the map gave up
        assert r.stop_ns <= fault_ns + 1_500_000_000, (r.stop_ns - fault_ns) / 1e9


def test_map_whose_only_host_is_killed_ends_with_a_clear_error(fleet, ws, tmp_path):
    error, took, killed_ns, rows = _map_until_fault(ws, lambda: fleet.kill("gpuA"),
                                                     checkpoint=str(tmp_path / "run"))
    _check_error_and_meter(error, took, killed_ns, rows, "left the scheduler")
    assert "H100" in str(error)
    partial = error.partial
    assert len(partial) >= 4 and all(partial[i] == i * 10 for i in partial)
    # Every result that came back is kept: in the checkpoint (the rerun skips them).
    from burstlab.fanout._checkpoint import Checkpoint, function_digest
    from burstlab.fanout._engine import pickle_function

    store = Checkpoint(str(tmp_path / "run"), function_digest(slow, pickle_function(slow)))
    kept = dict(store.iterate(limit=30))
    assert kept == partial
    assert str(store.path) in str(error)
    # The host comes back: the same call finishes, computing only what was missing.
    fleet.start_worker("gpuA")
    wait_workers(ws.client, {"gpuA"})
    assert burstlab.map(slow, range(30), gpu="H100", progress=False, checkpoint=str(tmp_path / "run")) == \
        [i * 10 for i in range(30)]


def test_map_whose_only_host_is_cut_off_ends_with_a_clear_error(fleet, ws):
    try:
        error, took, cut_ns, rows = _map_until_fault(ws, lambda: fleet.link("gpuA", False))
    finally:
        fleet.link("gpuA", True)
    _check_error_and_meter(error, took, cut_ns, rows, "not been heard from")
    partial = error.partial
    assert len(partial) >= 4 and all(partial[i] == i * 10 for i in partial)
    # The link is back: the host's GPU serves the next map.
    wait_for("gpuA back", lambda: wait_workers(ws.client, {"gpuA"}), 60)
    assert burstlab.map(slow, range(3), gpu="H100", progress=False) == [0, 10, 20]
