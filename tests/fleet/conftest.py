"""The test fleet: GPU hosts that are really elsewhere (network namespaces), built by the tests.

Needs root (network namespaces, a bridge, UTS namespaces); every test here skips with that reason
otherwise. See examples/fleet.py for what is built and how to try it by hand.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile

import pytest

from burstlab.examples.fleet import ADDRS, Fleet, wait_for
from fleet_helpers import wait_workers, worker_names  # tests/fleet is on sys.path (pytest's prepend mode)


def _why_not() -> str:
    if os.geteuid() != 0:
        return "the test fleet needs root (network namespaces, a bridge)"
    for tool in ("ip", "unshare", "hostname"):
        if shutil.which(tool) is None:
            return f"the test fleet needs `{tool}` (iproute2 / util-linux)"
    return ""


_fleet: Fleet | None = None


def _up() -> Fleet:
    """The fleet, built on first use and kept while this directory's tests run."""
    global _fleet
    why = _why_not()
    if why:
        pytest.skip(why)
    if _fleet is None:
        _fleet = Fleet(tempfile.mkdtemp(prefix="burstlab-fleet-")).up()
    return _fleet


def _down() -> None:
    """Remove the fleet and check nothing of it is left (namespaces, links, mounts, processes)."""
    global _fleet
    if _fleet is None:
        return
    f, _fleet = _fleet, None
    f.down()
    try:  # a namespace's links go when the kernel frees it, a moment after `ip netns del`
        wait_for("the fleet to be gone", lambda: not f.leftovers(), 5)
    except TimeoutError:
        pass
    left = f.leftovers()
    shutil.rmtree(f.root, ignore_errors=True)
    assert not left, f"the fleet left {left}"


@pytest.hookimpl(trylast=True)  # after pytest's own teardown has closed this module's notebook
def pytest_runtest_teardown(item, nextitem):
    """Tear the fleet down as soon as the next test is not one of this directory's (not at the session's end)."""
    here = os.path.dirname(__file__)
    if nextitem is None or os.path.dirname(str(nextitem.path)) != here:
        _down()


def pytest_sessionfinish(session, exitstatus):
    _down()


@pytest.fixture
def fleet():
    return _up()


@pytest.fixture(scope="module")
def notebook():
    """The notebook side (the root namespace): TLS the Dask way, BURSTLAB_SCHEDULER, its own home.
    Yields the process's workspace, as the magics see it."""
    fleet = _up()
    import dask

    import burstlab
    from burstlab.remote_kernel._tls import dask_config

    saved = {k: os.environ.get(k) for k in ("BURSTLAB_SCHEDULER", "BURSTLAB_HOME")}
    home = tempfile.mkdtemp(prefix="burstlab-fleet-nb-")
    os.environ.update(BURSTLAB_SCHEDULER=fleet.scheduler, BURSTLAB_HOME=home)
    import distributed  # noqa: F401  its defaults are in the config we save and restore

    saved_config = copy.deepcopy(dask.config.config)
    dask.config.set(dask_config(fleet.tls))
    try:
        ws = burstlab.get_workspace()
        assert ws.config.scheduler == fleet.scheduler, "another test left its workspace open"
        wait_workers(ws.client, {"gpuA", "gpuB"})
        yield ws
    finally:
        burstlab.get_workspace().close()
        dask.config.config.clear()
        dask.config.config.update(saved_config)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(home, ignore_errors=True)


__all__ = ["ADDRS", "wait_workers", "worker_names"]
