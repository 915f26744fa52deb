"""The workspace owns the sandboxes its front doors hand out: one warm pool, metered, closed with it."""

from __future__ import annotations

import time

import pytest

import burstlab
from burstlab.errors import SandboxError


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    w = burstlab.Workspace(home=str(tmp_path_factory.mktemp("home")), notebook="sandboxes.ipynb", sandbox_pool_size=1)
    yield w
    w.close()


def _sandbox_rows(ws):
    return [r for r in ws.usage(kind="sandbox")]


def _wait_ready(ws, deadline_s: float = 30.0) -> None:
    pool = ws._sandboxes.pool()
    deadline = time.monotonic() + deadline_s
    while pool.ready < 1:
        assert time.monotonic() < deadline, "the workspace's sandbox pool did not fill within 30 s"
        time.sleep(0.02)


def test_the_first_sandbox_starts_the_pool_and_the_next_comes_from_it(ws):
    with ws.sandbox(timeout=10) as first:  # none ready yet: a new one, and the pool starts filling
        assert first.run("1 + 1").text == "2"
    _wait_ready(ws)
    with ws.sandbox(timeout=5, memory="256MiB", user="alice", notebook="agent") as pooled:
        assert pooled.limits.timeout == 5 and pooled.limits.memory == 256 * 1024**2  # the caller's limits
        assert pooled.run("x = 41\nx + 1").text == "42"
    rows = sorted(_sandbox_rows(ws), key=lambda r: r.start_ns)
    assert [bool(r.detail.get("pooled")) for r in rows] == [False, True]
    assert (rows[1].user, rows[1].notebook) == ("alice", "agent")  # metered as the caller
    assert all(r.stop_ns is not None for r in rows)  # closed, so billed no further


def test_what_the_pool_cannot_serve_is_a_new_sandbox_and_bad_settings_fail_first(ws):
    _wait_ready(ws)
    before = len(_sandbox_rows(ws))
    with ws.sandbox(output="64KiB") as own:  # a size fixed at start: not the pool's
        assert own.limits.output == 64 * 1024
    assert ws._sandboxes.pool().ready == 1  # the pool's sandbox was not used
    assert [bool(r.detail.get("pooled")) for r in _sandbox_rows(ws)[before:]] == [False]
    with pytest.raises(SandboxError, match="64 MiB"):
        ws.sandbox(memory="8MiB")
    with pytest.raises(SandboxError, match="Unknown sandbox setting"):
        ws.sandbox(colour="blue")


def test_closing_the_workspace_closes_what_its_doors_still_hold(tmp_path):
    w = burstlab.Workspace(home=str(tmp_path), notebook="closing.ipynb", sandbox_pool_size=1)
    sb = w.sandbox(timeout=10)
    assert sb.run("1").text == "1"
    w.close()
    assert not sb.started
    again = burstlab.Workspace(home=str(tmp_path), notebook="closing.ipynb", sandbox_pool_size=0)
    try:
        rows = again.usage(kind="sandbox")
        assert rows and all(r.stop_ns is not None and not r.recovered for r in rows)  # closed by close(), not recovered
    finally:
        again.close()
