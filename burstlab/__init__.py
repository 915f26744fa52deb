"""burstlab: a notebook-first GPU workspace.

``%load_ext burstlab`` gives the ``%%gpu``, ``%gpu`` and ``%%sandbox`` magics; the Python API is
below. Everything here is imported by name; ``__all__`` is the public surface.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import (
    BudgetExceeded,
    BurstlabError,
    CapacityError,
    ConfigError,
    FanoutError,
    GpuSpecError,
    NoGpuError,
    NotFoundError,
    RemoteError,
    SandboxError,
    SandboxLimitError,
    SessionLostError,
    TransferError,
)
from .gpus import parse_gpu_spec
from .wire import (
    BudgetStatus,
    Execution,
    ExecutionError,
    GpuInventoryEntry,
    GpuRequest,
    GpuSpec,
    MapRecord,
    Output,
    SandboxRecord,
    SessionRecord,
    UsageRecord,
)

# The facade names below live in the layers above the core (fanout, sandbox, workspace). They are loaded on first
# use, so that ``import burstlab.errors`` (or any core module) never imports the layers that import the core.
_LAZY = {
    "Call": "burstlab.fanout",
    "Function": "burstlab.fanout",
    "MapHandle": "burstlab.fanout",
    "Retries": "burstlab.fanout",
    "Sandbox": "burstlab.sandbox",
    "SandboxPool": "burstlab.sandbox",
    "Workspace": "burstlab.workspace",
    "cls": "burstlab.fanout",
    "enter": "burstlab.fanout",
    "exit": "burstlab.fanout",
    "for_each": "burstlab.fanout",
    "function": "burstlab.fanout",
    "get_workspace": "burstlab.workspace",
    "map": "burstlab.fanout",
    "spawn_map": "burstlab.fanout",
    "starmap": "burstlab.fanout",
    "usage": "burstlab.workspace._usage",
}

if TYPE_CHECKING:  # for readers and type checkers; at run time these load through __getattr__
    from burstlab.fanout import (Call, Function, MapHandle, Retries, cls, enter, exit, for_each, function, map,
                                 spawn_map, starmap)
    from burstlab.sandbox import Sandbox, SandboxPool
    from burstlab.workspace import Workspace, get_workspace
    from burstlab.workspace._usage import usage


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'burstlab' has no attribute {name!r}")
    import importlib

    importlib.import_module("burstlab.workspace")  # hands the process's workspace down to fanout (burstlab._default)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


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
    "MapHandle",
    "MapRecord",
    "NoGpuError",
    "NotFoundError",
    "Output",
    "RemoteError",
    "Retries",
    "Sandbox",
    "SandboxError",
    "SandboxLimitError",
    "SandboxPool",
    "SandboxRecord",
    "SessionLostError",
    "SessionRecord",
    "TransferError",
    "UsageRecord",
    "Workspace",
    "cls",
    "enter",
    "exit",
    "for_each",
    "function",
    "get_workspace",
    "map",
    "parse_gpu_spec",
    "spawn_map",
    "starmap",
    "usage",
]
