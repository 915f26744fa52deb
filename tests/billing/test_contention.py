"""Contention: sessions and a map on the same declared GPUs (H100:2) bill each GPU once.

Two sessions hold both H100s; a map started meanwhile waits behind their leases and must open no
interval until one of its inputs really runs on a GPU, which happens only after a session stops.
Per GPU, the ledger's intervals (sessions' and the map's) never overlap.
"""

import threading
import time

import burstlab
from burstlab import fanout
from waiting import wait_for as _wait  # tests/waiting.py


def _gpu_of(record) -> tuple[str, int]:
    if record.kind == "session":
        (index,) = record.detail["gpus"]
        return record.detail["host"], int(index)
    _, host, _, index, _ = record.detail["worker"].split("/")  # burstlab/HOST/TYPE/INDEX/SOURCE
    return host, int(index)




def _waiting(prefix: str, dask_scheduler=None) -> list[str]:
    """States of the map's tasks on the scheduler (waiting for a GPU: no-worker, or processing on a
    worker where they queue behind a lease)."""
    return [ts.state for key, ts in dask_scheduler.tasks.items() if str(key).startswith(prefix)]


def contended(x):
    time.sleep(0.02)
    return x * 2


def test_a_map_waiting_behind_two_sessions_is_billed_only_once_it_runs(tmp_path):
    ws = burstlab.Workspace(home=str(tmp_path), kernel_pool_size=0, worker_idle_timeout=30.0, adapt_interval=0.05,
                            heartbeat_interval=0.2, notebook="contention.ipynb")
    try:
        s1 = ws.session("H100")
        s2 = ws.session("H100", reuse=False)
        assert {_gpu_of(ws.ledger.get(s.interval_id)) for s in (s1, s2)} == {(s1.host, 0), (s1.host, 1)}
        out: dict = {}

        def run_map():
            try:
                out["result"] = fanout.map(contended, range(60), gpu="H100", workspace=ws, progress=False)
            except BaseException as exc:  # pragma: no cover - reported below
                out["error"] = exc

        thread = threading.Thread(target=run_map)
        thread.start()
        states = _wait(lambda: ws.client.run_on_scheduler(_waiting, "burstlab-map-contended"), 30, "the map's tasks")
        print("map task states while both GPUs are held:", states)
        # Queued behind the leases for 2 s (four metering polls, several worker heartbeats): nothing is billed.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert ws.usage(kind="map") == [], "a map waiting behind sessions' leases was billed"
            time.sleep(0.1)
        s1.stop("freeing GPU 0")
        # Its inputs already queued on GPU 0 start now; those queued behind session 2 keep waiting (Dask may
        # or may not move them), so a map interval may or may not appear before session 2 stops too.
        deadline = time.monotonic() + 3.0
        while not ws.usage(kind="map") and time.monotonic() < deadline:
            time.sleep(0.05)
        s2.stop("freeing GPU 1")
        thread.join(60)
        assert not thread.is_alive() and "error" not in out, out.get("error")
        assert out["result"] == [x * 2 for x in range(60)]

        records = ws.usage(notebook="contention.ipynb")
        sessions = {r.id: r for r in records if r.kind == "session"}
        maps = [r for r in records if r.kind == "map"]
        assert len(sessions) == 2 and maps and all(r.stop_ns is not None for r in records)
        stopped_at = {_gpu_of(ws.ledger.get(s.interval_id)): ws.ledger.get(s.interval_id).stop_ns for s in (s1, s2)}
        for m in maps:  # nothing of the map ran on a GPU before its session gave it back
            assert m.start_ns >= stopped_at[_gpu_of(m)]
        by_gpu: dict = {}
        for r in records:
            by_gpu.setdefault(_gpu_of(r), []).append(r)
        for gpu, rows in by_gpu.items():
            rows.sort(key=lambda r: r.start_ns)
            for before, after in zip(rows, rows[1:]):
                assert after.start_ns >= before.stop_ns, (
                    f"GPU {gpu}: {before.kind} {before.start_ns}..{before.stop_ns} overlaps "
                    f"{after.kind} {after.start_ns}..{after.stop_ns}")
    finally:
        ws.close()


def test_a_worker_idle_between_a_maps_chunks_bills_the_gap_to_nobody(tmp_path):
    """Chunks back to back share one interval; a run after an idle gap (the GPU free, or held by a
    session meanwhile) opens a new one, and the first closes at its last chunk's end."""
    from types import SimpleNamespace

    from burstlab.billing import Meter, RateCard, open_ledger
    from burstlab.fanout._metering import GAP_NS, MapMeter

    ledger = open_ledger(f"sqlite:///{tmp_path}/ledger.sqlite")
    meter = Meter(ledger, RateCard.from_config({}), heartbeat_s=0)
    ws = SimpleNamespace(meter=meter, user="u", notebook="gaps.ipynb")
    mm = MapMeter(ws, map_id="m1", name="f", resource="H100", quantity=1, declared=True, key_prefix="k")
    s = 10**9
    t0 = meter.clock.now_ns()
    mm.report("w0", t0, t0 + s)
    mm.report("w0", t0 + s, t0 + 2 * s)  # back to back: same interval
    mm.report("w0", t0 + 2 * s + GAP_NS + s, t0 + 2 * s + GAP_NS + 2 * s)  # after an idle gap
    mm.close(clean=True, inputs=3)
    rows = sorted((r.start_ns - t0, r.stop_ns - t0) for r in ledger.usage(kind="map", now_ns=t0))
    assert rows == [(0, 2 * s), (2 * s + GAP_NS + s, 2 * s + GAP_NS + 2 * s)]
    assert mm.cost_microusd() == sum(r.cost_microusd for r in ledger.usage(kind="map"))
    meter.close()
