"""The workspace: the one owner of every live resource of a process (GPU sessions, maps, sandboxes),
its Dask client, its ledger and its budget watcher.

``get_workspace()`` returns the process's workspace; front doors (magics, the server, MCP) use only this
package and the core.
"""

from __future__ import annotations

from .workspace import Workspace, default_notebook, get_workspace

__all__ = ["Workspace", "default_notebook", "get_workspace"]
