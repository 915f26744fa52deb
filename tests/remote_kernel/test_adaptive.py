"""The embedded cluster's scaling decision (remote_kernel/adaptive.py's pure ``decide()``): no processes."""

from burstlab.remote_kernel.adaptive import CatalogueEntry, decide

H = [CatalogueEntry(f"h{i}", {"H100": 1, f"slot:vm/{i}": 1}) for i in range(2)]
CPU = CatalogueEntry("cpu", {"CPU": 2})


def test_decide_starts_workers_for_demand_and_keeps_busy_ones():
    assert decide(H + [CPU], {}, {}) == set()
    assert decide(H + [CPU], {"H100": 1}, {}) == {"h0"}
    assert decide(H + [CPU], {"H100": 5}, {}) == {"h0", "h1"}
    assert decide(H + [CPU], {"CPU": 3}, {}) == {"cpu"}
    # an idle running worker is preferred over starting one
    assert decide(H + [CPU], {"H100": 1}, {"h1": False}) == {"h1"}
    # a lease asks for one GPU by its slot resource
    assert decide(H + [CPU], {"H100": 1, "slot:vm/1": 1}, {}) == {"h1"}
    # a busy worker (a session's lease) is never given up, whatever the demand
    assert decide(H + [CPU], {}, {"h0": True, "cpu": False}) == {"h0"}
