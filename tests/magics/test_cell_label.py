"""A %%gpu cell run in a real notebook kernel ends with a display carrying burstlab's cell record (the lab
extension's "ran on" label and the cell's metadata) and, as text/plain, exactly the footer a terminal prints."""

import os
import re

from jupyter_client import KernelManager

from burstlab.magics.render import CELL_MIME

FOOTER = re.compile(r"\[H100 \(declared\) on (\S+) · (\d+) s held · (\$[0-9.]+) so far\]")


def test_gpu_cell_publishes_its_record_with_the_footer_as_text(tmp_path):
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
        assert kc.execute_interactive("%load_ext burstlab", timeout=60)["content"]["status"] == "ok"
        reply = kc.execute_interactive("%%gpu H100\nprint(6 * 7)", timeout=180, output_hook=hook)
        assert reply["content"]["status"] == "ok", (reply["content"], streams)
        quiet = kc.execute_interactive("%%gpu H100 --quiet\nprint(1)", timeout=60, output_hook=hook)
        assert quiet["content"]["status"] == "ok"
        kc.execute_interactive("%gpu stop all", timeout=60)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)

    assert "42\n" in streams
    assert not any("s held" in s for s in streams)  # the footer is the display below, not printed as well
    assert len(displays) == 1, displays  # --quiet publishes none
    data = displays[0]
    footer = FOOTER.fullmatch(data["text/plain"])
    assert footer, data["text/plain"]
    host, held, cost = footer.groups()
    record = data[CELL_MIME]
    assert record["gpu"] == "H100 (declared)" and record["spec"] == "H100" and record["host"] == host
    assert record["held_s"] == int(held) and isinstance(record["cost_microusd"], int) and record["cost_microusd"] >= 0
    assert record["text"] == f"ran on H100 (declared) @ {host} · {held} s held · {cost} so far"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", record["at"])
