"""Every error burstlab raises, in one tree.

::

    BurstlabError
    ├── ConfigError              bad configuration (declared GPUs, rates, paths)
    ├── GpuSpecError             a GPU spec that does not parse, or names a type nobody has
    ├── NoGpuError               no GPU was found and none is declared
    ├── CapacityError            every GPU of the requested type is held
    ├── SessionLostError         the remote kernel or its lease died; its state is gone
    ├── RemoteError              the user's code raised on the remote kernel
    ├── TransferError            a variable could not be pushed or pulled (unpicklable, missing)
    ├── BudgetExceeded           spending would pass a budget
    ├── LedgerError              the ledger cannot be written (disk full, read-only, server away)
    ├── FanoutError              a map could not start or an input failed for good
    └── SandboxError             a sandbox could not start, or a request to it was refused
        └── SandboxLimitError    a sandbox limit (timeout, memory, pids, output, file size) was hit

Errors in the user's own code are data where they can be (``Execution.error``); a ``%%gpu`` cell
re-raises them as :class:`RemoteError`, whose ``_render_traceback_`` shows the remote frames only.
Transport errors (ZMQ, tornado, Dask comms) are translated into these at one boundary each, with
``raise ... from exc``; users never see a transport's own exception types.
"""

from __future__ import annotations


class BurstlabError(Exception):
    """Base class of every error burstlab raises on purpose.

    These are deliberate errors whose message names the fix, so IPython shows the message alone,
    not burstlab's internal frames.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]


class ConfigError(BurstlabError):
    """The configuration is invalid; the message names the setting and a valid value."""


class GpuSpecError(BurstlabError, ValueError):
    """A GPU spec did not parse or names a GPU type this workspace does not have."""


class NoGpuError(BurstlabError):
    """No GPU was found through NVML and none is declared."""


class CapacityError(BurstlabError):
    """Every GPU of the requested type is held by another session or task."""


class SessionLostError(BurstlabError):
    """The remote kernel (or the lease that held its GPU) is gone, and its state with it."""


class TransferError(BurstlabError):
    """A variable could not be moved between the notebook and the remote kernel."""


class BudgetExceeded(BurstlabError):
    """Starting or continuing would spend past a budget."""


class LedgerError(BurstlabError):
    """The ledger refused a write that must happen first (opening an interval): nothing was started."""


class FanoutError(BurstlabError):
    """A fan-out could not start, or one of its inputs failed for good."""


class SandboxError(BurstlabError):
    """A sandbox could not be created, or refused a request."""


class SandboxLimitError(SandboxError):
    """A sandbox limit was reached."""


class RemoteError(BurstlabError):
    """The user's code raised on a remote kernel.

    ``ename``/``evalue`` are the remote exception's type name and value; ``traceback`` holds the
    remote traceback lines as the kernel formatted them (ANSI colours included). IPython calls
    ``_render_traceback_`` to show exactly those lines, so the notebook shows the user's frames
    and none of burstlab's.
    """

    def __init__(self, ename: str, evalue: str, traceback: list[str] | tuple[str, ...] = ()):
        super().__init__(f"{ename}: {evalue}")
        self.ename = ename
        self.evalue = evalue
        self.traceback = list(traceback)

    def _render_traceback_(self) -> list[str]:
        return self.traceback or [f"{self.ename}: {self.evalue}"]


__all__ = [
    "BudgetExceeded",
    "BurstlabError",
    "CapacityError",
    "ConfigError",
    "FanoutError",
    "GpuSpecError",
    "NoGpuError",
    "RemoteError",
    "SandboxError",
    "SandboxLimitError",
    "SessionLostError",
    "TransferError",
]
