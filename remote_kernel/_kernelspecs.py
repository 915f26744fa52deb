"""burstlab's kernelspecs: one "Python 3 (burstlab · TYPE)" per GPU type the workspace has.

Each names the provisioner (``metadata.kernel_provisioner``), the GPU spec it leases and
``interrupt_mode: message`` (a signal cannot reach a kernel on another host). They are written by
``jupyter burstlab kernelspecs install`` from the current inventory, never by ``pip install`` (which
cannot know what GPUs there are); installing again removes the ones whose GPU type is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_core.paths import SYSTEM_JUPYTER_PATH, jupyter_data_dir

from .provisioner import NAME as PROVISIONER

PREFIX = "burstlab-"


def spec_name(gpu: str) -> str:
    """``"H100"`` -> ``"burstlab-h100"``; ``"H100:2"`` -> ``"burstlab-h100-x2"`` (kernelspec names are lower case)."""
    gpu_type, _, count = gpu.partition(":")
    return PREFIX + gpu_type.lower().replace("_", "-") + (f"-x{count}" if count and count != "1" else "")


def display_name(gpu: str) -> str:
    gpu_type, _, count = gpu.partition(":")
    return f"Python 3 (burstlab · {gpu_type}{f' ×{count}' if count and count != '1' else ''})"


def kernel_json(gpu: str, wait: float = 0.0) -> dict:
    """The kernel.json of the kernelspec that leases ``gpu`` (a spec: ``"H100"``, ``"H100:2"``)."""
    config: dict = {"gpu": gpu}
    if wait:
        config["gpu_wait"] = float(wait)
    return {
        # Never run: the provisioner hands the manager a pool kernel on the GPU host. Kept valid so
        # that tools that read argv see a Python kernel.
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name(gpu),
        "language": "python",
        "interrupt_mode": "message",
        "env": {},
        "metadata": {
            "debugger": True,
            "kernel_provisioner": {"provisioner_name": PROVISIONER, "config": config},
            "burstlab": {"gpu": gpu},
        },
    }


def kernels_dir(user: bool = False, prefix: str | None = None) -> str:
    """Where ``KernelSpecManager.install_kernel_spec`` writes for these options."""
    if user:
        return os.path.join(jupyter_data_dir(), "kernels")
    if prefix:
        return os.path.join(prefix, "share", "jupyter", "kernels")
    return os.path.join(SYSTEM_JUPYTER_PATH[0], "kernels")


def is_ours(spec_dir: str) -> str | None:
    """The GPU spec of the burstlab kernelspec in ``spec_dir``, or None if it is not one of ours."""
    try:
        with open(os.path.join(spec_dir, "kernel.json")) as f:
            meta = json.load(f).get("metadata") or {}
    except (OSError, ValueError):
        return None
    if (meta.get("kernel_provisioner") or {}).get("provisioner_name") != PROVISIONER:
        return None
    return (meta.get("burstlab") or {}).get("gpu") or ""


def install(gpus: list[str], *, user: bool = False, prefix: str | None = None, wait: float = 0.0) -> tuple[list[str], list[str]]:
    """Write one kernelspec per GPU spec in ``gpus`` and remove burstlab's others in the same place.

    Returns (installed names, removed names)."""
    from ipykernel.kernelspec import RESOURCES  # the Python logos, as ipykernel's own kernelspec has them

    ksm = KernelSpecManager()
    wanted = {spec_name(g): g for g in gpus}
    installed = []
    for name, gpu in sorted(wanted.items()):
        with tempfile.TemporaryDirectory(prefix="burstlab-kernelspec-") as tmp:
            for logo in os.listdir(RESOURCES):
                if logo.startswith("logo-"):
                    shutil.copy(os.path.join(RESOURCES, logo), tmp)
            with open(os.path.join(tmp, "kernel.json"), "w") as f:
                json.dump(kernel_json(gpu, wait), f, indent=1, ensure_ascii=False)
            ksm.install_kernel_spec(tmp, name, user=user, prefix=prefix)
        installed.append(name)
    return installed, remove(keep=set(wanted), user=user, prefix=prefix)


def remove(keep: set[str] = frozenset(), *, user: bool = False, prefix: str | None = None) -> list[str]:
    """Remove burstlab's kernelspecs (but those named in ``keep``) from the place these options name."""
    root = kernels_dir(user, prefix)
    removed = []
    if os.path.isdir(root):
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if name.startswith(PREFIX) and name not in keep and is_ours(path) is not None:
                shutil.rmtree(path)
                removed.append(name)
    return removed


def installed() -> dict[str, tuple[str, str]]:
    """Every burstlab kernelspec Jupyter finds: name -> (GPU spec, directory)."""
    out = {}
    for name, path in KernelSpecManager().find_kernel_specs().items():
        gpu = is_ours(path)
        if gpu is not None:
            out[name] = (gpu, path)
    return out


__all__ = ["PREFIX", "display_name", "install", "installed", "is_ours", "kernel_json", "kernels_dir", "remove",
           "spec_name"]
