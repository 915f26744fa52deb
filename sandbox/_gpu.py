"""GPU device nodes for ``Sandbox(gpu=...)``: only the chosen GPUs' nodes are passed in.

Found through NVML (nvidia-ml-py). The sandbox sees ``/dev/nvidiactl``, the UVM nodes and
``/dev/nvidia<minor>`` of its GPUs only; every other GPU's node is absent from its /dev.
"""

from __future__ import annotations

import os

from burstlab.errors import SandboxError
from burstlab.gpus import normalise_type, parse_gpu_spec

_COMMON = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


def gpu_devices(spec: str, indices: list[int] | None = None) -> tuple[list[str], dict[str, str]]:
    """(device nodes, environment) for the first choice of ``spec`` this host has.

    ``indices`` pins the NVML indices (a lease passes the GPUs it holds); otherwise the first
    matching GPUs are taken.
    """
    parsed = parse_gpu_spec(spec)
    try:
        import pynvml
    except ImportError as exc:
        raise SandboxError("Sandbox(gpu=...) needs nvidia-ml-py: `pip install nvidia-ml-py`.") from exc
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise SandboxError(f"Sandbox(gpu={spec!r}): NVML finds no GPU on this host ({exc}); create the sandbox without gpu=.") from exc
    try:
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            name = name.decode() if isinstance(name, bytes) else name
            found.append((i, normalise_type(name), pynvml.nvmlDeviceGetMinorNumber(h), pynvml.nvmlDeviceGetUUID(h)))
    finally:
        pynvml.nvmlShutdown()
    for choice in parsed.choices:
        match = [f for f in found if f[1] == choice.type and (indices is None or f[0] in indices)]
        if len(match) >= choice.count:
            picked = match[: choice.count]
            nodes = [p for p in _COMMON if os.path.exists(p)] + [f"/dev/nvidia{m}" for _, _, m, _ in picked]
            uuids = ",".join(u.decode() if isinstance(u, bytes) else u for *_, u in picked)
            return nodes, {"CUDA_VISIBLE_DEVICES": uuids, "NVIDIA_VISIBLE_DEVICES": uuids}
    have = ", ".join(sorted({f[1] for f in found})) or "none"
    raise SandboxError(f"Sandbox(gpu={spec!r}): this host has no such GPU free (it has: {have}).")


__all__ = ["gpu_devices"]
