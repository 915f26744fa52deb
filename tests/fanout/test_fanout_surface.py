"""The map surface on a real embedded cluster: starmap, for_each, order_outputs, max_inputs, Retries backoff,
GPU fallbacks by free capacity, and per-worker state with @cls / @enter / @exit."""

import io
import os
import re
import time

import pytest

from burstlab import fanout
from burstlab.errors import FanoutError


def test_starmap_for_each_and_order_outputs(fws, tmp_path):
    assert fanout.starmap(lambda a, b=0: a * b, [(1, 2), (3, 4), (5,)], gpu="H100", workspace=fws,
                          progress=False) == [2, 12, 0]
    log = tmp_path / "seen"

    def touch(x):
        with open(log, "a") as f:
            f.write(f"{x}\n")
        return x

    assert fanout.for_each(touch, range(25), gpu="H100", workspace=fws, progress=False) is None
    assert sorted(int(x) for x in log.read_text().split()) == list(range(25))
    unordered = fanout.map(str, range(10), gpu="H100", order_outputs=False, workspace=fws, progress=False)
    assert not isinstance(unordered, list) and sorted(unordered, key=int) == [str(x) for x in range(10)]


def test_max_inputs_caps_the_inputs_in_flight(fws, tmp_path):
    def span(x):
        t0 = time.time()
        time.sleep(0.05)
        return t0, time.time()

    spans = sorted(fanout.map(span, range(8), gpu="H100", max_inputs=1, workspace=fws, progress=False))
    assert all(b[0] >= a[1] for a, b in zip(spans, spans[1:]))  # one at a time, though two GPUs are free
    with pytest.raises(FanoutError, match="max_inputs=0"):
        fanout.map(span, range(2), gpu="H100", max_inputs=0, workspace=fws, progress=False)


def test_retries_back_off_between_attempts(fws, tmp_path):
    def flaky(x):
        path = tmp_path / f"attempts-{x}"
        with open(path, "a") as f:
            f.write(f"{time.time()}\n")
        if len(path.read_text().split()) < 3:
            raise ValueError(f"not yet ({x})")
        return x

    retries = fanout.Retries(2, backoff=2.0, initial=0.3, retry_on=(ValueError,))
    assert fanout.map(flaky, [0, 1], gpu="H100", retries=retries, workspace=fws, progress=False) == [0, 1]
    for x in (0, 1):
        t = [float(v) for v in (tmp_path / f"attempts-{x}").read_text().split()]
        gaps = [b - a for a, b in zip(t, t[1:])]
        assert len(t) == 3 and 0.3 <= gaps[0] < 1.3 and 0.6 <= gaps[1] < 1.6, gaps
    with pytest.raises(ValueError, match="not yet"):  # out of attempts: the function's own error
        fanout.map(flaky, [5], gpu="H100", retries=fanout.Retries(1, initial=0.0, retry_on=(ValueError,)),
                   workspace=fws, progress=False)


def test_gpu_fallbacks_move_on_when_the_first_type_has_no_free_gpu(fws):
    def gpu_type(_):
        return os.environ["BURSTLAB_GPU_TYPE"]

    session = fws.session("H100:2")  # every H100 held by a session
    try:
        out = fanout.map(gpu_type, range(6), gpu=["H100", "A100"], workspace=fws, progress=False)
        assert out == ["A100"] * 6
    finally:
        session.stop()
    assert fanout.map(gpu_type, range(3), gpu=["H100", "A100"], workspace=fws, progress=False) == ["H100"] * 3


def test_cls_enter_runs_once_per_worker_and_exit_when_it_retires(fws, tmp_path):
    entered, exited = tmp_path / "entered", tmp_path / "exited"

    @fanout.cls(gpu="H100", workspace=fws)
    class Model:
        def __init__(self, scale):
            self.scale = scale

        @fanout.enter
        def load(self):
            with open(entered, "a") as f:
                f.write(f"{os.getpid()}\n")
            time.sleep(0.2)  # loading the model
            self.weights = self.scale * 10

        @fanout.exit
        def unload(self):
            with open(exited, "a") as f:
                f.write(f"{os.getpid()}\n")

        def predict(self, x):
            return x * self.weights, os.getpid()

    model = Model(2)
    progress = io.StringIO()
    out = model.predict.map(range(300), progress=progress)
    assert [v for v, _ in out] == [x * 20 for x in range(300)]
    ran_on = {pid for _, pid in out}
    enters = [int(p) for p in entered.read_text().split()]
    assert sorted(enters) == sorted(ran_on)  # one per worker process, though each ran many chunks
    setup_s = float(re.search(r"set-up ([0-9.]+) s", progress.getvalue()).group(1))
    assert 0.2 * len(enters) - 0.05 <= setup_s < 0.2 * len(enters) + 10  # each worker's enter, once
    value, pid = model.predict.remote(4)
    assert value == 80
    assert sorted(int(p) for p in entered.read_text().split()) == sorted(set(enters) | {pid})
    deadline = time.monotonic() + 30  # the idle window is 1 s: the workers retire, running @exit
    while time.monotonic() < deadline and not (exited.exists() and
                                               set(exited.read_text().split()) >= set(entered.read_text().split())):
        time.sleep(0.1)
    assert sorted(exited.read_text().split()) == sorted(entered.read_text().split())
