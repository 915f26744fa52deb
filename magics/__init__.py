"""``%load_ext burstlab``: the ``%%gpu``/``%gpu`` and ``%%sandbox`` magics, thin over the Python API."""

from __future__ import annotations


def load_ipython_extension(ipython) -> None:
    from .gpu import GpuMagics

    ipython.register_magics(GpuMagics)
    try:
        from ._sandbox import SandboxMagics
    except ImportError:  # the sandbox magic ships with burstlab.sandbox; absent only mid-development
        return
    ipython.register_magics(SandboxMagics)


def unload_ipython_extension(ipython) -> None:
    from burstlab.workspace import get_workspace

    get_workspace().stop("all")


__all__ = ["load_ipython_extension", "unload_ipython_extension"]
