"""The warm pool: acquire hands out a started sandbox with the caller's limits and refills."""

from __future__ import annotations

import pytest

from burstlab.billing import Meter, RateCard, open_ledger
from burstlab.errors import SandboxError
from burstlab.sandbox import SandboxPool


def test_pool_hands_out_ready_sandboxes_and_refills(tmp_path):
    ledger = open_ledger("", tmp_path)
    meter = Meter(ledger, RateCard.from_config(), heartbeat_s=0)
    with SandboxPool(size=2) as pool:
        assert pool.ready == 2
        a = pool.acquire(timeout=5, memory="128MiB", meter=meter, user="ada")
        b = pool.acquire()
        try:
            assert a.started and a.limits.timeout == 5 and a.limits.memory == 128 * 1024**2
            assert a.run("import os; os.getuid()").text == "1000"
            assert a.uid != b.uid
            ex = a.run("x = bytearray(300 * 1024 * 1024); x[::4096] = b'1' * len(x[::4096])", timeout=30)
            assert ex.error.ename == "SandboxMemoryLimit"  # the acquired limit is the one enforced
            pool.start()  # wait for the refill
            assert pool.ready == 2
        finally:
            a.close()
            b.close()
    recs = ledger.usage()
    assert len(recs) == 1 and recs[0].user == "ada" and recs[0].stop_ns is not None
    meter.close()
    ledger.close()
    with pytest.raises(SandboxError, match="closed"):
        pool.acquire()


def test_pool_size_is_validated():
    with pytest.raises(SandboxError, match="at least 1"):
        SandboxPool(size=0)
