"""Isolated kernels for agent-written cells: namespaces, cgroups, seccomp, limits, files, a warm pool.

``Sandbox`` is the one object users touch; ``SandboxPool`` keeps started sandboxes ready so that
create -> first result is one round trip. See docs/sandbox.md for what each layer protects
against, and what it does not.
"""

from ._exec import ExecResult
from ._files import SandboxFiles
from ._limits import MIN_CPUS, Limits, parse_size
from ._pool import SandboxPool
from ._sandbox import Sandbox
from ._session import SessionKernel, start_session_kernel
from ._snapshot import Snapshot, delete_snapshot, list_snapshots
from ._templates import SandboxTemplate, list_templates

__all__ = ["MIN_CPUS", "ExecResult", "Limits", "Sandbox", "SandboxFiles", "SandboxPool", "SandboxTemplate", "SessionKernel", "Snapshot", "delete_snapshot",
           "list_snapshots", "list_templates", "parse_size", "start_session_kernel"]
