"""GPU session kernels in the session jail (``c.BurstLab.isolate_sessions``; issue 12, item 1): the decision, and
the lease's side on the GPU host.

- :func:`decide` (pure, in the workspace): whether new sessions are jailed, and :func:`plan`, what a lease carries
  to its GPU host: ``{"user", "required", "start"}`` or None. ``start`` is the sandbox layer's
  ``start_served_kernel`` (``sandbox/_served.py``), handed down by the workspace, the layer above both.
- On the GPU host the lease's primary task (``lease.hold``) takes its kernel from :class:`JailedKernels` instead
  of the host's warm pool: a kernel in the sandbox's jail as the session's user (own uid, own persistent work dir
  ``<work root>/<user>``, ``BURSTLAB_SESSION_WORK_ROOT`` in the worker's environment or
  ``/var/lib/burstlab/users``), with exactly the leased GPUs' device nodes and ``CUDA_VISIBLE_DEVICES`` (declared
  GPUs have none, and the record says so), the scrubbed environment (no token, certificate or connection file of
  the service or of anyone else), its own namespaces, cgroup, seccomp filter and no_new_privs; served to the
  notebook over TCP through a forwarder (Curve-encrypted when this host encrypts its kernels: ``_curve``).
- The jail needs root. On a host whose worker is not root, a ``required`` plan (``isolate_sessions = True``)
  fails the session with :class:`IsolationUnavailable`'s message, which names the fix; under ``auto`` the host's
  plain pool kernel serves it and the session's record says why (``lease._kernel_source``).
"""

from __future__ import annotations

import os
from typing import Any, Callable


class IsolationUnavailable(RuntimeError):
    """The session jail cannot be built on this host (it needs root)."""


def decide(setting: Any, multi_user: bool) -> tuple[bool, bool, str]:
    """``(jail new sessions, required, why)`` for ``c.BurstLab.isolate_sessions = setting`` in a workspace
    that serves several users (``multi_user``) or one."""
    if setting is True:
        return True, True, "c.BurstLab.isolate_sessions = True: every session kernel runs in the session jail"
    if setting is False:
        return False, False, ("c.BurstLab.isolate_sessions = False: session kernels run as the GPU worker's own "
                              "user and can read what it can")
    if multi_user:
        return True, False, ("auto: this workspace serves several users, so session kernels run in the session "
                             "jail wherever the GPU host's worker runs as root")
    return False, False, ("auto, and this workspace serves one user (set c.BurstLab.isolate_sessions = True to "
                          "jail its session kernels too)")


def plan(setting: Any, multi_user: bool, user: str, start: Callable | None = None,
         options: dict | None = None) -> dict | None:
    """What a lease carries to its host: None (a plain pool kernel) or ``{"user", "required", "start", "options"}``
    (``options``: more keyword arguments for ``start``, e.g. the embedded cluster's ``work_root``)."""
    on, required, _ = decide(setting, multi_user)
    return {"user": user, "required": required, "start": start, "options": dict(options or {})} if on else None


def not_root_message(host: str) -> str:
    return (f"The session jail needs root on the GPU host, and the worker on {host} runs as uid {os.geteuid()}. "
            "Run `burstlab worker` there as root (e.g. in its container), or set c.BurstLab.isolate_sessions = "
            "False to run session kernels unjailed (they can then read what the worker can).")


def _curve_keys() -> dict[str, str]:
    """A fresh Curve key pair for the jailed kernel's TCP side when this host encrypts its kernels."""
    from . import _curve

    if not _curve.wanted():
        return {}
    _curve.check_support()
    return _curve.new_keys()


class JailedKernels:
    """Where one lease's kernels come from on this worker when it asks for the jail: its first kernel, and a
    fresh one at each restart (a kernel provisioner's). ``detail`` says how the last one is isolated."""

    def __init__(self, ip: str, isolation: dict, *, host: str, gpu_type: str, cuda_visible: str, declared: bool,
                 lease_id: str):
        if os.geteuid() != 0:
            raise IsolationUnavailable(not_root_message(host))
        if not callable(isolation.get("start")):
            raise IsolationUnavailable("The lease asked for the session jail without saying how to start it "
                                       "(a workspace older than this worker): upgrade burstlab in the notebook.")
        from .pool import BOOTSTRAP

        self.ip = ip
        self.user = str(isolation["user"])
        self.gpu_type = gpu_type
        self.indices = [int(i) for i in cuda_visible.split(",") if i.strip()]
        self.declared = declared
        self.env = {"BURSTLAB_GPU_TYPE": gpu_type, "BURSTLAB_LEASE": lease_id}
        self._start = isolation["start"]
        self._options = dict(isolation.get("options") or {})
        self.setup = BOOTSTRAP  # its environment is set at start; the variables comm is not
        self.detail = ""

    def take(self) -> tuple[Any, bool]:
        kernel, self.detail = self._start(ip=self.ip, user=self.user, gpu_type=self.gpu_type, indices=self.indices,
                                          declared=self.declared, env=self.env, keys=_curve_keys(), **self._options)
        return kernel, False


__all__ = ["IsolationUnavailable", "JailedKernels", "decide", "not_root_message", "plan"]
