"""A %%gpu cell run in a real notebook kernel ends with a display carrying burstlab's cell record (the lab
extension's "ran on" label and the cell's metadata) and, as text/plain, exactly the footer a terminal prints.
The record's figures are the cell's OWN share of its session (the seconds the session was billed while that cell
ran, at the ledger's rate), checked here against the ledger's interval; the session's so-far figures come second."""

import os
import re

from jupyter_client import KernelManager

from burstlab.billing import open_ledger
from burstlab.magics.render import CELL_MIME, money

FOOTER = re.compile(r"\[H100 \(declared\) on (\S+) · this cell ([\d.]+) s, (\$[0-9.]+) · "
                    r"session (\d+) s held, (\$[0-9.]+) so far\]")


def _run_cells(tmp_path, cells: list[str]) -> tuple[list[dict], list[str]]:
    env = {**os.environ, "BURSTLAB_HOME": str(tmp_path / "home"), "BURSTLAB_DECLARED_GPUS": "H100:1"}
    km = KernelManager(kernel_name="python3", transport="ipc", ip=str(tmp_path / "k"))
    with open(tmp_path / "kernel.err", "w") as err:
        km.start_kernel(stderr=err, stdout=err, env=env, extra_arguments=["--HistoryManager.enabled=False"])
    kc = km.client()
    kc.start_channels()
    displays, streams = [], []

    def hook(msg):
        if msg["msg_type"] == "display_data":
            displays.append(msg["content"]["data"])
        elif msg["msg_type"] == "stream":
            streams.append(msg["content"]["text"])

    try:
        kc.wait_for_ready(timeout=60)
        for code in cells:
            reply = kc.execute_interactive(code, timeout=180, output_hook=hook)
            assert reply["content"]["status"] == "ok", (code, reply["content"], streams)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    return displays, streams


def test_gpu_cell_label_is_the_cells_own_share_checked_against_the_ledger(tmp_path):
    displays, streams = _run_cells(tmp_path, [
        "%load_ext burstlab",
        "%%gpu H100\nimport time\ntime.sleep(1.5)\nprint(6 * 7)",  # starts the session: its start is billed here
        "%%gpu H100\nprint(1)",                                     # warm: a fraction of a second
        "%%gpu H100 --quiet\nprint(2)",
        "%gpu stop all",
    ])
    assert "42\n" in streams
    assert not any("s held" in s for s in streams)  # the footer is the display below, not printed as well
    assert len(displays) == 2, displays  # --quiet publishes none
    first, second = (d[CELL_MIME] for d in displays)

    ledger = open_ledger("", tmp_path / "home")
    try:
        interval = ledger.get(first["interval_id"])
    finally:
        ledger.close()
    assert interval is not None and interval.stop_ns is not None and interval.kind == "session"
    assert second["interval_id"] == interval.id  # both cells ran on the one session
    rate = interval.rate_nusd_per_s * interval.quantity
    assert first["rate_nusd_per_s"] == second["rate_nusd_per_s"] == rate > 0

    for data, record in zip(displays, (first, second)):
        footer = FOOTER.fullmatch(data["text/plain"])
        assert footer, data["text/plain"]
        host, secs, cost, held, so_far = footer.groups()
        assert record["gpu"] == "H100 (declared)" and record["spec"] == "H100" and record["host"] == host
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", record["at"])
        # The cell's own cost is its own time at the ledger's per-second rate (rounded up to a micro-dollar).
        ms = record["cell_ms"]
        assert ms * rate // 10**6 <= record["cell_cost_microusd"] <= -(-(ms + 1) * rate // 10**6)
        assert abs(float(secs) - ms / 1000) <= 0.051 and cost == money(record["cell_cost_microusd"])
        assert record["text"] == f"ran on H100 (declared) @ {host} · {secs} s · {cost}"
        # Secondary: the session so far, as the ledger priced its interval when the cell ended.
        assert (record["held_s"], money(record["cost_microusd"])) == (int(held), so_far)
        assert record["session_text"] == f"session H100: {held} s held, {so_far} so far"
        assert record["held_s"] <= interval.billed_s and record["cost_microusd"] <= interval.cost_microusd

    # The first cell slept 1.5 s (and started the session); the second is warm and short: each label shows
    # its own cell, not the session's total.
    assert first["cell_ms"] >= 1500 and second["cell_ms"] < first["cell_ms"]
    assert second["cell_cost_microusd"] < first["cell_cost_microusd"]
    assert second["cell_cost_microusd"] < second["cost_microusd"]
    # Together the cells cannot have been billed for more than the whole interval.
    assert first["cell_ms"] + second["cell_ms"] <= (interval.stop_ns - interval.start_ns) // 10**6
    assert first["cell_cost_microusd"] + second["cell_cost_microusd"] <= interval.cost_microusd + 1
    assert second["held_s"] >= first["held_s"] and second["cost_microusd"] >= first["cost_microusd"]
