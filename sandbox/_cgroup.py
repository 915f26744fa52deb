"""One cgroup per sandbox: memory (swap included), pids and CPU limits, counters, and kill-all.

Works on cgroup v2 (unified) and on v1 / hybrid hosts (this dev VM mounts the v1 memory, pids,
cpu and cpuacct controllers). The sandbox's processes join by writing their pid into
``procs_files`` before they drop privileges. Creating cgroups needs root, or a delegated v2
subtree; where neither is there, ``Cgroup.create`` raises an error that names the fix.
"""

from __future__ import annotations

import os
import signal
import time

from burstlab.errors import SandboxError

from ._limits import Limits

_CONTROLLERS_V1 = ("memory", "pids", "cpu", "cpuacct")
_FIX = (
    "Run the supervising process as root, or delegate a cgroup v2 subtree to this user "
    "(e.g. `systemd-run --user --scope -p Delegate=yes python …`), so the sandbox can enforce its memory, "
    "pids and CPU limits."
)


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, options) of every cgroup file system."""
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                out.append((parts[1], parts[2], set(parts[3].split(","))))
    return out


def _own_paths() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path."""
    out: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            hid, ctrls, path = line.rstrip("\n").split(":", 2)
            for c in ctrls.split(",") if ctrls else [""]:
                out[c] = path
    return out


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _keyed(text: str, key: str) -> int:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return 0


def detect() -> tuple[int, dict[str, str]]:
    """(version, {controller: directory under which burstlab creates its cgroups})."""
    mounts = _mounts()
    own = _own_paths()
    v1 = {}
    for point, fstype, opts in mounts:
        if fstype != "cgroup":
            continue
        for c in _CONTROLLERS_V1:
            if c in opts and c not in v1:
                v1[c] = os.path.join(point, own.get(c, "/").lstrip("/"), "burstlab")
    if all(c in v1 for c in ("memory", "pids", "cpu")):
        v1.setdefault("cpuacct", v1["cpu"])
        return 1, v1
    for point, fstype, _ in mounts:
        if fstype == "cgroup2" and os.path.exists(os.path.join(point, "cgroup.controllers")):
            ctrls = set(_read(os.path.join(point, "cgroup.controllers")).split())
            if {"memory", "pids", "cpu"} <= ctrls:
                return 2, {"": os.path.join(point, "burstlab")}
    raise SandboxError(
        "No usable cgroup hierarchy with the memory, pids and cpu controllers was found in /proc/self/mounts. "
        + _FIX
    )


class Cgroup:
    """The cgroup(s) of one sandbox."""

    def __init__(self, version: int, dirs: dict[str, str]) -> None:
        self.version = version
        self.dirs = dirs  # controller -> directory ("" for v2)

    # -- creation ---------------------------------------------------------------------------
    @classmethod
    def create(cls, name: str, limits: Limits) -> "Cgroup":
        version, bases = detect()
        dirs: dict[str, str] = {}
        try:
            if version == 2:
                base = bases[""]
                root = os.path.dirname(base)
                _enable_v2(root)
                os.makedirs(base, exist_ok=True)
                _enable_v2(base)
                dirs[""] = os.path.join(base, name)
                os.mkdir(dirs[""])
            else:
                for c, base in bases.items():
                    os.makedirs(base, exist_ok=True)
                    d = os.path.join(base, name)
                    if d not in dirs.values():
                        os.mkdir(d)
                    dirs[c] = d
        except OSError as exc:
            for d in dirs.values():
                _rmdir(d)
            raise SandboxError(f"Cannot create the sandbox's cgroup ({exc.strerror}: {exc.filename}). " + _FIX) from exc
        cg = cls(version, dirs)
        try:
            cg._apply(limits)
        except OSError as exc:
            cg.destroy()
            raise SandboxError(f"Cannot set the sandbox's cgroup limits ({exc.strerror}: {exc.filename}). " + _FIX) from exc
        return cg

    def _apply(self, lim: Limits) -> None:
        period = 100_000
        quota = max(1000, int(lim.cpus * period))
        if self.version == 2:
            d = self.dirs[""]
            _write(f"{d}/memory.max", str(lim.memory))
            if os.path.exists(f"{d}/memory.swap.max"):
                _write(f"{d}/memory.swap.max", "0")
            _write(f"{d}/pids.max", str(lim.pids))
            _write(f"{d}/cpu.max", f"{quota} {period}")
            return
        m = self.dirs["memory"]
        files = [f"{m}/memory.limit_in_bytes", f"{m}/memory.memsw.limit_in_bytes"]
        if not os.path.exists(files[1]):
            files.pop()
        elif lim.memory > int(_read(files[0]) or 0):  # raising a live sandbox's: memory + swap must never be below memory
            files.reverse()
        for path in files:
            _write(path, str(lim.memory))
        _write(f"{self.dirs['pids']}/pids.max", str(lim.pids))
        _write(f"{self.dirs['cpu']}/cpu.cfs_period_us", str(period))
        _write(f"{self.dirs['cpu']}/cpu.cfs_quota_us", str(quota))

    @property
    def procs_files(self) -> list[str]:
        """The files a process writes its pid into to join (every controller)."""
        return sorted({os.path.join(d, "cgroup.procs") for d in self.dirs.values()})

    # -- counters -----------------------------------------------------------------------------
    def _mem_dir(self) -> str:
        return self.dirs.get("memory") or self.dirs[""]

    def _pids_dir(self) -> str:
        return self.dirs.get("pids") or self.dirs[""]

    def oom_kills(self) -> int:
        if self.version == 2:
            return _keyed(_read(f"{self.dirs['']}/memory.events"), "oom_kill")
        return _keyed(_read(f"{self.dirs['memory']}/memory.oom_control"), "oom_kill")

    def pids_max_events(self) -> int:
        return _keyed(_read(f"{self._pids_dir()}/pids.events"), "max")

    def pids(self) -> list[int]:
        return [int(p) for p in _read(f"{self._pids_dir()}/cgroup.procs").split()]

    def memory_bytes(self) -> int:
        name = "memory.current" if self.version == 2 else "memory.usage_in_bytes"
        txt = _read(f"{self._mem_dir()}/{name}").strip()
        return int(txt) if txt else 0

    def memory_peak(self) -> int:
        name = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        txt = _read(f"{self._mem_dir()}/{name}").strip()
        return int(txt) if txt else 0

    def cpu_seconds(self) -> float:
        if self.version == 2:
            return _keyed(_read(f"{self.dirs['']}/cpu.stat"), "usage_usec") / 1e6
        txt = _read(f"{self.dirs['cpuacct']}/cpuacct.usage").strip()
        return int(txt) / 1e9 if txt else 0.0

    # -- teardown -----------------------------------------------------------------------------
    def kill_all(self, timeout: float = 5.0, spare: int | None = None) -> None:
        """SIGKILL every process in the cgroup but ``spare`` and wait until only it is left.

        The sandbox's outer process is spared: it is the parent of the namespace's pid 1 and must
        live to reap it, or pid 1 would be re-parented to the host's init as a zombie.
        """
        kill_cgroup([self._pids_dir()], timeout, spare)

    def destroy(self) -> None:
        self.kill_all()
        for d in sorted(set(self.dirs.values()), reverse=True):
            _rmdir(d)


def _enable_v2(d: str) -> None:
    want = {"memory", "pids", "cpu"}
    have = set(_read(f"{d}/cgroup.subtree_control").split())
    if not want <= have:
        _write(f"{d}/cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(want - have)))


def _rmdir(d: str) -> None:
    for _ in range(50):
        try:
            os.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)


def kill_cgroup(dirs: list[str], timeout: float = 5.0, spare: int | None = None) -> None:
    """SIGKILL every process in these cgroup dirs but ``spare`` until none is left (or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    while True:
        pids: set[int] = set()
        for d in dirs:
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    pids.update(int(p) for p in f.read().split())
            except OSError:
                continue
        pids.discard(spare)
        if not pids or time.monotonic() > deadline:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)


def sweep_stale() -> None:
    """Kill what is left in cgroups of supervisors that died (names start with ``<pid>-``) and remove them."""
    try:
        _, bases = detect()
    except SandboxError:
        return
    for base in set(bases.values()):
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for n in names:
            pid = n.split("-", 1)[0]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                kill_cgroup([os.path.join(base, n)], timeout=2.0)
                try:
                    os.rmdir(os.path.join(base, n))
                except OSError:
                    pass


__all__ = ["Cgroup", "detect", "sweep_stale"]
