"""GPU utilisation in the meter: samples summed into an interval's detail, the bill's "GPU use" column, and
declared GPUs labelled "unknown (declared)", never given a figure. The NVML path runs where a GPU is."""

from __future__ import annotations

import threading

import pytest

import burstlab
from burstlab.billing import Meter, RateCard, open_ledger
from burstlab.billing.gpu_use import DECLARED, NOT_SAMPLED, GpuUse, combine, label
from burstlab.billing.reports import group
from burstlab.examples.fleet import wait_for
from burstlab.wire import UsageRecord

GIB = 2**30


def _record(**over) -> UsageRecord:
    base = dict(id="i", kind="session", user="u", notebook="n", resource="H100", quantity=1, declared=False,
                rate_nusd_per_s=1, start_ns=0, heartbeat_ns=0, stop_ns=10, billed_s=10, cost_microusd=1, detail={})
    return UsageRecord(**{**base, **over})


def test_gpu_use_sums_samples_of_every_gpu():
    use = GpuUse()
    assert use.detail() == {"samples": 0}
    use.add([(20.0, 2 * GIB, 80 * GIB), (60.0, 6 * GIB, 80 * GIB)])  # two GPUs: mean 40 %, 8 GiB together
    use.add([(100.0, 10 * GIB, 80 * GIB), (0.0, 0, 80 * GIB)])
    assert use.detail() == {"samples": 2, "util_mean": 45.0, "util_peak": 100.0, "mem_mean_bytes": 9 * GIB,
                            "mem_peak_bytes": 10 * GIB, "mem_total_bytes": 160 * GIB}


def test_labels_never_invent_a_figure():
    sampled = {"samples": 3, "util_mean": 41.6, "util_peak": 97.0, "mem_mean_bytes": GIB, "mem_peak_bytes": 12 * GIB,
               "mem_total_bytes": 80 * GIB}
    assert label(_record(declared=True, detail={"gpu_use": sampled})) == DECLARED
    assert label(_record()) == NOT_SAMPLED
    assert label(_record(detail={"gpu_use": {"samples": 0}})) == NOT_SAMPLED
    assert label(_record(detail={"gpu_use": sampled})) == "42% mean, 97% peak, 12.0 GiB of 80.0 GiB peak"
    assert label(_record(kind="sandbox", resource="CPU")) == "" and label(_record(kind="provisioned")) == ""
    # A group: weighted by billed GPU-seconds; the declared and unsampled ones counted, not averaged in.
    other = {**sampled, "util_mean": 10.0, "util_peak": 20.0}
    rows = [_record(detail={"gpu_use": sampled}, billed_s=30), _record(detail={"gpu_use": other}, billed_s=10),
            _record(declared=True), _record()]
    assert combine(rows) == "34% mean, 97% peak, 12.0 GiB peak; 1 unknown (declared); 1 not sampled"
    assert combine([_record(declared=True), _record(declared=True)]) == DECLARED
    by_type = {r.key[0]: r.gpu_use for r in group(rows + [_record(resource="A100", declared=True)], ("resource",))}
    assert by_type == {"A100 (declared)": DECLARED, "H100 (declared)": DECLARED,
                       "H100": "34% mean, 97% peak, 12.0 GiB peak; 1 not sampled"}


def test_the_meter_samples_a_watched_interval_into_its_detail(tmp_path):
    meter = Meter(open_ledger(None, str(tmp_path)), RateCard.from_config({}), heartbeat_s=0)
    meter.gpu_use.every_s = 0.05
    asked = threading.Event()
    figures = iter([[(50.0, GIB, 8 * GIB)], None, [(70.0, 3 * GIB, 8 * GIB)]] + [[(70.0, 3 * GIB, 8 * GIB)]] * 1000)

    def sample():  # what remote_kernel._gpu_use hands the meter: per GPU (%, used, total), None when unanswered
        asked.set()
        return next(figures)

    try:
        interval = meter.start(kind="session", user="u", notebook="n", resource="H100")
        meter.watch_gpus(interval, sample)
        wait_for("three samples", lambda: (meter.gpu_use.current(interval) or {}).get("samples", 0) >= 3, 10, 0.02)
        record = meter.stop(interval)
        use = record.detail["gpu_use"]
        assert use["samples"] >= 3 and use["util_peak"] == 70.0 and use["mem_peak_bytes"] == 3 * GIB
        assert 50.0 < use["util_mean"] <= 70.0
        assert meter.ledger.get(interval).detail["gpu_use"] == use  # in the ledger, not only in memory
        assert meter.gpu_use.current(interval) is None  # no longer sampled
    finally:
        meter.close()


def test_a_declared_session_says_unknown_in_the_ledger_and_the_bill(tmp_path):
    from magics.render import Report, bill_section

    ws = burstlab.Workspace(declared_gpus="H100:1", home=str(tmp_path), kernel_pool_size=0, notebook="use.ipynb")
    try:
        session = ws.session("H100")
        assert session.execute_sync("1 + 1").text == "2"
        session.stop()
        [row] = [r for r in ws.usage(user=ws.user) if r.kind == "session"]
        assert row.declared and "gpu_use" not in row.detail  # no sampling, no figure
        assert label(row) == DECLARED
        text = bill_section(Report(), [row], "This notebook (use.ipynb):", ("kind", "resource")).text
        assert "GPU use" in text and "unknown (declared)" in text, text
    finally:
        ws.close()


@pytest.mark.gpu
def test_nvml_figures_of_a_real_gpu(tmp_path, monkeypatch):
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception as exc:  # noqa: BLE001 - no driver here
        pytest.skip(f"no NVML GPU here ({exc})")
    if not count:
        pytest.skip("NVML finds no GPU")
    from burstlab.remote_kernel._gpu_use import nvml_sample

    monkeypatch.setenv("BURSTLAB_GPU_INDEX", "0")
    monkeypatch.setenv("BURSTLAB_GPU_SOURCE", "nvml")
    util, used, total = nvml_sample()
    assert 0.0 <= util <= 100.0 and 0 < used <= total
    meter = Meter(open_ledger(None, str(tmp_path)), RateCard.from_config({}), heartbeat_s=0)
    meter.gpu_use.every_s = 0.05
    try:
        interval = meter.start(kind="session", user="u", notebook="n", resource="GPU")
        meter.watch_gpus(interval, lambda: [nvml_sample()])
        wait_for("two NVML samples", lambda: (meter.gpu_use.current(interval) or {}).get("samples", 0) >= 2, 10)
        use = meter.stop(interval).detail["gpu_use"]
        assert use["mem_total_bytes"] == total and 0.0 <= use["util_mean"] <= 100.0
    finally:
        meter.close()
