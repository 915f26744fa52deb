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
    ├── NotFoundError            what a request names (a session, map, budget, file) does not exist, or is not yours
    └── SandboxError             a sandbox could not start, or a request to it was refused
        ├── SandboxLimitError    a sandbox limit (timeout, memory, pids, output, file size) was hit
        └── SandboxFileNotFound  no such file in the sandbox's work dir (also a NotFoundError)

Errors in the user's own code are data where they can be (``Execution.error``); a ``%%gpu`` cell
re-raises them as :class:`RemoteError`, whose ``_render_traceback_`` shows the remote frames only.
Transport errors (ZMQ, tornado, Dask comms) are translated into these at one boundary each, with
``raise ... from exc``; users never see a transport's own exception types.

HTTP is one such boundary, crossed twice (the server answers, ``burstlab.client`` reads the answer):
:data:`HTTP_STATUS` is its one table, :func:`http_status` reads it one way and :func:`error_for_status`
the other. Nothing chooses an error by matching its message.
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


class NotFoundError(BurstlabError, LookupError):
    """What a request names (a session, a map, a budget, a sandbox's file) does not exist, or is another user's."""


class SandboxFileNotFound(SandboxError, NotFoundError):
    """No such file (or directory) in the sandbox's work dir."""


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


# -- the HTTP boundary: one table, read both ways ---------------------------------------------------

# Each error a request can cause, most specific first, and its status. An error not listed (the platform
# failed: a scheduler out of reach, a sandbox that cannot start) is a 503.
HTTP_STATUS: tuple[tuple[type[BurstlabError], int], ...] = (
    (SandboxFileNotFound, 404),
    (SandboxLimitError, 413),
    (GpuSpecError, 400),
    (ConfigError, 400),       # what the caller asked for is not a valid setting (a budget of $0)
    (BudgetExceeded, 402),
    (NotFoundError, 404),
    (CapacityError, 409),     # no free GPU
    (NoGpuError, 409),
    (SessionLostError, 409),  # the session's kernel is gone
)
UNAVAILABLE = 503


def http_status(exc: BaseException) -> int:
    """The status a server answers ``exc`` with (the server's side of :data:`HTTP_STATUS`)."""
    for kind, status in HTTP_STATUS:
        if isinstance(exc, kind):
            return status
    return UNAVAILABLE


def error_for_status(status: int, message: str, resource: str = "", action: str = "") -> BurstlabError:
    """The error a client raises for a 4xx answer (the client's side of :data:`HTTP_STATUS`).

    ``resource`` is the path's first part (``sessions``, ``sandboxes``...), ``action`` the part after the
    id (``execute``, ``files``, ``interrupt``; "" for the resource itself). A status means the table's error of that resource's family: a sandbox's
    refusals are SandboxErrors, and a 409 from a session's ``execute`` is its kernel gone, not a full cluster.
    The error carries the status as ``.status``.
    """
    exc: BurstlabError
    if status == 402:
        exc = BudgetExceeded(message)
    elif resource == "sandboxes":
        if status == 413:
            exc = SandboxLimitError(message)
        elif status == 404 and action == "files":
            exc = SandboxFileNotFound(message)
        else:
            exc = SandboxError(message)
    elif status == 409 and resource == "sessions":
        exc = SessionLostError(message) if action == "execute" else CapacityError(message)
    elif status == 404:
        exc = NotFoundError(message)
    else:
        exc = BurstlabError(message)
    exc.status = status  # type: ignore[attr-defined]
    return exc


__all__ = [
    "HTTP_STATUS",
    "UNAVAILABLE",
    "BudgetExceeded",
    "BurstlabError",
    "CapacityError",
    "ConfigError",
    "FanoutError",
    "GpuSpecError",
    "NoGpuError",
    "NotFoundError",
    "RemoteError",
    "SandboxError",
    "SandboxFileNotFound",
    "SandboxLimitError",
    "SessionLostError",
    "TransferError",
    "error_for_status",
    "http_status",
]
