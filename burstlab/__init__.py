"""burstlab: a notebook-first GPU workspace.

``%load_ext burstlab`` gives the ``%%gpu``, ``%gpu`` and ``%%sandbox`` magics; the Python API is
below. Everything here is imported by name; ``__all__`` is the public surface.
"""

from __future__ import annotations

from ._usage import usage
from .errors import (
    BudgetExceeded,
    BurstlabError,
    CapacityError,
    ConfigError,
    FanoutError,
    GpuSpecError,
    NoGpuError,
    RemoteError,
    SandboxError,
    SandboxLimitError,
    SessionLostError,
    TransferError,
)
from .gpus import parse_gpu_spec
from .wire import BudgetStatus, Execution, ExecutionError, GpuInventoryEntry, GpuRequest, GpuSpec, Output, UsageRecord
from .workspace import Workspace, get_workspace
from burstlab.fanout import Call, Function, function, map
from burstlab.sandbox import Sandbox, SandboxPool


__version__ = "0.1.0"


def load_ipython_extension(ipython):  # the %load_ext entry point
    from burstlab.magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython):
    from burstlab.magics import unload_ipython_extension as _unload

    _unload(ipython)


__all__ = [
    "BudgetExceeded",
    "BudgetStatus",
    "BurstlabError",
    "Call",
    "CapacityError",
    "ConfigError",
    "Execution",
    "ExecutionError",
    "FanoutError",
    "Function",
    "GpuInventoryEntry",
    "GpuRequest",
    "GpuSpec",
    "GpuSpecError",
    "NoGpuError",
    "Output",
    "RemoteError",
    "Sandbox",
    "SandboxError",
    "SandboxLimitError",
    "SandboxPool",
    "SessionLostError",
    "TransferError",
    "UsageRecord",
    "Workspace",
    "function",
    "get_workspace",
    "map",
    "parse_gpu_spec",
    "usage",
]
