"""The process's default workspace, as the layers below the workspace reach it.

Fan-out (``burstlab.map(fn, xs)`` with no ``workspace=``) and a sandbox made directly (``burstlab.Sandbox()``,
adopted by the process's workspace as it starts: metered, budgeted, registered, and given a warm sandbox from its
pool when the pool serves its settings) need it, but sit below it and must not import it. The workspace package hands its ``get_workspace`` down here when it is imported (and the
``burstlab`` facade imports it before any name that needs it), so the dependency is passed down, not reached up for.
"""

from __future__ import annotations

from typing import Any, Callable

from .errors import BurstlabError

_factory: Callable[[], Any] | None = None


def provide(factory: Callable[[], Any]) -> None:
    """Called by ``burstlab.workspace`` on import: ``factory()`` returns the process's workspace."""
    global _factory
    _factory = factory


def provided() -> bool:
    """Whether the workspace layer is loaded in this process (it hands its ``get_workspace`` down on import)."""
    return _factory is not None


def default_workspace() -> Any:
    """The process's workspace (made on first use), for code below the workspace layer."""
    if _factory is None:
        raise BurstlabError(
            "No workspace is loaded in this process. Use burstlab.map / burstlab.function (which load it), "
            "or pass workspace=burstlab.Workspace()."
        )
    return _factory()


__all__ = ["default_workspace", "provide", "provided"]
