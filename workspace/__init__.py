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

__all__ = ["Workspace", "default_notebook", "get_workspace", "group_usage", "no_gpu_message", "usage", "write_csv"]
