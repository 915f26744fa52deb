"""burstlab.Sandbox() made directly starts from the process workspace's warm pool when the pool serves its settings,
and is then the same sandbox it would have been started cold: its limits, user, notebook, metering and close."""

from __future__ import annotations

import os

import pytest

import burstlab
from burstlab.errors import BudgetExceeded
from burstlab.sandbox import Sandbox
from burstlab.sandbox import _sandbox as sandbox_module

from waiting import wait_for


@pytest.fixture(scope="module")
def ws():
    w = burstlab.get_workspace()
    w.prestart_sandboxes()
    yield w


def _ready_pool(ws):
    pool = ws._sandboxes.pool()
    wait_for(lambda: pool.ready == pool.size, 60, "the workspace's sandbox pool to fill")
    return pool


def _rows(ws, before):
    return [r for r in ws.usage(kind="sandbox") if r.id not in before]


def test_a_plain_sandbox_takes_a_warm_one_and_keeps_its_own_settings(ws):
    pool = _ready_pool(ws)
    waiting = {sb.uid for sb in list(pool._ready._queue)}
    before = {r.id for r in ws.usage(kind="sandbox")}
    with Sandbox(timeout=7, memory="256MiB", cpus=0.5, notebook="pooled.ipynb", lifetime=600) as sb:
        assert sb.uid in waiting  # the pool's started jail and kernel, not a new one
        assert pool.ready == pool.size - 1
        assert (sb.limits.timeout, sb.limits.memory, sb.limits.cpus) == (7.0, 256 * 1024**2, 0.5)
        assert sb._cgroup.dirs and sb.expires_in is not None and sb.expires_in > 590
        first = sb.run("import os\nx = 41\nx + 1")
        assert first.text == "42" and first.execution_count == 1  # In [1], as in a new one: the warm-up left no trace
        assert sb.run("x").text == "41"
        sb.files.write("a.txt", b"hi")
        assert sb.files.read("a.txt") == b"hi"
        state_dir = sb.state_dir
        assert sb in sandbox_module._live and ws.sandbox_id(sb) in {r.id for r in ws.sandboxes()}
    assert not os.path.exists(state_dir)  # closed: its jail is gone
    assert sb not in sandbox_module._live
    assert all(s.uid != sb.uid for s in sandbox_module._live)  # the pool's shell of it holds nothing
    rows = _rows(ws, before)
    assert len(rows) == 1 and rows[0].detail.get("pooled") is True
    assert (rows[0].user, rows[0].notebook, rows[0].stop_ns is not None) == (ws.user, "pooled.ipynb", True)


def test_a_warm_one_can_get_more_memory_than_the_pool_started_it_with(ws):
    pool = _ready_pool(ws)
    waiting = {sb.uid for sb in list(pool._ready._queue)}
    with Sandbox(timeout=10, memory="1GiB") as sb:
        assert sb.uid in waiting and sb.limits.memory == 2**30
        assert sb.run("b = bytearray(700 * 2**20); len(b) >> 20").text == "700"  # past the pool's 512 MiB


def test_what_the_pool_cannot_serve_starts_cold(ws):
    pool = _ready_pool(ws)
    waiting = {sb.uid for sb in list(pool._ready._queue)}
    before = {r.id for r in ws.usage(kind="sandbox")}
    for kwargs in ({"work_size": "32MiB"}, {"pids": 64}, {"meter": None}):
        with Sandbox(timeout=10, **kwargs) as sb:
            assert sb.uid not in waiting and pool.ready == pool.size, kwargs
            assert sb.run("1 + 1").text == "2"
    rows = _rows(ws, before)
    assert len(rows) == 2 and not any(r.detail.get("pooled") for r in rows)  # meter=None: not metered at all


def test_a_spent_budget_refuses_a_plain_sandbox_before_anything_starts_every_time(ws):
    with Sandbox(timeout=10, notebook="spent.ipynb") as sb:
        sb.run("1")
    ws.set_budget("notebook", "spent.ipynb", 0.000001)  # below what that notebook has spent
    try:
        sb = Sandbox(timeout=10, notebook="spent.ipynb")
        for _ in range(2):  # asked again, it is refused again: never started unmetered
            with pytest.raises(BudgetExceeded):
                sb.start()
            assert not sb.started and sb.state_dir is None
    finally:
        ws.remove_budget("notebook", "spent.ipynb")
