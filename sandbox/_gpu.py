"""GPU device nodes for ``Sandbox(gpu=...)``: only the chosen GPUs' nodes are passed in.

Found through NVML (nvidia-ml-py). The sandbox sees ``/dev/nvidiactl``, the UVM nodes and
``/dev/nvidia<minor>`` of its GPUs only; every other GPU's node is absent from its /dev.
"""

from __future__ import annotations

import os

from burstlab.errors import SandboxError
from burstlab.gpus import nvml_gpus, parse_gpu_spec

_COMMON = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


def gpu_devices(spec: str, indices: list[int] | None = None) -> tuple[list[str], dict[str, str]]:
    """(device nodes, environment) for the first choice of ``spec`` this host has.

    ``indices`` pins the NVML indices (a lease passes the GPUs it holds); otherwise the first
    matching GPUs are taken.
    """
    parsed = parse_gpu_spec(spec)
    found = nvml_gpus()
    if not found:
        raise SandboxError(f"Sandbox(gpu={spec!r}): NVML finds no GPU on this host; create the sandbox without gpu=.")
    for choice in parsed.choices:
        match = [g for g in found if g.type == choice.type and (indices is None or g.index in indices)]
        if len(match) >= choice.count:
            picked = match[: choice.count]
            nodes = [p for p in _COMMON if os.path.exists(p)] + [f"/dev/nvidia{g.minor}" for g in picked]
            uuids = ",".join(g.uuid for g in picked)
            return nodes, {"CUDA_VISIBLE_DEVICES": uuids, "NVIDIA_VISIBLE_DEVICES": uuids}
    have = ", ".join(sorted({g.type for g in found}))
    raise SandboxError(f"Sandbox(gpu={spec!r}): this host has no such GPU free (it has: {have}).")

def lease_devices(declared: bool, gpu_type: str, indices: list[int], cuda_visible: str) -> tuple[list[str], dict, str]:
    """(device nodes, environment, a note saying which) for a session kernel holding a lease's GPUs ``indices``.
    Declared GPUs have no device nodes: none are passed in, and the note says so."""
    if declared:
        return [], {"CUDA_VISIBLE_DEVICES": cuda_visible}, "declared GPUs: no device nodes to pass in"
    nodes, env = gpu_devices(f"{gpu_type}:{len(indices)}", indices)
    return nodes, env, "device nodes " + ", ".join(nodes)


__all__ = ["gpu_devices", "lease_devices"]
