"""A Jupyter kernel provisioner: a notebook's own kernel is a leased GPU kernel.

Registered under the ``jupyter_client.kernel_provisioners`` entry point as ``burstlab-provisioner``
and named by the kernelspecs ``jupyter burstlab kernelspecs install`` writes ("Python 3 (burstlab ·
H100)", ``_kernelspecs.py``). Starting such a kernel is ``Workspace.session(gpu, wait)``: the same
spec parser, capacity rules, ``CapacityError`` text, budget admission, meter interval (kind
``session``, attributed to the notebook and user) and registry record as a ``%%gpu`` session; the
kernel is the lease's warm pool kernel, and its connection info goes to the kernel manager, which
then talks to it directly like to any kernel.

The lifecycle maps one to one:

- interrupt: the kernelspec says ``interrupt_mode: message``; the manager sends ``interrupt_request``
  on the control channel, which works whatever host the kernel is on;
- restart: the same lease, a fresh kernel from the host's pool (``_held.renew`` on the lease's
  worker); the meter interval keeps running;
- shutdown (the server's, its culler's, or the manager's): the session stops, the lease is
  released, the interval closed;
- a dead kernel: the lease ends (``kernel-died``), the session closes its interval, ``poll()``
  returns the exit status; an auto-restart then takes a new lease;
- a session stopped by burstlab (the lab panel's Stop, a budget's hard stop, burstlab's idle
  timeout, the server's workspace closing): the server shuts the kernel down rather than restart it.

This module holds the mechanics; ``burstlab.workspace._provisioner.BurstlabProvisioner`` (the entry
point) binds them to a workspace: in a Jupyter server with the burstlab extension the server's, found
through the server's settings; elsewhere (a bare ``KernelManager``) the process's ``get_workspace()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import signal
import time
from datetime import datetime, timezone
from typing import Any

from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets import Float, Unicode

from burstlab import _sync
from burstlab.errors import BurstlabError, GpuSpecError, SessionLostError, http_status

from . import _held

NAME = "burstlab-provisioner"  # the entry point's name, which kernelspecs give as provisioner_name
EXIT_STOPPED = -signal.SIGTERM  # the status poll() reports for a kernel whose lease was released
EXIT_LOST = -signal.SIGKILL  # ... and for one whose host stopped answering before its exit status was known


# Blocking workspace and Dask calls run here, not in the event loop's default executor: a server's is small
# and shared, and jupyter_core's run_sync keys its loops by thread name, which "asyncio_N" threads of
# different loops share (a lease's set-up cell, run from such a thread, found another loop running).
_executor = concurrent.futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="burstlab-provisioner")


async def _blocking(fn, *args, **kwargs):
    return await asyncio.get_running_loop().run_in_executor(_executor, functools.partial(fn, *args, **kwargs))


def _where(key: str, dask_scheduler=None) -> str:
    """Runs on the scheduler: the worker running task ``key`` ("" if none)."""
    ts = dask_scheduler.tasks.get(key)
    return ts.processing_on.address if ts is not None and ts.processing_on is not None else ""


def _connection(info: dict) -> dict:
    """A pool kernel's connection info as a kernel manager expects it (the key as bytes)."""
    out = dict(info)
    if isinstance(out.get("key"), str):
        out["key"] = out["key"].encode()
    return out


class GpuKernelProvisioner(KernelProvisionerBase):
    """Lease GPUs through a workspace and hand the lease's warm kernel to the kernel manager (the workspace
    layer binds the workspace: ``burstlab.workspace._provisioner.BurstlabProvisioner``)."""

    gpu = Unicode(
        "", help="The GPU spec this kernel holds, as `%%gpu` takes it (\"H100\", \"H100:2\", \"H100,A100\"). "
        "Set per kernelspec (metadata.kernel_provisioner.config.gpu).",
    ).tag(config=True)
    gpu_wait = Float(
        0.0, help="Seconds to wait for a free GPU before the start fails with CapacityError (0: fail at once).",
    ).tag(config=True)
    worker_timeout = Float(
        60.0, help="Seconds a call to the lease's GPU worker (restart, status, signal) may take before it fails.",
    ).tag(config=True)

    _session: Any = None  # the workspace's GpuSession
    _worker = ""  # address of the Dask worker holding the lease's kernel
    _exit: int | None = None
    _expecting_exit = False  # a shutdown or restart asked the kernel to exit; the lease still holds
    _releasing = False  # we stop the session ourselves (shutdown), not burstlab
    _shutting_down_stopped = False
    notebook = ""

    # -- what the kernel manager asks -------------------------------------------------------------

    @property
    def has_process(self) -> bool:
        return self._session is not None

    @property
    def session_id(self) -> str:
        """The burstlab session (= lease) id of this kernel, as GET sessions lists it; "" before start."""
        return self._session.id if self._session is not None else ""

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        if not self.gpu:
            raise GpuSpecError(
                f"The kernelspec {self.kernel_spec.display_name!r} names no GPU (metadata.kernel_provisioner.config.gpu). "
                "Reinstall burstlab's kernelspecs: `jupyter burstlab kernelspecs install --sys-prefix`."
            )
        kwargs = await super().pre_launch(**kwargs)
        kwargs.pop("extra_arguments", None)
        kwargs["cmd"] = list(self.kernel_spec.argv)  # never run: the kernel is the lease's pool kernel
        env = kwargs.get("env") or {}
        # The server names the notebook of a session in JPY_SESSION_NAME; usage is attributed to it.
        self.notebook = env.get("JPY_SESSION_NAME") or self.notebook or f"kernel-{self.kernel_id}"
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict:
        session = self._session
        if session is not None and session.state == "running" and session.lease.ended() is None:
            # A restart: the same lease and meter interval, a fresh kernel from the host's pool.
            info = await self._on_worker(_held.renew, session.id)
            session.kernel_replaced(info["connection"], info["pid"], info["warm"])
            self.log.info("burstlab: restarted the %s kernel of session %s (warm: %s)",
                          session.label, session.id, info["warm"])
        else:
            # A first start, or an auto-restart after the kernel died (its session, and interval, ended).
            if session is not None:
                self.log.warning("burstlab: the %s session of kernel %s ended (%s); starting on a new lease",
                                 session.label, self.kernel_id, session.end_reason or session.lease.ended())
            ws = self._get_workspace()
            try:
                # No environment check: it would run cells in the notebook's own kernel (its history and
                # execution count), and its report has nowhere to go.
                session = await _blocking(ws.session, self.gpu, self.gpu_wait, notebook=self.notebook, reuse=False,
                                          environment="off")
            except BurstlabError as exc:
                self._forget_failed_start()
                if isinstance(exc, GpuSpecError):  # most likely a kernelspec for a GPU type that is gone
                    exc = GpuSpecError(f"{exc} If the kernelspec {self.kernel_spec.display_name!r} is stale, refresh "
                                       "them with `jupyter burstlab kernelspecs install`.")
                if self.server_settings() is None:
                    raise exc from None
                raise _http_error(exc) from exc
            # The kernel manager talks to the kernel; the session's own client would only queue its output.
            # (Its host watch stays: a host that stops answering ends the session, and poll() says so.)
            _sync.submit(session.kernel.aclose())
            self._session = session
            try:
                self._worker = await self._find_worker()
            except BaseException:  # a start that fails holds no GPU
                await _blocking(session.stop, "its Jupyter kernel could not start")
                raise
            self.log.info("burstlab: kernel %s runs on %s (session %s, warm: %s)",
                          self.kernel_id, session.label, session.id, session.lease.warm)
        self._exit = None
        self._expecting_exit = False
        self._releasing = False
        self._shutting_down_stopped = False
        self.connection_info = _connection(session.lease.connection)
        return self.connection_info

    async def poll(self) -> int | None:
        session = self._session
        if session is None:
            return 0
        if self._exit is not None:
            return self._exit
        ended = session.lease.ended()
        if ended is not None or session.state != "running":
            if session.state == "stopped" and not self._releasing and self._shut_down_stopped(session):
                return None  # the server is shutting it down now (not restarting it)
            self._exit = _exit_status(ended, session.state)
            return self._exit
        if self._expecting_exit:  # the lease holds while the kernel exits: ask its worker
            try:
                return await self._on_worker(_held.status, session.id)
            except SessionLostError as exc:  # the worker is gone, and its kernel with it
                self.log.warning("burstlab: %s", exc)
                return EXIT_LOST
        self._note_activity(session)
        return None

    async def wait(self) -> int | None:
        deadline = time.monotonic() + max(10.0, self.worker_timeout)
        while time.monotonic() < deadline:
            code = await self.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.05)
        self.log.warning("burstlab: kernel %s did not exit within %.0f s", self.kernel_id, self.worker_timeout)
        return None

    async def send_signal(self, signum: int) -> None:
        if self._live():
            await self._on_worker(_held.send_signal, self._session.id, int(signum), False)

    async def kill(self, restart: bool = False) -> None:
        await self._end_kernel(signal.SIGKILL, restart)

    async def terminate(self, restart: bool = False) -> None:
        await self._end_kernel(signal.SIGTERM, restart)

    async def shutdown_requested(self, restart: bool = False) -> None:
        # The manager has sent shutdown_request: the kernel exits with status 0, which the lease
        # tolerates for a few seconds (``_held.RESTART_GRACE_S``) so that a restart keeps it.
        self._expecting_exit = True

    async def cleanup(self, restart: bool = False) -> None:
        if not restart:
            await self._release("shut down from Jupyter")

    def get_shutdown_wait_time(self, recommended: float = 5.0) -> float:
        return recommended

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update(gpu=self.gpu, session_id=self.session_id, notebook=self.notebook)
        return info

    # -- helpers ----------------------------------------------------------------------------------

    def _live(self) -> bool:
        s = self._session
        return s is not None and s.state == "running" and s.lease.ended() is None

    async def _end_kernel(self, signum: int, restart: bool) -> None:
        """Only the kernel process goes; the lease waits a few seconds for ``cleanup``: it releases the
        lease, unless this is a restart, which renews the kernel. (The manager does not always say:
        ``restart_kernel(now=True)`` and a slow exit's SIGTERM reach here with ``restart=False``.)"""
        if not self._live():
            return
        self._expecting_exit = True
        try:
            await self._on_worker(_held.send_signal, self._session.id, int(signum), True)
        except SessionLostError as exc:  # the worker is gone: so is its kernel; cleanup releases the lease
            self.log.warning("burstlab: %s", exc)

    async def _release(self, reason: str) -> None:
        session = self._session
        if session is None:
            return
        self._releasing = True
        if session.state == "running":
            await _blocking(session.stop, reason)
        if self._exit is None:
            self._exit = EXIT_STOPPED

    def _get_workspace(self):
        """The workspace that leases, meters and lists this kernel's GPUs: ``workspace/_provisioner.py``
        binds it (this layer is below the workspace and does not import it)."""
        raise NotImplementedError("use burstlab.workspace._provisioner.BurstlabProvisioner")

    def server_settings(self) -> dict | None:
        """The tornado settings of the Jupyter server this kernel manager belongs to; None outside one."""
        obj = self.parent
        for _ in range(6):
            if obj is None:
                return None
            settings = getattr(getattr(obj, "web_app", None), "settings", None)
            if settings is not None:
                return settings
            obj = getattr(obj, "parent", None)
        return None

    async def _find_worker(self) -> str:
        """The worker running the lease's primary task (the scheduler knows; the slot's address is the fallback)."""
        lease = self._session.lease
        client = self._get_workspace().client
        try:
            address = await asyncio.wait_for(_blocking(client.run_on_scheduler, _where, lease.futures[0].key),
                                             self.worker_timeout)
        except (OSError, TimeoutError, asyncio.TimeoutError) as exc:
            self.log.warning("burstlab: the scheduler did not say where lease %s runs (%s)", lease.id, exc)
            address = ""
        return address or lease.slots[0].address

    async def _on_worker(self, fn, *args):
        """Run ``fn(*args)`` on the lease's worker; a failure to reach it is a SessionLostError."""
        client = self._get_workspace().client
        address = self._worker

        def call():
            return client.run(fn, *args, workers=[address])[address]

        try:
            return await asyncio.wait_for(_blocking(call), self.worker_timeout)
        except (OSError, TimeoutError, asyncio.TimeoutError, KeyError) as exc:
            raise SessionLostError(
                f"The GPU worker {address} of session {self.session_id} did not answer ({type(exc).__name__}: {exc})."
            ) from exc

    def _note_activity(self, session) -> None:
        """Tell burstlab's idle timeout what the server knows: the kernel's last activity (a Jupyter
        server's kernel manager keeps it). A bare kernel manager keeps none: its kernel counts as
        active while the manager polls it."""
        last = getattr(self.parent, "last_activity", None)
        if isinstance(last, datetime):
            if last.tzinfo is None:
                last = last.replace(tzinfo=timezone.utc)
            idle_s = max(0.0, (datetime.now(timezone.utc) - last).total_seconds())
            session.last_active = time.monotonic() - idle_s
            session.busy = getattr(self.parent, "execution_state", "") == "busy"
        else:
            session.last_active = time.monotonic()

    def _forget_failed_start(self) -> None:
        """A start burstlab refused (a budget, no free GPU) must not linger in the server's kernel manager.
        jupyter_client's MultiKernelManager keeps a kernel whose start raised among its pending kernels for good
        (``_add_kernel_when_ready`` logs the error and never drops it); when the server stops, its
        ``shutdown_all`` then asks jupyter_server to shut down a kernel it does not have, which raises a 404 and
        stops the server's cleanup half-way: the server hung on SIGTERM and its extensions never cleaned up."""
        mkm = getattr(self.parent, "parent", None)
        pending = getattr(mkm, "_pending_kernels", None)
        if isinstance(pending, dict) and self.kernel_id:
            pending.pop(self.kernel_id, None)

    def _shut_down_stopped(self, session) -> bool:
        """burstlab stopped the session (panel, budget, idle timeout): ask the server to shut the kernel
        down, as its culler would, instead of letting its restarter take another GPU. True if asked."""
        km = self.parent
        if self._shutting_down_stopped or getattr(km, "shutting_down", False):
            return False
        mkm = getattr(km, "parent", None)
        if mkm is None or not hasattr(mkm, "shutdown_kernel") or self.kernel_id not in mkm:
            return False
        self._shutting_down_stopped = True
        self.log.warning("burstlab: kernel %s ended: the %s session was stopped (%s); shutting it down",
                         self.kernel_id, session.label, session.end_reason)

        async def shut_down():
            try:
                result = mkm.shutdown_kernel(self.kernel_id, now=True)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                self.log.exception("burstlab: shutting down kernel %s failed", self.kernel_id)

        self._shutdown_task = asyncio.ensure_future(shut_down())
        return True


def _http_error(exc: BurstlabError):
    """A Jupyter server answers a kernel start that raised anything but an HTTPError with "Unhandled error" and
    no text; JupyterLab shows an HTTPError's message in its "Error Starting Kernel" dialog. The status is the
    one table's (burstlab.errors.HTTP_STATUS)."""
    from tornado.web import HTTPError

    return HTTPError(http_status(exc), str(exc).replace("%", "%%"), reason=type(exc).__name__)


def _exit_status(ended: dict | None, state: str) -> int:
    """The kernel's own exit status when its lease task saw it; else SIGKILL's for a kernel or host that is
    gone (the host watch noticed first), SIGTERM's for one whose lease was released."""
    if ended and ended.get("returncode") is not None:
        return int(ended["returncode"])
    return EXIT_LOST if state == "lost" else EXIT_STOPPED


__all__ = ["NAME", "GpuKernelProvisioner"]
