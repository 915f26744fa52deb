"""burstlab.Sandbox() made directly is an interval in the process's workspace's ledger, as README says."""

import burstlab


def test_a_plain_sandbox_is_metered_as_this_notebook():
    ws = burstlab.get_workspace()
    before = {r.id for r in ws.usage(kind="sandbox")}
    with burstlab.Sandbox(timeout=10) as sb:
        assert sb.run("6 * 7").text == "42"
    rows = [r for r in ws.usage(kind="sandbox") if r.id not in before]
    assert len(rows) == 1
    assert (rows[0].user, rows[0].notebook, rows[0].resource) == (ws.user, ws.notebook, "CPU")
    assert rows[0].stop_ns is not None and rows[0].billed_s >= 1


def test_the_bare_jail_with_meter_none_records_nothing():
    from burstlab.sandbox import Sandbox

    ws = burstlab.get_workspace()
    before = len(ws.usage(kind="sandbox"))
    with Sandbox(timeout=10, meter=None) as sb:
        sb.run("1")
    assert len(ws.usage(kind="sandbox")) == before
