"""Fan-out tests share one embedded cluster per module, with a 1 s idle window so scale-to-zero is quick."""

import pytest

import burstlab


@pytest.fixture(scope="module")
def fws():
    ws = burstlab.Workspace(worker_idle_timeout=1.0, adapt_interval=0.05, kernel_pool_size=0, notebook="fanout.ipynb")
    ws.client  # start the embedded cluster
    yield ws
    ws.close()
