"""Nothing outlives its owner: the owner record of each sandbox, and the reapers that act on it.

Every sandbox's state dir (``STATE_BASE/<uid>``, root-only) holds ``owner.json``: the creating
process's pid and start time (``/proc/<pid>/stat`` field 22, so a recycled pid is not mistaken for
the owner), the sandbox's cgroup directories, its mounts and its network. Three reapers use it:

* ``destroy(state_dir)`` kills every process in the sandbox's cgroups, removes the cgroups, the
  network namespace and its firewall table, unmounts its tmpfs mounts and removes the dir;
* ``reap_orphans()`` (run once per process, when the first sandbox or pool starts) destroys the
  sandboxes whose owner is gone, whatever killed it (``kill -9`` included);
* the fork server calls ``destroy`` on the sandboxes it spawned when its owner dies (parent-death
  signal or its control pipe closing), so an owner killed with ``kill -9`` leaves nothing behind
  within a second or two even if no burstlab process starts again.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time

from . import _jail
from ._cgroup import kill_cgroup, sweep_stale
from ._jailspec import STATE_BASE

OWNER_FILE = "owner.json"
MOUNTS = ("log", "fs/home", "fs")  # mounts under a state dir, unmounted in this order (fs/home: a session's bind)
_NAME = re.compile(r"\d+(-[0-9a-f]+)?")  # <uid> for a sandbox, <uid>-<hex> for a session kernel (_session)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    if fields[0] in (b"Z", b"X"):  # exited, only waiting to be reaped
        return None
    return int(fields[19])


def owner_id() -> dict:
    pid = os.getpid()
    return {"pid": pid, "start": start_time(pid)}


def owner_alive(rec: dict) -> bool:
    pid = rec.get("pid")
    return isinstance(pid, int) and pid > 0 and start_time(pid) == rec.get("start")


def read_record(state_dir: str) -> dict | None:
    try:
        with open(os.path.join(state_dir, OWNER_FILE), "rb") as f:
            rec = json.loads(f.read() or b"null")
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def write_record(state_dir: str, rec: dict) -> None:
    """Replace the owner record atomically (the state dir is root's; the sandbox cannot see it)."""
    tmp = os.path.join(state_dir, OWNER_FILE + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, json.dumps(rec).encode())
    finally:
        os.close(fd)
    os.replace(tmp, os.path.join(state_dir, OWNER_FILE))


def _rmdir(d: str, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.rmdir(d)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)


def mounts_under(state_dir: str) -> list[str]:
    prefix = state_dir.rstrip("/") + "/"
    with open("/proc/self/mounts") as f:
        return [m for m in (line.split()[1] for line in f) if m.startswith(prefix)]


def unmount_all(state_dir: str) -> bool:
    """Unmount everything under ``state_dir``; whether nothing is mounted there any more."""
    for name in MOUNTS:
        path = os.path.join(state_dir, name)
        if os.path.ismount(path):
            try:
                _jail.umount(path, _jail.MNT_DETACH)
            except OSError:
                pass
    return not mounts_under(state_dir)


def destroy(state_dir: str, rec: dict | None = None) -> None:
    """Kill and remove everything one sandbox left: processes, cgroups, network, mounts, the dir."""
    rec = rec if rec is not None else (read_record(state_dir) or {})
    cgroups = [d for d in rec.get("cgroups", []) if isinstance(d, str)]
    kill_cgroup(cgroups)
    for d in sorted(set(cgroups), reverse=True):
        _rmdir(d)
    if rec.get("net"):
        from ._net import teardown

        teardown(rec["net"])
        rec = dict(rec, net=None)  # released: never tear it down twice (the slot may be someone else's next)
        if os.path.isdir(state_dir):
            write_record(state_dir, rec)
    if unmount_all(state_dir):  # never walk into a mount (a session's persistent work dir is one)
        shutil.rmtree(state_dir, ignore_errors=True)


def reap_orphans() -> list[str]:
    """Destroy every sandbox whose owner process is gone; returns their state dirs."""
    try:
        names = os.listdir(STATE_BASE)
    except OSError:
        return []
    reaped = []
    for n in names:
        if not _NAME.fullmatch(n):
            continue
        path = os.path.join(STATE_BASE, n)
        rec = read_record(path)
        if rec is None:
            # no record: a claim in progress (young) or one from before records existed (old)
            try:
                if time.time() - os.stat(path).st_mtime < 60:
                    continue
            except OSError:
                continue
            rec = {}
        elif owner_alive(rec):
            continue
        destroy(path, rec)
        reaped.append(path)

    sweep_stale()
    return reaped


_reaped_once = False


def reap_once() -> None:
    """``reap_orphans`` the first time a process starts a sandbox or a pool."""
    global _reaped_once
    if not _reaped_once:
        _reaped_once = True
        reap_orphans()




# -- the idle reaper -------------------------------------------------------------------------------
_idle: dict = {}  # event loop -> (WeakSet of sandboxes it watches, its watcher task, its wake-up event)


def watch_idle(sb) -> None:
    """Close ``sb`` once it has run nothing for ``sb.idle_timeout`` seconds (one watcher task per loop)."""
    import asyncio
    import weakref

    loop = asyncio.get_running_loop()
    watched, task, wake = _idle.get(loop, (None, None, None))
    if watched is None:
        watched, wake = weakref.WeakSet(), asyncio.Event()
    watched.add(sb)
    if task is None or task.done():
        task = loop.create_task(_idle_loop(watched, wake))
    _idle[loop] = (watched, task, wake)
    wake.set()  # re-plan: this sandbox may have a shorter timeout than the watcher sleeps for


async def _idle_loop(watched, wake) -> None:
    import asyncio

    while len(watched):
        wake.clear()
        now = time.monotonic()
        step = 30.0
        for sb in list(watched):
            if sb._closed or sb.idle_timeout is None:
                watched.discard(sb)
                continue
            left = sb.last_active + sb.idle_timeout - now
            if sb._busy:
                step = min(step, sb.idle_timeout)
            elif left <= 0:
                watched.discard(sb)
                why = f" (it ran nothing for {sb.idle_timeout:g} s, its sandbox_idle_timeout)"
                asyncio.ensure_future(sb._idle_pause(why) if getattr(sb, "idle_action", "close") == "pause"
                                      else sb.aclose(why=why))
            else:
                step = min(step, left)
        sb = None
        try:
            await asyncio.wait_for(wake.wait(), max(step, 0.05))
        except asyncio.TimeoutError:
            pass


__all__ = ["STATE_BASE", "destroy", "kill_cgroup", "owner_alive", "owner_id", "read_record", "reap_once",
           "reap_orphans", "start_time", "watch_idle", "write_record"]
