"""Kernels on a GPU worker's host: start one, keep a few ready, hand them out.

A pool kernel is a real ipykernel started with the worker's environment (so it already sees only
the worker's GPU). It has answered ``kernel_info`` and run the bootstrap (the variable-transfer comm
target) before it is handed out, so a new session's first cell runs at warm speed. Pool kernels
hold no GPU lease and are not billed; CUDA reads ``CUDA_VISIBLE_DEVICES`` on first use, and the
lease sets it before any user code runs.
"""

from __future__ import annotations

import atexit
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

from distributed.diagnostics.plugin import WorkerPlugin
from jupyter_client import BlockingKernelClient
from jupyter_client.connect import write_connection_file

from burstlab._kernel_call import run_setup

from . import _curve

BOOTSTRAP = "__import__('burstlab.remote_kernel._kernel_side', fromlist=['install']).install()"


_starting_dirs: set[str] = set()  # directories of this process's kernels that have not read their connection file
_starting_lock = threading.Lock()


def remove_kernel_files() -> None:
    """Remove the connection files (and directories) of this process's kernels still starting: at
    exit, at a pool's teardown, and before a worker's process is ended on purpose (a map's cancel).
    A kernel that has started already keeps its key in memory only (:meth:`KernelProcess.drop_files`)."""
    with _starting_lock:
        dirs = list(_starting_dirs)
        _starting_dirs.clear()
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(remove_kernel_files)


class KernelProcess:
    """One ipykernel process on this host, and its connection info."""

    def __init__(self, ip: str, env: dict[str, str] | None = None):
        encrypt = _curve.wanted(ip)  # a kernel whose ports face a network (or every one, if so configured)
        if encrypt:
            _curve.check_support()  # a host that cannot says so (and how to fix it) before starting anything
        self.dir = tempfile.mkdtemp(prefix="burstlab-kernel-")
        with _starting_lock:
            _starting_dirs.add(self.dir)
        conn_file = os.path.join(self.dir, "kernel.json")
        _, info = write_connection_file(conn_file, ip=ip, key=uuid.uuid4().hex.encode(), transport="tcp")
        if encrypt:  # this kernel's own Curve key pair: its five ports speak only to holders of it (_curve.py)
            keys = _curve.new_keys()
            _curve.add_to_connection_file(conn_file, keys)
            info.update(keys)
        self.connection_info = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in info.items()}
        from .secrets import base_environ

        full_env = base_environ()  # the worker's own: never what a map's running chunk set (fanout/_env.py)
        for name in [k for k in full_env if k.startswith("DASK_DISTRIBUTED__COMM__")]:
            del full_env[name]  # users' code never gets the cluster's certificate (the worker has it in memory)
        for name in ("BURSTLAB_TOKEN", "JUPYTER_TOKEN"):  # the service's credentials never reach users' code
            full_env.pop(name, None)
        full_env.update(env or {})
        full_env["JPY_PARENT_PID"] = str(os.getpid())  # the kernel exits if this worker dies
        full_env.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
        self._log = open(os.path.join(self.dir, "kernel.log"), "w+b")  # read back through this handle
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ipykernel_launcher", "-f", conn_file, "--HistoryManager.enabled=False"],
            env=full_env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: interrupts reach it and its children only
            cwd=os.getcwd(),
        )
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, code: str, timeout: float = 60.0) -> None:
        """Execute ``code`` silently and wait for its reply (used for readiness and set-up)."""
        kc = BlockingKernelClient()
        _curve.secure_context(kc.context, self.connection_info)
        kc.load_connection_info(self.connection_info)
        kc.start_channels(iopub=False, stdin=False, hb=False)
        try:
            run_setup(kc, code, timeout, self.alive, self.log_tail, "kernel")
        finally:
            kc.stop_channels()

    def log_tail(self, n: int = 2000) -> str:
        try:  # through the open handle: the file's directory is gone once the kernel is ready
            size = os.fstat(self._log.fileno()).st_size
            return os.pread(self._log.fileno(), n, max(0, size - n)).decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def drop_files(self) -> None:
        """Remove the directory with the connection file (its key) once the kernel has read it (it
        answered), so that no way this kernel or its worker ends (a stop, a killed kernel, a worker
        killed with -9) can leave the key behind. The log stays readable through its open handle."""
        shutil.rmtree(self.dir, ignore_errors=True)
        with _starting_lock:
            _starting_dirs.discard(self.dir)

    def kill(self, grace: float = 1.0) -> None:
        """Stop the kernel and everything it started (its process group), then clean up."""
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(grace)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        if self.alive():
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        self.drop_files()


class KernelPool:
    """Up to ``size`` ready kernels; ``take()`` returns one (starting it cold if none is ready)."""

    def __init__(self, ip: str, size: int = 1, env: dict[str, str] | None = None):
        self.ip = ip
        self.size = size
        self.env = env or {}
        self._ready: collections.deque[KernelProcess] = collections.deque()
        self._lock = threading.Lock()
        self._starting = 0
        self._closed = False

    def _start_ready(self) -> KernelProcess:
        kernel = KernelProcess(self.ip, self.env)
        try:
            kernel.run(BOOTSTRAP)
        except BaseException:
            kernel.kill()
            raise
        kernel.drop_files()  # it answered, so it has read its connection file: the key lives in memory only
        return kernel

    def fill(self) -> None:
        """Start kernels in the background until ``size`` are ready or starting."""
        with self._lock:
            missing = self.size - len(self._ready) - self._starting
            if self._closed or missing <= 0:
                return
            self._starting += missing
        for _ in range(missing):
            threading.Thread(target=self._fill_one, name="burstlab-pool-fill", daemon=True).start()

    def _fill_one(self) -> None:
        try:
            kernel = self._start_ready()
        except Exception:
            kernel = None
        with self._lock:
            self._starting -= 1
            if kernel is not None and not self._closed:
                self._ready.append(kernel)
                kernel = None
        if kernel is not None:
            kernel.kill()

    def take(self) -> tuple[KernelProcess, bool]:
        """A ready kernel and whether it came warm from the pool; refills in the background."""
        kernel = None
        with self._lock:
            while self._ready:
                candidate = self._ready.popleft()
                if candidate.alive():
                    kernel = candidate
                    break
        warm = kernel is not None
        if kernel is None:
            kernel = self._start_ready()
        self.fill()
        return kernel, warm

    def close(self) -> None:
        with self._lock:
            self._closed = True
            kernels = list(self._ready)
            self._ready.clear()
        for kernel in kernels:
            kernel.kill()


_pools: dict[str, KernelPool] = {}
_pools_lock = threading.Lock()


def kernel_ip(worker) -> str:
    """The address this worker's kernels bind: ``BURSTLAB_KERNEL_IP`` if set (``burstlab worker
    --kernel-ip``), else the worker's own, which faces the scheduler and the notebooks (never 0.0.0.0)."""
    return os.environ.get("BURSTLAB_KERNEL_IP") or worker.ip


def worker_pool(ip: str, size: int) -> KernelPool:
    """The pool of this worker process (one per process), created on first use."""
    with _pools_lock:
        pool = _pools.get(ip)
        if pool is None:
            pool = _pools[ip] = KernelPool(ip, size)
        pool.size = size
        return pool


class KernelPoolPlugin(WorkerPlugin):
    """Dask worker plugin: pre-start the pool when a GPU worker starts, close it when it stops."""

    name = "burstlab-kernel-pool"

    def __init__(self, size: int = 1):
        self.size = size

    def setup(self, worker) -> None:
        if self.size > 0 and os.environ.get("BURSTLAB_GPU_TYPE"):  # GPU workers only, not the CPU worker
            worker_pool(kernel_ip(worker), self.size).fill()

    def teardown(self, worker) -> None:
        with _pools_lock:
            pools = list(_pools.values())
            _pools.clear()
        for pool in pools:
            pool.close()
        remove_kernel_files()  # kernels still starting: the process is about to end


__all__ = ["BOOTSTRAP", "KernelPool", "KernelPoolPlugin", "KernelProcess", "kernel_ip", "worker_pool"]
