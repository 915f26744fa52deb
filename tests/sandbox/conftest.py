"""Shared sandboxes: starting one costs ~0.1-0.5 s, so tests that leave it usable share it per module."""

from __future__ import annotations

import os

import pytest

from burstlab._sync import run_sync
from burstlab.sandbox import Sandbox
from burstlab.sandbox._reaper import read_record
from burstlab.sandbox._sandbox import STATE_BASE, UID_BASE, UID_SPAN, stop_template


def sandbox_processes() -> list[int]:
    """Host pids running under any sandbox uid (there should be none once sandboxes are closed)."""
    pids = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        uid = int(line.split()[1])
                        if UID_BASE <= uid < UID_BASE + UID_SPAN:
                            pids.append(int(p))
                        break
        except OSError:
            continue
    return pids


def my_state_dirs() -> list[str]:
    out = []
    try:
        names = os.listdir(STATE_BASE)
    except OSError:
        return out
    for n in names:
        rec = read_record(os.path.join(STATE_BASE, n))
        if rec is not None and rec.get("pid") == os.getpid():
            out.append(n)
    return out


@pytest.fixture
def leftovers():
    """Functions that find what sandboxes left behind: host pids under sandbox uids, this process's state dirs."""
    return sandbox_processes, my_state_dirs


@pytest.fixture(scope="session", autouse=True)
def _stop_fork_server():
    yield
    run_sync(stop_template())


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout=10, memory="256MiB", pids=64, output="256KiB", work_size="32MiB", tmp_size="16MiB",
                 max_upload="1MiB", max_download="1MiB") as s:
        yield s


@pytest.fixture(scope="module")
def neighbour():
    """A second sandbox, to check that attacks on one leave the other untouched."""
    with Sandbox(timeout=10, memory="256MiB") as s:
        yield s
