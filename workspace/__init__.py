"""The workspace: the one owner of every live resource of a process (GPU sessions, maps, sandboxes),
its Dask client, its ledger and its budget watcher.

``get_workspace()`` returns the process's workspace; front doors (magics, the server, MCP) use only this
package and the core.
"""

from __future__ import annotations

from burstlab import _default

from ._usage import group_usage, usage, write_csv
from .workspace import Workspace, default_notebook, get_workspace, no_gpu_message

_default.provide(get_workspace)  # fan-out, below this layer, reaches the process's workspace through the core

# What front doors need from the leaves, through this package, loaded on first use (importing the sandbox package
# costs ~0.4 s, and a %%gpu notebook never needs it): the sandbox's sizes and limits; files to and from a session.
_LAZY = {"Limits": "burstlab.sandbox", "format_size": "burstlab.sandbox._limits", "parse_size": "burstlab.sandbox",
         "download": "burstlab.remote_kernel.files", "upload": "burstlab.remote_kernel.files",
         "SandboxTemplate": "burstlab.sandbox", "list_templates": "burstlab.sandbox",  # templates by id (REST, MCP)
         "MIN_CPUS": "burstlab.sandbox"}  # the smallest CPU quota a sandbox takes (the OpenAPI document's minimum)


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'burstlab.workspace' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["MIN_CPUS", "Limits", "SandboxTemplate", "Workspace", "default_notebook", "download", "format_size", "get_workspace", "group_usage",
           "list_templates", "no_gpu_message", "parse_size", "upload", "usage", "write_csv"]
