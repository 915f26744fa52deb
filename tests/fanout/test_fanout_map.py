"""burstlab.map and @burstlab.function on a real embedded cluster: worker processes, declared GPUs."""

import io
import os
import signal
import threading
import time

import pytest

from burstlab import fanout
from burstlab.errors import FanoutError, GpuSpecError
from burstlab.remote_kernel.cluster import supply


def where(_=None):
    return os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("BURSTLAB_GPU_TYPE")


def test_map_returns_results_in_input_order(fws):
    offset = 10  # closures travel with cloudpickle
    out = fanout.map(lambda x: x + offset, range(200), gpu="h100", workspace=fws, progress=False)
    assert out == [x + 10 for x in range(200)]


def test_unordered_yields_every_result_as_it_finishes(fws):
    def slow_first(x):
        time.sleep(0.3 if x == 0 else 0)
        return x, time.time()

    got = list(fanout.map(slow_first, range(8), gpu="H100", ordered=False, workspace=fws, progress=False))
    assert sorted(x for x, _ in got) == list(range(8))
    # In the order they finished (input order only if one worker ran all), to the chunk: results travel a chunk at
    # a time, so two chunks finishing on two workers within a moment of each other may arrive either way round.
    finished = [t for _, t in got]
    assert all(b >= a - 0.05 for a, b in zip(finished, finished[1:])), finished


def test_function_verbs_run_on_a_gpu_worker_that_sees_its_gpu_only(fws):
    @fanout.function(gpu="H100", workspace=fws)
    def scaled(x, factor=1):
        return x * factor, where()

    assert scaled(2) == (2, (os.environ.get("CUDA_VISIBLE_DEVICES"), os.environ.get("BURSTLAB_GPU_TYPE")))  # local
    value, (visible, gpu_type) = scaled.remote(3, factor=2)
    assert value == 6 and gpu_type == "H100" and visible in ("0", "1")
    call = scaled.spawn(4)
    assert call.result(timeout=60)[0] == 4 and call.done()
    assert [v for v, _ in scaled.map([1, 2], progress=False)] == [1, 2]


def test_cpu_fanout_runs_on_the_cpu_worker_without_a_gpu(fws):
    assert fanout.map(where, range(4), workspace=fws, progress=False) == [("", None)] * 4


def test_first_failure_raises_the_users_exception_with_the_remote_traceback(fws):
    def inverse(x):
        return 1 / x

    with pytest.raises(ZeroDivisionError) as info:
        fanout.map(inverse, [1, 0, 2], gpu="H100", workspace=fws, progress=False)
    notes = "\n".join(info.value.__notes__)
    assert "Remote traceback" in notes and "in inverse" in notes and "input #1" in notes
    out = fanout.map(inverse, [1, 0, 2], gpu="H100", return_exceptions=True, workspace=fws, progress=False)
    assert out[0] == 1 and isinstance(out[1], ZeroDivisionError) and out[2] == 0.5


def test_user_errors_are_not_retried_unless_retry_on_names_them(fws, tmp_path):
    log = tmp_path / "calls"

    def flaky(x):
        with open(log, "a") as f:
            f.write("x\n")
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        fanout.map(flaky, [1], gpu="H100", retries=2, workspace=fws, progress=False)
    assert log.read_text().count("x") == 1
    log.unlink()
    with pytest.raises(ValueError) as info:
        fanout.map(flaky, [1], gpu="H100", retries=2, retry_on=(ValueError,), workspace=fws, progress=False)
    assert log.read_text().count("x") == 3 and "attempt 3 of at most 3" in "\n".join(info.value.__notes__)


def test_an_input_whose_worker_is_killed_mid_task_is_retried(fws, tmp_path):
    pids = tmp_path / "pids"

    def dies_once(x):
        with open(pids, "a") as f:
            f.write(f"{x} {os.getpid()}\n")
        if x == 3 and not (tmp_path / "killed").exists():
            time.sleep(30)  # the test kills this worker with SIGKILL meanwhile
        return x * x

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            worker_pids = fws.client.run(os.getpid)  # the pid of every worker process
            running = dict(line.split() for line in pids.read_text().splitlines()) if pids.exists() else {}
            if "3" in running:  # input 3 has started
                target = int(running["3"])
                assert target in worker_pids.values()
                (tmp_path / "killed").touch()
                os.kill(target, signal.SIGKILL)
                return
            time.sleep(0.05)

    t = threading.Thread(target=killer)
    t.start()
    out = fanout.map(dies_once, range(6), gpu="H100", retries=1, max_workers=1, workspace=fws, progress=False)
    t.join()
    assert out == [x * x for x in range(6)]
    assert (tmp_path / "killed").exists()


def test_the_error_after_the_last_attempt_says_how_many(fws):
    def always_dies(x):
        os.kill(os.getpid(), signal.SIGKILL)

    with pytest.raises(FanoutError, match=r"failed after 2 attempts \(the worker running it died\)"):
        fanout.map(always_dies, [1], gpu="H100", retries=1, workspace=fws, progress=False)


def test_a_generator_is_consumed_lazily_with_a_bounded_window(fws):
    consumed = 0

    def inputs():
        nonlocal consumed
        for i in range(10**6):
            consumed += 1
            yield i

    results = fanout.map(lambda x: x, inputs(), gpu="H100", ordered=False, workspace=fws, progress=False)
    first = [next(results) for _ in range(50)]
    assert len(first) == 50
    assert consumed < 20_000  # at most window x largest streamed chunk (5 x 2,000) ahead, never the million
    results.close()  # stops the map: the rest is cancelled


def test_cancel_stops_a_running_call_and_frees_its_gpu(fws):
    def spin(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(0.01)

    call = fanout.function(gpu="H100", workspace=fws)(spin).spawn(60)
    deadline = time.monotonic() + 30
    while not any(s.busy for s in _h100(fws)) and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    call.cancel()
    with pytest.raises(FanoutError, match="cancelled"):
        call.result(timeout=10)
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 20
    while any(s.busy for s in _h100(fws)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(s.busy for s in _h100(fws))


def _h100(ws):
    from burstlab.remote_kernel.cluster import slots

    return [s for s in slots(ws.client) if s.type == "H100"]


def test_timeout_fails_an_input_that_runs_too_long(fws):
    def busy_loop(x):
        while True:
            pass

    with pytest.raises(TimeoutError, match="timeout of 0.5 s"):
        fanout.function(gpu="H100", timeout=0.5, workspace=fws)(busy_loop).remote(1)


def test_bad_input_is_refused_before_anything_starts(fws):
    lock = threading.Lock()
    with pytest.raises(FanoutError, match="cannot be sent to the workers") as info:
        fanout.map(lambda x: lock, [1], gpu="H100", workspace=fws, progress=False)
    assert "<lambda>" in str(info.value)
    with pytest.raises(FanoutError, match=r"Input #1 \(<unlocked _thread.lock"):
        fanout.map(str, [1, lock], gpu="H100", workspace=fws, progress=False)
    with pytest.raises(GpuSpecError, match="it has: A100, H100"):
        fanout.map(str, [1], gpu="B200", workspace=fws, progress=False)
    with pytest.raises(GpuSpecError, match="no worker has more than 1 H100"):
        fanout.map(str, [1], gpu="H100:2", workspace=fws, progress=False)


def test_progress_in_a_log_is_two_lines(fws):
    out = io.StringIO()
    fanout.map(str, range(500), gpu="H100", workspace=fws, progress=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "500/500 done" in lines[1] and "worker" in lines[1]


def test_each_map_writes_worker_seconds_to_the_ledger(fws):
    before = len(fws.usage(kind="map"))
    fanout.map(str, range(20), gpu="H100", workspace=fws, progress=False)
    rows = fws.usage(kind="map")[before:]
    assert rows and all(r.resource == "H100" and r.declared for r in rows)
    assert all(r.user == fws.user and r.notebook == "fanout.ipynb" and r.stop_ns is not None for r in rows)
    assert sum(r.cost_microusd for r in rows) > 0
    fanout.map(str, range(3), workspace=fws, progress=False)
    assert fws.usage(kind="map")[-1].resource == "CPU"


def test_workers_scale_from_zero_and_back_to_zero(fws):
    def workers_up():
        return supply(fws.client)[""][1]

    deadline = time.monotonic() + 30
    while workers_up() and time.monotonic() < deadline:  # idle window is 1 s
        time.sleep(0.1)
    assert workers_up() == 0
    # inventory still lists every GPU, as free
    assert {(e.type, e.count, e.free) for e in fws.hosts()} == {("A100", 1, 1), ("H100", 2, 2)}
    assert fanout.map(lambda x: x, [1, 2, 3], gpu="A100", workspace=fws, progress=False) == [1, 2, 3]
    deadline = time.monotonic() + 30
    while workers_up() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert workers_up() == 0


def test_a_gpu_held_by_a_session_never_runs_a_map_task(fws):
    session = fws.session("H100")
    try:
        held = session.lease.slots[0].index
        seen = fanout.map(lambda _: os.environ["CUDA_VISIBLE_DEVICES"], range(40), gpu="H100",
                          workspace=fws, progress=False)
        assert set(seen) == {str(1 - held)}
        assert session.execute_sync("1 + 1").text == "2"  # the session's worker was not retired under it
        time.sleep(1.5)  # longer than the idle window
        assert session.execute_sync("2 + 2").text == "4"
    finally:
        session.stop()
