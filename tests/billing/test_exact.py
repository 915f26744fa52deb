"""Exact integers leave the ledger: ``burstlab.usage()`` as pandas ``Int64`` columns (an open
interval's ``stop_ns`` is <NA>, never a float that rounds its neighbours), JSON and CSV as integers."""

import csv
import io
import json

import pandas as pd

import burstlab
from burstlab.billing.reports import write_csv

# Above 2**53: float64 cannot hold these (it would round them to a multiple of 256).
T0 = 1_795_840_139_763_816_803
assert float(T0) != T0


def test_usage_keeps_nanoseconds_and_money_exact_with_open_intervals(tmp_path, ledger_url):
    ws = burstlab.Workspace(home=str(tmp_path), ledger_url=ledger_url, notebook="exact.ipynb", heartbeat_interval=0)
    try:
        closed = ws.meter.start(kind="session", user=ws.user, notebook=ws.notebook, resource="H100", start_ns=T0)
        ws.meter.stop(closed, stop_ns=T0 + 1_500_000_001)
        opened = ws.meter.start(kind="map", user=ws.user, notebook=ws.notebook, resource="A100", start_ns=T0 + 7)
        frame = burstlab.usage(workspace=ws)
        records = burstlab.usage(workspace=ws, as_frame=False)
        for column in ("quantity", "billed_s", "rate_nusd_per_s", "cost_microusd", "start_ns", "heartbeat_ns", "stop_ns"):
            assert str(frame[column].dtype) == "Int64", column
        by_id = frame.set_index("id")
        assert by_id.loc[closed, "stop_ns"] == T0 + 1_500_000_001 and by_id.loc[closed, "start_ns"] == T0
        assert pd.isna(by_id.loc[opened, "stop_ns"]) and by_id.loc[opened, "start_ns"] == T0 + 7
        assert by_id.loc[closed, "stop"].value == T0 + 1_500_000_001  # the Timestamp is exact too
        assert int(frame["cost_microusd"].sum()) == sum(r.cost_microusd for r in records)
        assert bool(by_id.loc[opened, "open"]) and not bool(by_id.loc[closed, "open"])

        wire = json.loads(json.dumps([r.to_json() for r in records]))
        assert [(r["start_ns"], r["stop_ns"]) for r in wire] == [(T0, T0 + 1_500_000_001), (T0 + 7, None)]
        assert all(isinstance(r[k], int) for r in wire for k in ("start_ns", "heartbeat_ns", "cost_microusd"))

        out = io.StringIO()
        write_csv(records, out)
        rows = list(csv.DictReader(io.StringIO(out.getvalue())))
        assert [int(r["cost_microusd"]) for r in rows] == [r.cost_microusd for r in records]
        ws.meter.stop(opened)
    finally:
        ws.close()
