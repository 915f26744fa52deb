"""What API callers may ask for at most: filled from the app's traitlets, used by the manager and
written into the OpenAPI document (so the document states the very bounds the handlers enforce)."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * 1024**3


@dataclass(frozen=True)
class Maxima:
    timeout: float = 600.0  # seconds per run (sandboxes and sessions)
    memory: int = 4 * 1024**3  # bytes
    pids: int = 1024
    cpus: float = 4.0
    network: bool = False  # whether sandboxes may have network access at all
    sandboxes_per_user: int = 16
    # Across users, and what waits and requests may cost the service (docs/api.md, "Limits").
    sandboxes: int = 64  # sandboxes of all users at once
    sandbox_memory_total: int = 0  # sum of all sandboxes' memory limits; 0: half the host's memory
    sessions_per_user: int = 4  # GPU sessions one user holds through the API at once
    wait: float = 300.0  # seconds a POST sessions may queue for a GPU
    waiters: int = 8  # POST sessions queueing or starting at once (each holds one of the API's own threads)
    waiters_per_user: int = 2
    body: int = 16 * 1024**2  # bytes of a JSON request body
    output: int = 8 * 1024**2  # bytes (as JSON) of output in one execute response, stream or MCP result

    @property
    def memory_total(self) -> int:
        return self.sandbox_memory_total or _host_memory() // 2


__all__ = ["Maxima"]
