"""Sandbox(gpu=...) passes only the chosen GPU's device nodes in (needs a real GPU found through NVML)."""

from __future__ import annotations

import glob

import pytest

from burstlab.errors import SandboxError


def _gpu_type() -> str:
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pytest.skip("NVML finds no GPU here")
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            pytest.skip("NVML finds no GPU here")
        from burstlab.gpus import normalise_type

        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
        return normalise_type(name.decode() if isinstance(name, bytes) else name)
    finally:
        pynvml.nvmlShutdown()


@pytest.mark.gpu
def test_only_the_leased_gpu_nodes_are_inside():
    from burstlab.sandbox import Sandbox

    gpu = _gpu_type()
    host_nodes = sorted(p for p in glob.glob("/dev/nvidia[0-9]*"))
    with Sandbox(gpu=gpu) as sb:
        inside = sb.run("import glob, os; sorted(glob.glob('/dev/nvidia[0-9]*')), os.environ['CUDA_VISIBLE_DEVICES']").text
        assert host_nodes[0] in inside
        for other in host_nodes[1:]:
            assert other not in inside
        assert "GPU-" in inside


@pytest.mark.gpu
def test_unknown_gpu_type_names_what_the_host_has():
    from burstlab.sandbox import Sandbox

    _gpu_type()
    with pytest.raises(SandboxError, match="it has"):
        Sandbox(gpu="B200").start()
