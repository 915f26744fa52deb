"""The whole attack suite again, against sandboxes made by fork (snapshot + restore): a restored sandbox is as
isolated as a new one (issue 18). The tests are test_attacks.py's own; only the ``sb`` and ``neighbour`` fixtures
differ: both are forks of a sandbox that held state."""

from __future__ import annotations

import pytest

from burstlab.sandbox import Sandbox
from test_attacks import *  # noqa: F401,F403 - the same attacks


@pytest.fixture(scope="module")
def _forks(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BURSTLAB_HOME", str(tmp_path_factory.mktemp("snapshots")))
        with Sandbox(timeout=10, memory="256MiB", pids=64, output="256KiB", work_size="32MiB", tmp_size="16MiB",
                     max_upload="1MiB", max_download="1MiB", meter=None) as src:
            src.run("state = {'plan': [1, 2, 3]}")
            src.files.write("notes.txt", b"before the fork")
            forks = src.fork(2)
        try:
            assert [f.run("state['plan']").text for f in forks] == ["[1, 2, 3]"] * 2
            yield forks
        finally:
            for f in forks:
                f.close()


@pytest.fixture(scope="module")
def sb(_forks):
    return _forks[0]


@pytest.fixture(scope="module")
def neighbour(_forks):
    return _forks[1]
