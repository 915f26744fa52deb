"""What API callers may ask for at most: filled from the app's traitlets, used by the manager and
written into the OpenAPI document (so the document states the very bounds the handlers enforce)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Maxima:
    timeout: float = 600.0  # seconds per run (sandboxes and sessions)
    memory: int = 4 * 1024**3  # bytes
    pids: int = 1024
    cpus: float = 4.0
    network: bool = False  # whether sandboxes may have network access at all
    sandboxes_per_user: int = 16


__all__ = ["Maxima"]
