"""A session kernel served over TCP: a GPU session's kernel in the jail, for a notebook on another machine.

The jail has a network namespace of its own, so its kernel's five sockets are ipc files in its run dir.
:class:`Forwarder` carries them to five TCP ports on the host's kernel address, in one thread, opening each
ipc socket ``O_PATH | O_NOFOLLOW`` and checked to be the jail's own (``_client.open_socket``: a symlink the
kernel swaps in is never followed). Messages pass unchanged (the HMAC signature is end to end); given a Curve
key pair the TCP side is a Curve server (the remote-kernel layer makes the pair, as for its pool kernels).

:func:`start_served_kernel` is what a GPU lease calls on its host when its workspace asks for the session jail
(the remote-kernel layer gets it from the workspace: ``remote_kernel/_jailed.py``). :class:`ServedKernel` has a
pool kernel's interface (``connection_info``, ``pid``, ``proc.poll()``, ``alive``, ``run``, ``kill``,
``log_tail``), so the lease treats both alike. Its ``pid`` is the jail's outermost process, whose process group
holds the jail's pid 1: a SIGTERM or SIGKILL there ends the whole jail.
"""

from __future__ import annotations

import os
import threading
import uuid

import zmq

from burstlab._kernel_call import run_setup

from ._client import open_socket
from ._gpu import lease_devices
from ._session import DEFAULT_WORK_ROOT, SessionKernel, start_session_kernel, work_name

WORK_ROOT_ENV = "BURSTLAB_SESSION_WORK_ROOT"  # a GPU host's root of users' work dirs (its worker's environment)
GiB = 1024**3


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 16 * GiB


def session_limits() -> dict:
    """A GPU session's kernel is not a sandbox for agents' snippets: the host's memory and cores, room for data
    loaders' processes and large files; output is capped per cell at the notebook's collector's cap (16 MiB)."""
    return {"timeout": 120, "memory": _host_memory(), "cpus": float(os.cpu_count() or 1), "pids": 8192,
            "output": 16 * 1024**2, "work_size": 1024 * GiB, "tmp_size": 4 * GiB}


def start_served_kernel(*, ip: str, user: str, gpu_type: str, indices: list[int], declared: bool,
                        env: dict[str, str], keys: dict[str, str] | None = None,
                        work_root: str | None = None) -> tuple["ServedKernel", str]:
    """A jailed kernel for ``user`` holding exactly the GPUs ``indices`` of ``gpu_type`` (declared ones have no
    device nodes), served on ``ip``; and a line saying how it is isolated. ``work_root``: where users' work dirs
    are (default: ``BURSTLAB_SESSION_WORK_ROOT`` in this process's environment, else /var/lib/burstlab/users)."""
    cuda_visible = ",".join(str(i) for i in indices)
    devices, gpu_env, note = lease_devices(declared, gpu_type, indices, cuda_visible)
    kernel = ServedKernel(ip, user, devices, {**env, **gpu_env}, keys or {}, work_root)
    detail = f"session jail: uid {kernel.sandbox.uid}, work dir {kernel.sandbox.work_dir}, {note}"
    return kernel, detail


class _Proc:
    """``subprocess.Popen``'s ``poll``/``returncode`` for the jail's outermost process."""

    def __init__(self, kernel: "ServedKernel"):
        self._kernel = kernel

    def poll(self) -> int | None:
        return self._kernel.returncode()

    @property
    def returncode(self) -> int | None:
        return self._kernel.returncode()


class ServedKernel:
    """One session kernel in the jail, reachable over TCP through a :class:`Forwarder` (see the module doc)."""

    def __init__(self, ip: str, user: str, devices: list[str], env: dict[str, str], keys: dict[str, str],
                 work_root: str | None = None):
        work_root = work_root or os.environ.get(WORK_ROOT_ENV) or DEFAULT_WORK_ROOT
        self.sandbox: SessionKernel = start_session_kernel(user=work_name(user), devices=devices, env=env,
                                                           work_root=work_root, **session_limits())
        self.proc = _Proc(self)
        try:
            ipc = self.sandbox.ipc_connection()
            self.forwarder = Forwarder(ip, ipc["base"], self.sandbox.uid, keys)
            self.connection_info = {
                "transport": "tcp", "ip": ip, "key": ipc["key"], "signature_scheme": ipc["signature_scheme"],
                "kernel_name": "python3", **self.forwarder.ports, **self.forwarder.keys,
            }
        except BaseException:
            self.sandbox.close()
            raise

    @property
    def pid(self) -> int:
        return self.sandbox.kernel_pid or 0

    def returncode(self) -> int | None:
        return self.sandbox.exit_status()

    def alive(self) -> bool:
        return self.returncode() is None

    def run(self, code: str, timeout: float = 60.0) -> None:
        """Execute ``code`` silently (no execution count, no output) through the forwarder, as the notebook will."""
        from jupyter_client import BlockingKernelClient

        kc = BlockingKernelClient()
        if self.forwarder.keys:  # a Curve client of the forwarder (the remote-kernel layer's field names)
            public, secret = (self.forwarder.keys[k].encode("ascii") for k in ("curve_publickey", "curve_secretkey"))
            for option, value in ((zmq.CURVE_SERVERKEY, public), (zmq.CURVE_PUBLICKEY, public),
                                  (zmq.CURVE_SECRETKEY, secret)):
                kc.context.setsockopt(option, value)
        kc.load_connection_info(self.connection_info)
        kc.start_channels(iopub=False, stdin=False, hb=False)
        try:
            run_setup(kc, code, timeout, self.alive, self.log_tail, "the jailed kernel")
        finally:
            kc.stop_channels()
            kc.context.term()

    def log_tail(self, n: int = 2000) -> str:
        return self.sandbox.log(n)

    def drop_files(self) -> None:
        """The connection file lives in the jail's own run dir (its key is the kernel's own): nothing to drop."""

    def kill(self, grace: float = 1.0) -> None:
        """Stop the forwarder and the jail: every process in its cgroup, its mounts, cgroups and state dir."""
        self.forwarder.close()
        self.sandbox.close()


# (channel, ipc port number, the TCP side's socket type, the ipc side's): the kernel's shell, stdin and
# control are ROUTERs, so a ROUTER/DEALER pair carries the client's identity through (the kernel replies
# to [our identity, the client's]); all DEALERs share one identity, since ipykernel sends an input_request
# on stdin to the identity of the shell request. iopub is XPUB/XSUB (subscriptions go upstream;
# XPUB_VERBOSE, so every client's subscription reaches the kernel, which greets each one).
CHANNELS = (("shell_port", 1, zmq.ROUTER, zmq.DEALER), ("iopub_port", 2, zmq.XPUB, zmq.XSUB),
            ("stdin_port", 3, zmq.ROUTER, zmq.DEALER), ("control_port", 4, zmq.ROUTER, zmq.DEALER),
            ("hb_port", 5, zmq.ROUTER, zmq.DEALER))


class Forwarder:
    """Five TCP ports on ``ip`` <-> the jail's ipc sockets ``<base>-1`` .. ``<base>-5``: one libzmq proxy per
    channel, each on a thread of its own that runs in C without the GIL (the Dask worker's own threads and loop
    never slow a message down), stopped through a control socket."""

    def __init__(self, ip: str, base: str, owner_uid: int, keys: dict[str, str] | None = None):
        self.keys = dict(keys or {})
        self.ports: dict[str, int] = {}
        self._ctx = zmq.Context()
        self._fds: list[int] = []
        self._sockets: list[zmq.Socket] = []
        self._controls: list[zmq.Socket] = []
        self._threads: list[threading.Thread] = []
        identity = b"burstlab-fwd-" + uuid.uuid4().hex.encode()
        try:
            for name, number, front_type, back_type in CHANNELS:
                front = self._socket(front_type)
                if self.keys:
                    front.setsockopt(zmq.CURVE_SERVER, 1)
                    front.setsockopt(zmq.CURVE_SECRETKEY, self.keys["curve_secretkey"].encode("ascii"))
                if front_type == zmq.XPUB:
                    front.setsockopt(zmq.XPUB_VERBOSE, 1)
                self.ports[name] = front.bind_to_random_port(f"tcp://{ip}")
                back = self._socket(back_type)
                if back_type == zmq.DEALER:
                    back.setsockopt(zmq.IDENTITY, identity)
                fd = open_socket(f"{base}-{number}", owner_uid)
                self._fds.append(fd)
                back.connect(f"ipc:///proc/self/fd/{fd}")  # that very socket file, reconnects included
                if back_type == zmq.XSUB:  # everything, from now on: a cell sent right after a client connects
                    back.send(b"\x01")  # must not publish before that client's subscription got here
                address = f"inproc://{identity.decode()}-{number}"
                control, steer = self._socket(zmq.PAIR), self._socket(zmq.PAIR)
                steer.bind(address)
                control.connect(address)
                self._controls.append(control)
                self._threads.append(threading.Thread(target=_proxy, args=(front, back, steer), daemon=True,
                                                      name=f"burstlab-jail-{name.split('_')[0]}"))
        except BaseException:
            self._close_sockets()
            raise
        for t in self._threads:
            t.start()

    def _socket(self, kind: int) -> zmq.Socket:
        s = self._ctx.socket(kind)
        s.setsockopt(zmq.LINGER, 0)
        self._sockets.append(s)
        return s

    def close(self) -> None:
        """Stop the proxies, close every socket and the pinned descriptors (idempotent)."""
        for control in self._controls:
            try:
                control.send(b"TERMINATE")
            except zmq.ZMQError:
                pass
        for t in self._threads:
            if t.is_alive():
                t.join(5)
        self._threads = []
        self._close_sockets()

    def _close_sockets(self) -> None:
        for s in self._sockets:
            s.close(0)
        self._sockets, self._controls = [], []
        if not self._ctx.closed:
            self._ctx.term()
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def _proxy(front: zmq.Socket, back: zmq.Socket, control: zmq.Socket) -> None:
    try:
        zmq.proxy_steerable(front, back, None, control)
    except zmq.ZMQError:  # its context ended under it (the process ends)
        pass


__all__ = ["CHANNELS", "Forwarder", "ServedKernel", "WORK_ROOT_ENV", "session_limits", "start_served_kernel"]
