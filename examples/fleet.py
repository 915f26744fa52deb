"""A test fleet on one machine: GPU hosts that are really elsewhere, as network namespaces.

Needs root. Builds, on a private bridge ``bl13br`` (10.250.13.0/24)::

    root namespace  10.250.13.1   the notebook side
    sched           10.250.13.2   `dask scheduler` (TLS, port 8786)
    gpuA            10.250.13.11  `burstlab worker tls://10.250.13.2:8786 --declare H100:1`
    gpuB            10.250.13.12  `burstlab worker tls://10.250.13.2:8786 --declare A100:1`

Each host has its own network stack, its own host name (a UTS namespace) and its own BURSTLAB_HOME.
TLS with mutual authentication is configured the Dask way: a CA and certificate made here, given to
every process as ``DASK_DISTRIBUTED__COMM__TLS__…`` variables. Try it::

    sudo python -m burstlab.examples.fleet up      # prints the variables to export in a notebook
    sudo python -m burstlab.examples.fleet down    # removes every namespace, link and process

The test suite's fixture (tests/fleet/conftest.py) uses the same :class:`Fleet`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUBNET = "10.250.13"
BRIDGE = "bl13br"
NOTEBOOK_ADDR = f"{SUBNET}.1"
ADDRS = {"sched": f"{SUBNET}.2", "gpuA": f"{SUBNET}.11", "gpuB": f"{SUBNET}.12"}
DECLARE = {"gpuA": "H100:1", "gpuB": "A100:1"}
PORT = 8786
LOCK = "/run/burstlab-fleet.lock"
STATE = "/run/burstlab-fleet.json"


def _ip(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ip", *args]
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=20)


def veth(name: str) -> str:
    return f"bl13-{name}"  # the root side of a host's link (15 characters at most)


def netns_pids(name: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=20).stdout
    return [int(p) for p in out.split()]


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def wait_for(what: str, check, timeout: float, interval: float = 0.05):
    """Poll ``check()`` until it returns something truthy; raise naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def _port_open(addr: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((addr, port), timeout=0.5):
        return True
    return False


class Fleet:
    """The namespaces, the bridge, the scheduler and the GPU hosts' workers, and their removal."""

    def __init__(self, root: str | None = None, python: str = sys.executable):
        self.root = Path(root or tempfile.mkdtemp(prefix="burstlab-fleet-"))
        self.python = python
        self.procs: dict[str, subprocess.Popen] = {}
        self.scheduler = f"tls://{ADDRS['sched']}:{PORT}"
        self.tls = self.root / "tls"
        self._lock = None

    # -- the network -----------------------------------------------------------------------------

    def build_network(self) -> None:
        self._lock = open(LOCK, "w")
        try:  # one fleet per machine at a time (the addresses are fixed)
            deadline = time.monotonic() + 300
            while True:
                try:
                    fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"another test fleet holds {LOCK} for 300 s") from None
                    time.sleep(0.5)
        except BaseException:
            self._lock.close()
            raise
        self.remove_network()  # leftovers of a run that was killed
        _ip("link", "add", BRIDGE, "type", "bridge")
        _ip("addr", "add", f"{NOTEBOOK_ADDR}/24", "dev", BRIDGE)
        _ip("link", "set", BRIDGE, "up")
        for name, addr in ADDRS.items():
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=20)
            _ip("link", "add", veth(name), "type", "veth", "peer", "name", "eth0", "netns", name)
            _ip("link", "set", veth(name), "master", BRIDGE, "up")
            _ip("addr", "add", f"{addr}/24", "dev", "eth0", ns=name)
            _ip("link", "set", "eth0", "up", ns=name)
            _ip("link", "set", "lo", "up", ns=name)
        Path(STATE).write_text(json.dumps({"root": str(self.root)}))

    @staticmethod
    def remove_network() -> None:
        for name in ADDRS:
            if name in namespaces():
                _kill_all(name)
            # The root side first, at once: a link left to the namespace's own end goes only when the kernel
            # frees the namespace, which it does later, on a work queue.
            _ip("link", "del", veth(name), check=False)
            if name in namespaces():
                subprocess.run(["ip", "netns", "del", name], timeout=20, check=False, capture_output=True)
        _ip("link", "del", BRIDGE, check=False)

    def link(self, name: str, up: bool) -> None:
        """Cut (``up=False``) or restore a host's link to the bridge."""
        _ip("link", "set", veth(name), "up" if up else "down")

    # -- the processes ---------------------------------------------------------------------------

    def env(self, name: str) -> dict[str, str]:
        from burstlab.remote_kernel._tls import dask_env

        env = {k: v for k, v in os.environ.items() if not k.startswith(("BURSTLAB_", "DASK_"))}
        env.update(dask_env(self.tls))
        home = self.root / name
        home.mkdir(mode=0o700, exist_ok=True)
        # Jailed GPU sessions' work dirs (isolate_sessions) under the host's own home, not this machine's
        # /var/lib/burstlab/users: a test host shares this machine's files.
        env.update(BURSTLAB_HOME=str(home), PYTHONUNBUFFERED="1", BURSTLAB_SESSION_WORK_ROOT=str(home / "users"))
        return env

    def _start(self, name: str, hostname: str, argv: list[str], extra_env: dict | None = None,
               key: str | None = None) -> subprocess.Popen:
        key = key or name
        log = open(self.root / f"{key}.log", "ab")
        # `ip netns exec` mounts a fresh /sys without the cgroup hierarchies: mount them again (the session jail
        # makes its cgroups there); a host without them still starts, its jails then say why they cannot.
        mounts = _cgroup_mounts()
        inner = (f"({mounts}) 2>/dev/null; " if mounts else "") + f"hostname {hostname} && exec \"$@\""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", name, "unshare", "--uts", "sh", "-c", inner, "sh", *argv],
            env={**self.env(name), **(extra_env or {})}, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self.procs[key] = proc
        return proc

    def start_scheduler(self, timeout: float = 30.0) -> None:
        self._start("sched", "sched", [self.python, "-m", "distributed.cli.dask_scheduler", "--protocol", "tls",
                                       "--host", ADDRS["sched"], "--port", str(PORT), "--no-dashboard"])
        wait_for("the scheduler in namespace sched", lambda: _port_open(ADDRS["sched"], PORT) or self._died("sched"),
                 timeout)

    def start_worker(self, name: str, declare: str | None = None, hostname: str | None = None,
                     args: list[str] | None = None, key: str | None = None) -> subprocess.Popen:
        """`burstlab worker` in namespace ``name`` (a second one there needs its own ``key``)."""
        return self._start(name, hostname or name, [
            self.python, "-m", "burstlab", "worker", self.scheduler, "--declare", declare or DECLARE[name],
            "--give-up", "120", *(args or [])], key=key)

    def _died(self, name: str) -> bool:
        proc = self.procs.get(name)
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{name} exited ({proc.returncode}): {self.log(name)[-2000:]}")
        return False

    def log(self, name: str) -> str:
        try:
            return (self.root / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""

    def kill(self, name: str) -> list[int]:
        """kill -9 every process in namespace ``name`` (a host that dies)."""
        pids = _kill_all(name)
        for key, proc in list(self.procs.items()):
            if key == name or proc.pid in pids:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
                if proc.poll() is not None:
                    del self.procs[key]
        return pids

    def running(self, key: str) -> bool:
        proc = self.procs.get(key)
        return proc is not None and proc.poll() is None

    def stop(self, key: str) -> None:
        """Stop one process of the fleet (SIGTERM, then SIGKILL)."""
        proc = self.procs.pop(key, None)
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def restore(self) -> None:
        """Bring back whatever a test took away: links up, the scheduler and both GPU hosts running."""
        for name in ADDRS:
            self.link(name, True)
        if not self.running("sched"):
            self.start_scheduler()
        for name in DECLARE:
            if not self.running(name):
                self.start_worker(name)

    def up(self, timeout: float = 60.0) -> "Fleet":
        from burstlab.remote_kernel._tls import make_certificates

        make_certificates(self.tls, "burstlab-test-fleet")
        try:
            self.build_network()
            self.start_scheduler()
            for name in DECLARE:
                self.start_worker(name)
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self.procs.clear()
        self.remove_network()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(STATE)
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def leftovers(self) -> list[str]:
        """What of the fleet is still there (empty after :meth:`down`)."""
        left = [f"namespace {n}" for n in namespaces() & set(ADDRS)]
        links = _ip("-o", "link", "show").stdout
        left += [f"link {ln.split(':')[1].strip()}" for ln in links.splitlines()
                 if ln.split(":")[1].strip().split("@")[0] in {BRIDGE, *map(veth, ADDRS)}]
        mounts = Path("/proc/mounts").read_text()
        left += [f"mount {m.split()[1]}" for m in mounts.splitlines()
                 if any(m.split()[1] == f"/run/netns/{n}" for n in ADDRS)]
        left += [f"process {p.pid}" for p in self.procs.values() if p.poll() is None]
        return left

    def notebook_env(self) -> dict[str, str]:
        """What a notebook on this machine sets to use the fleet."""
        from burstlab.remote_kernel._tls import dask_env

        return {"BURSTLAB_SCHEDULER": self.scheduler, **dask_env(self.tls)}


def _cgroup_mounts() -> str:
    """Shell commands that mount this machine's cgroup hierarchies (v1 or v2) again at the same places."""
    cmds = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            point = left.split()[4]
            fstype, _source, opts = (right.split() + ["", "", ""])[:3]
            if point == "/sys/fs/cgroup" and fstype in ("tmpfs", "cgroup2"):
                cmds.append(f"mount -t {fstype} -o {'mode=755' if fstype == 'tmpfs' else 'rw'} {fstype} /sys/fs/cgroup")
            elif point.startswith("/sys/fs/cgroup/") and fstype in ("cgroup", "cgroup2"):
                keep = ",".join(o for o in opts.split(",") if o not in ("rw", "ro")) or "rw"
                where = shlex.quote(point)
                cmds.append(f"mkdir -p {where} && mount -t {fstype} -o {keep} {fstype} {where}")
    return " && ".join(cmds)


def _kill_all(name: str) -> list[int]:
    pids = netns_pids(name)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        wait_for(f"processes of {name} to exit", lambda: not netns_pids(name), 10)
    return pids


def main(argv: list[str]) -> int:
    if os.geteuid() != 0:
        print("The test fleet needs root (network namespaces).", file=sys.stderr)
        return 2
    if argv[:1] == ["down"]:
        root = json.loads(Path(STATE).read_text())["root"] if Path(STATE).exists() else None
        Fleet.remove_network()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(STATE)
        if root:
            shutil.rmtree(root, ignore_errors=True)
        print("fleet removed")
        return 0
    fleet = Fleet()
    fleet.up()
    # The processes run on after this command exits (own sessions); `down` removes them.
    fleet.procs.clear()
    if fleet._lock is not None:
        fleet._lock.close()
    print("fleet up; in a notebook on this machine set:")
    for k, v in fleet.notebook_env().items():
        print(f"export {k}={v}")
    print(f"logs and homes: {fleet.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
