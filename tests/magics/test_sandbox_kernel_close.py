"""A notebook kernel that closes with a %%sandbox open leaves nothing in its log: no KeyboardInterrupt from the
sandbox's fork server (Jupyter signals the kernel's whole process group when it shuts it down)."""

import os
import sys

from jupyter_client import KernelManager


def test_closing_a_kernel_with_a_sandbox_prints_no_traceback(tmp_path):
    log = tmp_path / "kernel.err"
    env = {**os.environ, "BURSTLAB_HOME": str(tmp_path / "home")}
    km = KernelManager(kernel_name="python3", transport="ipc", ip=str(tmp_path / "k"))
    with open(log, "w") as err:
        km.start_kernel(stderr=err, stdout=err, env=env, extra_arguments=[f"--HistoryManager.enabled=False"])
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        outputs = []
        kc.execute_interactive("%load_ext burstlab", timeout=60)
        reply = kc.execute_interactive("%%sandbox\nprint(6 * 7)", timeout=120,
                                       output_hook=lambda m: outputs.append(m["content"].get("text", "")))
        assert reply["content"]["status"] == "ok" and "42\n" in outputs
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
