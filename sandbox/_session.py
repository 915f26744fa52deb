"""A GPU session's kernel inside the same jail as a sandbox (issue 12, item 1), for the remote-kernel layer.

``start_session_kernel(user=..., devices=[...], env={...})`` returns a started :class:`SessionKernel`: a
:class:`~burstlab.sandbox.Sandbox` (same namespaces, cgroup limits, seccomp, no_new_privs, scrubbed
environment, output caps, lifetime rules and network policy) with three differences:

* it runs as its **user's own host uid** (2,000,000-2,999,999, stable across that user's sessions on
  this host), not a fresh uid per sandbox;
* its work dir (``/home/user`` inside) is the user's **persistent** dir ``<work_root>/<user>`` (bound,
  not a tmpfs: files stay across sessions; its size is the host file system's, not ``work_size``);
* it sees exactly the **device nodes** it is given (e.g. a leased GPU's ``/dev/nvidia<N>``,
  ``/dev/nvidiactl``, ``/dev/nvidia-uvm``; character devices only) and the **environment** it is
  given on top of the scrubbed one (e.g. ``CUDA_VISIBLE_DEVICES``); nothing of the service's (tokens,
  certificates, connection files) is visible or inherited.

The CUDA user-space libraries are visible when they live under the read-only system or Python dirs
(``/usr``, the venv: pip's nvidia-* wheels). Running it on a GPU host, and carrying its kernel messages
to the notebook, is the remote-kernel layer's part.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import stat
from typing import Any

from burstlab._sync import run_sync
from burstlab.errors import SandboxError

from . import _reaper
from ._jailspec import RUN_DIR, python_dirs
from ._sandbox import STATE_BASE, Sandbox

USER_UID_BASE, USER_UID_SPAN = 2_000_000, 1_000_000
DEFAULT_WORK_ROOT = "/var/lib/burstlab/users"
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")
_FORBIDDEN_DEVICES = ("/dev/mem", "/dev/kmem", "/dev/port", "/dev/kmsg")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# What a GPU session's kernel imports of burstlab itself (the variables comm, the environment check): visible
# read-only when burstlab is not installed under the Python dirs the jail already binds (an editable install).
_OWN_PACKAGES = ("burstlab", "burstlab.remote_kernel")


def work_name(user: str) -> str:
    """``user`` as a work dir name: itself when it is one (letters, digits, _.@-), else a stable digest of it."""
    if isinstance(user, str) and _USER.fullmatch(user) and user not in (".", ".."):
        return user
    return "u-" + hashlib.sha256(str(user).encode("utf-8", "surrogatepass")).hexdigest()[:24]


def package_dirs() -> list[str]:
    """burstlab's own package dirs that are outside the jail's Python dirs (bound read-only in a session jail)."""
    inside = [os.path.realpath(p) for p in python_dirs()]
    out: list[str] = []
    for name in _OWN_PACKAGES:
        spec = importlib.util.find_spec(name)
        for d in (spec.submodule_search_locations or []) if spec else []:
            d = os.path.realpath(d)
            if not any(d == p or d.startswith(p + "/") for p in inside) and d not in out:
                out.append(d)
    return out


def check_devices(devices: Any) -> list[str]:
    """Absolute paths of existing character devices (no symlinks), refusing the host's memory ones."""
    if isinstance(devices, str) or not isinstance(devices, (list, tuple)):
        raise SandboxError(f"devices={devices!r}: give a list of device node paths, e.g. [\"/dev/nvidia0\", "
                           "\"/dev/nvidiactl\", \"/dev/nvidia-uvm\"] (or [] for none).")
    out = []
    for d in devices:
        if not isinstance(d, str) or not d.startswith("/dev/") or "/../" in d or d in _FORBIDDEN_DEVICES:
            raise SandboxError(f"device {d!r}: give a character device under /dev, e.g. \"/dev/nvidia0\".")
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            raise SandboxError(f"device {d} does not exist on this host (is the GPU driver loaded? a declared GPU "
                               "has no device nodes: start the session without devices).") from None
        if not stat.S_ISCHR(st.st_mode):
            raise SandboxError(f"device {d} is not a character device (a symlink, block device or file); refused.")
        if d not in out:
            out.append(d)
    return out


def _check_env(env: Any) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, dict) or not all(isinstance(k, str) and _ENV_NAME.fullmatch(k) and isinstance(v, str)
                                            and "\x00" not in v for k, v in env.items()):
        raise SandboxError(f"env={env!r}: give a dict of variable names to str values, e.g. "
                           "{\"CUDA_VISIBLE_DEVICES\": \"GPU-...\"}.")
    return dict(env)


def user_work_dir(user: str, work_root: str = DEFAULT_WORK_ROOT) -> tuple[str, int]:
    """``(<work_root>/<user>, the user's host uid)``, made on first use: the dir's owner is the user's uid."""
    if not isinstance(user, str) or not _USER.fullmatch(user) or user in (".", ".."):
        raise SandboxError(f"user={user!r}: a session kernel needs a user name of letters, digits and _.@- "
                           "(at most 64), e.g. user=\"alice\".")
    os.makedirs(work_root, mode=0o711, exist_ok=True)
    path = os.path.join(work_root, user)
    for _ in range(100):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISDIR(st.st_mode) or not USER_UID_BASE <= st.st_uid < USER_UID_BASE + USER_UID_SPAN:
                raise SandboxError(f"{path} exists but is not a work dir burstlab made (a dir owned by a uid in "
                                   f"{USER_UID_BASE}-{USER_UID_BASE + USER_UID_SPAN - 1}); move it away.")
            return path, st.st_uid
        taken = set()
        for n in os.listdir(work_root):
            try:
                taken.add(os.lstat(os.path.join(work_root, n)).st_uid)
            except OSError:
                pass
        uid = USER_UID_BASE + int.from_bytes(os.urandom(4), "little") % USER_UID_SPAN
        if uid in taken:
            continue
        tmp = os.path.join(work_root, f".{user}.{os.getpid()}.{uid}")
        os.mkdir(tmp, 0o700)
        os.chown(tmp, uid, uid)
        try:
            os.rename(tmp, path)  # atomic; if another process made it first, theirs wins
        except OSError:
            os.rmdir(tmp)
    raise SandboxError(f"Could not make a work dir for {user!r} under {work_root}.")


class SessionKernel(Sandbox):
    """A jailed kernel for one user's GPU session; see the module doc. Same API as ``Sandbox``."""

    def __init__(self, *, user: str, devices: Any = (), env: dict[str, str] | None = None,
                 work_root: str = DEFAULT_WORK_ROOT, sandbox_idle_timeout: float | None = None, **kwargs: Any) -> None:
        if kwargs.get("gpu"):
            raise SandboxError("SessionKernel takes devices= (the leased GPU's nodes), not gpu=.")
        kwargs.setdefault("meter", None)  # billed as its GPU session, not as a sandbox
        super().__init__(user=user, sandbox_idle_timeout=sandbox_idle_timeout, **kwargs)
        self.work_dir, self.user_uid = user_work_dir(user, work_root)
        self._devices = check_devices(devices)
        self._gpu_env = _check_env(env)

    def _claim(self) -> tuple[str, int, dict]:
        os.makedirs(STATE_BASE, mode=0o711, exist_ok=True)
        _reaper.reap_once()
        uid = self.user_uid
        for _ in range(100):
            path = os.path.join(STATE_BASE, f"{uid}-{os.urandom(4).hex()}")
            try:
                os.mkdir(path, 0o711)
            except FileExistsError:
                continue
            rec = dict(_reaper.owner_id(), uid=uid, cgroups=[], net=None, session=True)
            _reaper.write_record(path, rec)
            return path, uid, rec
        raise SandboxError(f"Could not claim a state dir under {STATE_BASE}.")

    def _adjust_spec(self, spec: dict) -> None:
        spec["ro_binds"] += [(d, d) for d in package_dirs()]
        spec["shm_size"] = self.limits.tmp_size  # data loaders share tensors through /dev/shm (a sandbox's: 64 MiB)

    def ipc_connection(self) -> dict:
        """Where the running kernel's ipc sockets are on this host (``<base>-1`` .. ``-5``: shell, iopub, stdin,
        control, hb) and its message key, for a forwarder that carries them to the notebook (remote_kernel)."""
        k = self._kernel
        if k is None or self.state_dir is None:
            raise SandboxError("This session kernel is not running; start it first.")
        conn = k.client.conn
        return {"base": os.path.join(self.state_dir, "fs", "run", os.path.basename(conn["ip"])),
                "key": conn["key"], "signature_scheme": conn["signature_scheme"], "inside": RUN_DIR}

    def exit_status(self) -> int | None:
        """The kernel's exit status (as its jail's outermost process reports it), or None while it runs; a
        closed session kernel reports SIGKILL's 137 unless it had exited before."""
        k = self._kernel
        if k is None:
            return 137 if self._closed else None
        return k.exited.result() if k.exited.done() else None

    def _prepare_home(self, home: str) -> None:
        from . import _jail

        fd = os.open(self.work_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if os.fstat(fd).st_uid != self.uid:
                raise SandboxError(f"{self.work_dir} changed owner; refused.")
            _jail.mount(f"/proc/self/fd/{fd}", home, None, _jail.MS_BIND)  # that very dir, not a swapped-in link
        finally:
            os.close(fd)
        _jail.mount(None, home, None, _jail.MS_BIND | _jail.MS_REMOUNT | _jail.MS_NOSUID | _jail.MS_NODEV)


async def astart_session_kernel(*, user: str, devices: Any = (), env: dict[str, str] | None = None,
                                work_root: str = DEFAULT_WORK_ROOT, **kwargs: Any) -> SessionKernel:
    """Start a jailed session kernel for ``user`` (on burstlab's loop, or any running loop)."""
    k = SessionKernel(user=user, devices=devices, env=env, work_root=work_root, **kwargs)
    await k.astart()
    return k


def start_session_kernel(*, user: str, devices: Any = (), env: dict[str, str] | None = None,
                         work_root: str = DEFAULT_WORK_ROOT, **kwargs: Any) -> SessionKernel:
    """Blocking twin of :func:`astart_session_kernel`."""
    return run_sync(astart_session_kernel(user=user, devices=devices, env=env, work_root=work_root, **kwargs))


__all__ = ["DEFAULT_WORK_ROOT", "SessionKernel", "astart_session_kernel", "check_devices", "package_dirs",
           "start_session_kernel", "user_work_dir", "work_name"]
