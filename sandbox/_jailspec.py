"""What a sandbox may see: the jail spec, built from plain data (no I/O beyond looking at paths).

``jail_spec`` returns the JSON-ready dict that ``_jail.enter`` acts on. Keeping it pure makes the
filesystem view and the environment reviewable in one place, and testable without processes.
"""

from __future__ import annotations

import os
import sys
import tempfile

from ._limits import Limits

STATE_BASE = os.path.join(tempfile.gettempdir(), "burstlab-sandboxes")  # root-only state dirs, one per sandbox
WORK_DIR = "/home/user"  # the sandbox's writable work dir, and $HOME
RUN_DIR = "/run/burstlab"  # the kernel's connection file and ipc sockets
HOSTNAME = "sandbox"

# Top-level system directories bound read-only (or re-created as symlinks on merged-/usr systems).
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The few files of the host's /etc a Python process needs; nothing with secrets or host identity.
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives",
              "/etc/mime.types", "/etc/matplotlibrc", "/etc/fonts")
_ETC_NETWORK = ("/etc/resolv.conf", "/etc/ssl", "/etc/ca-certificates", "/etc/nsswitch.conf", "/etc/host.conf",
                "/etc/gai.conf", "/etc/protocols", "/etc/services")


def python_dirs() -> list[str]:
    """Directories the interpreter and its packages live in (read-only inside)."""
    dirs = []
    for p in (sys.base_prefix, sys.prefix, os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))):
        p = os.path.realpath(p)
        if p.startswith("/usr/") or p == "/usr" or p in dirs:
            continue
        dirs.append(p)
    return dirs


# What the jail sets itself: a sandbox's env= and secrets= may not move these.
OWN_ENV = frozenset({"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR", "SHELL", "IPYTHONDIR",
                     "MPLCONFIGDIR", "MPLBACKEND", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV", "BURSTLAB_SANDBOX"})
# Read by the interpreter or the loader as the kernel starts (PYTHONHOME, PYTHONMALLOC, PYTHONWARNINGS=error,
# LD_PRELOAD...): a wrong value stops the kernel from starting at all. These few are harmless and asked for.
_STARTUP_PREFIXES = ("PYTHON", "LD_")
_STARTUP_ALLOWED = frozenset({"PYTHONHASHSEED", "PYTHONUNBUFFERED", "PYTHONPATH", "PYTHONIOENCODING"})


def refused_env(name: str) -> str:
    """Why a sandbox's env= or secrets= may not name ``name`` ("" when it may)."""
    if name in OWN_ENV:
        return "is set by the sandbox itself"
    if name.startswith(_STARTUP_PREFIXES) and name not in _STARTUP_ALLOWED:
        return "is read as the kernel starts and could stop it from starting"
    return ""


def scrubbed_env(network: bool, gpu_env: dict[str, str] | None = None) -> dict[str, str]:
    """The kernel's whole environment: nothing of the host's is passed through."""
    bins = [os.path.join(sys.prefix, "bin")] if sys.prefix != sys.base_prefix else []
    env = {
        "PATH": ":".join(bins + ["/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": WORK_DIR,
        "USER": "user",
        "LOGNAME": "user",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TMPDIR": "/tmp",
        "SHELL": "/bin/sh",
        "IPYTHONDIR": "/tmp/.ipython",
        "MPLCONFIGDIR": "/tmp/.matplotlib",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYTHONDONTWRITEBYTECODE": "1",
        "BURSTLAB_SANDBOX": "1",
    }
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    env.update(gpu_env or {})
    return env


def _passwd() -> str:
    return "root:x:0:0::/root:/usr/sbin/nologin\nuser:x:1000:1000::/home/user:/bin/sh\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n"


def _group() -> str:
    return "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"


def jail_spec(
    *, uid: int, gid: int, limits: Limits, network: bool, state_dir: str, cgroup_procs: list[str],
    devices: list[str] | None = None, gpu_env: dict[str, str] | None = None, netns: str | None = None,
    user_env: dict[str, str] | None = None,
) -> dict:
    """Everything ``_jail.enter`` needs, as plain JSON-ready data. ``user_env`` (the sandbox's checked env= and
    secrets=) goes over the jail's own variables, none of which it may name (``OWN_ENV``)."""
    ro_binds: list[tuple[str, str]] = []
    symlinks: list[tuple[str, str]] = []
    for d in _SYSTEM_DIRS:
        if os.path.islink(d):
            symlinks.append((os.readlink(d), d))
        elif os.path.isdir(d):
            ro_binds.append((d, d))
    for d in python_dirs():
        ro_binds.append((d, d))
    for f in _ETC_FILES + (_ETC_NETWORK if network else ()):
        if os.path.exists(f):
            ro_binds.append((f, f))
    files = [("/etc/passwd", _passwd()), ("/etc/group", _group()), ("/etc/hostname", HOSTNAME + "\n")]
    if not network or not os.path.exists("/etc/hosts"):
        files.append(("/etc/hosts", f"127.0.0.1 localhost {HOSTNAME}\n::1 localhost\n"))
    else:
        ro_binds.append(("/etc/hosts", "/etc/hosts"))
    fs = os.path.join(state_dir, "fs")
    return {
        "uid": uid,
        "gid": gid,
        "network": network,
        "netns": netns,  # the namespace _net wired for a network policy; None: a new, empty one
        "state_dir": state_dir,
        "hostname": HOSTNAME,
        "root_dir": os.path.join(state_dir, "root"),
        "ro_binds": ro_binds,
        "rw_binds": [(os.path.join(fs, "home"), WORK_DIR), (os.path.join(fs, "run"), RUN_DIR)],
        "symlinks": symlinks,
        "files": files,
        "devices": list(devices or []),
        "tmp_size": limits.tmp_size,
        "shm_size": min(limits.tmp_size, 64 * 1024**2),
        "cgroup_procs": cgroup_procs,
        "rlimits": {
            "RLIMIT_NOFILE": (limits.open_files, limits.open_files),
            "RLIMIT_CORE": (0, 0),
            "RLIMIT_FSIZE": (limits.work_size, limits.work_size),
            "RLIMIT_NPROC": (limits.pids, limits.pids),
        },
        "env": {**scrubbed_env(network, gpu_env), **(user_env or {})},
        "cwd": WORK_DIR,
        "connection_file": os.path.join(RUN_DIR, "kernel.json"),
        "output_limit": limits.output,
    }


__all__ = ["HOSTNAME", "OWN_ENV", "RUN_DIR", "WORK_DIR", "jail_spec", "python_dirs", "refused_env", "scrubbed_env"]
