"""c.BurstLab.min_idle: warm workers per GPU type, kept up beyond what sessions and maps use.

The policy is the pure ``decide()``; the real test starts the embedded cluster with declared GPUs and
checks that a warm worker comes up with nothing asked of it, stays through idle windows, that another
comes up when a session takes the first, and that its up-time is the operator's (``provisioned``, no user)."""

from __future__ import annotations

import time

import pytest

import burstlab
from burstlab.errors import BurstlabError
from burstlab.examples.fleet import wait_for
from burstlab.remote_kernel.adaptive import CatalogueEntry, check_min_idle, decide

H = [CatalogueEntry(f"h{i}", {"H100": 1, f"slot:x/{i}": 1}) for i in range(3)]
A = [CatalogueEntry("a0", {"A100": 1, "slot:y/0": 1})]
CAT = H + A


def test_min_idle_keeps_warm_workers_with_no_demand():
    assert decide(CAT, {}, {}) == set()
    assert decide(CAT, {}, {}, {"H100": 1}) == {"h0"}
    assert decide(CAT, {}, {}, {"H100": 2, "A100": 1}) == {"h0", "h1", "a0"}


def test_min_idle_is_on_top_of_the_demand():
    # h0 busy with a session: one more is kept warm beside it.
    assert decide(CAT, {"H100": 1, "slot:x/0": 1}, {"h0": True}, {"H100": 1}) == {"h0", "h1"}
    # Two maps' tasks waiting for H100s and one warm: three up.
    assert decide(CAT, {"H100": 2}, {}, {"H100": 1}) == {"h0", "h1", "h2"}


def test_min_idle_prefers_a_worker_already_up_and_caps_at_the_catalogue():
    assert decide(CAT, {}, {"h2": False}, {"H100": 1}) == {"h2"}  # the idle one up now, not a fresh start
    assert decide(CAT, {}, {}, {"H100": 5}) == {"h0", "h1", "h2"}
    assert decide(CAT, {}, {"h0": False, "h1": False}, {"H100": 1}) == {"h0"}  # the other one may retire


def test_min_idle_names_a_type_the_cluster_has():
    carries = {e.name: e.resources for e in CAT}
    check_min_idle({"H100": 1, "A100": 0}, carries)
    with pytest.raises(BurstlabError, match="'V100'.*no worker of this cluster carries.*A100"):
        check_min_idle({"V100": 1}, carries)
    with pytest.raises(BurstlabError, match="give a number of warm workers"):
        check_min_idle({"H100": -1}, carries)


def _h100_workers(ws) -> dict[str, str]:
    """H100 worker name -> address, of the workers up now."""
    info = ws.client.scheduler_info(n_workers=-1)["workers"]
    return {w["name"]: addr for addr, w in info.items() if "H100" in (w.get("resources") or {})}


def test_a_warm_worker_is_started_kept_and_billed_to_no_user(tmp_path):
    idle = 0.5
    ws = burstlab.Workspace(declared_gpus="H100:2", home=str(tmp_path), min_idle={"H100": 1}, kernel_pool_size=0,
                            worker_idle_timeout=idle, heartbeat_interval=0.2, notebook="warm.ipynb")
    try:
        warm = wait_for("a warm H100 worker", lambda: _h100_workers(ws) or None, 30, interval=0.05)
        assert len(warm) == 1
        # Kept through several idle windows (a worker with no min_idle goes after one: test_managers).
        until = time.monotonic() + 4 * idle
        while time.monotonic() < until:
            assert _h100_workers(ws) == warm, "the warm worker was retired"
            time.sleep(0.1)
        # A session takes it (it is up: no start to wait for); another comes up to be the warm one.
        session = ws.session("H100")
        assert session.execute_sync("1 + 1").text == "2"
        both = wait_for("a second, warm H100 worker", lambda: len(_h100_workers(ws)) == 2 or None, 30)
        assert both
        session.stop()
        wait_for("back to one warm worker", lambda: len(_h100_workers(ws)) == 1 or None, 30, interval=0.1)
        # Its up-time is the operator's: a 'provisioned' interval with no user; the user's rows are the session's.
        rows = wait_for("the warm worker's provisioned interval",
                        lambda: [r for r in ws.usage(kind="provisioned") if r.resource == "H100"] or None, 10)
        assert all(r.user == "" for r in rows)
        mine = [r for r in ws.usage(user=ws.user)]
        assert [r.kind for r in mine] == ["session"], [(r.kind, r.user) for r in mine]
    finally:
        ws.close()


def test_min_idle_naming_a_missing_type_is_refused_before_anything_starts(tmp_path):
    ws = burstlab.Workspace(declared_gpus="H100:1", home=str(tmp_path), min_idle={"A100": 1}, kernel_pool_size=0)
    try:
        with pytest.raises(BurstlabError, match="min_idle names 'A100'"):
            ws.client
    finally:
        ws.close()
