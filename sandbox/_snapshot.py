"""Snapshots of a sandbox, restores and forks.

The whole-process snapshot the issue asks for is CRIU's; where CRIU cannot run (``criu check`` fails: on this
project's VMs its vDSO detection fails on the 6.x kernel), ``snapshot()`` raises a SandboxError quoting CRIU's own
message and naming the weaker snapshot, which is taken only when asked: ``snapshot(mode="namespace")``.

A namespace snapshot is one tar, ``state.tar``, and ``meta.json``, under
``$BURSTLAB_HOME/snapshots/<user>/<id>/`` (dirs 0700, files 0600, root's):

- the kernel's user variables, pickled inside the sandbox with cloudpickle (lambdas, classes and functions defined
  in the notebook, numpy arrays; modules by reference, so they are imported again), as the tar's first member
  ``.burstlab-restore.pkl``. Each variable is tried alone first: those that cannot be pickled (a generator, an open
  file, a lock, a socket) are left out and named, with the reason, in ``Snapshot.not_captured``; the rest are
  pickled together, so objects shared between variables stay shared;
- the work dir, read from the host side without following anything the sandbox made (``os.fwalk`` with
  ``O_NOFOLLOW`` opens; symlinks are stored as links, FIFOs and sockets skipped);
- the limits and network policy, in ``meta.json``.

``restore`` starts a new sandbox with those limits (or takes one from a pool), unpacks the tar into its work dir
before any user code has run there (never through a symlink, never outside it, owned by the sandbox's uid), and
loads the variables in its kernel; nothing of a snapshot is ever unpickled outside a sandbox.
Sizes: a snapshot above ``BURSTLAB_SNAPSHOT_MAX`` (default 2 GiB) or a user's snapshots above
``BURSTLAB_SNAPSHOT_QUOTA`` (default 10 GiB) are refused with a SandboxLimitError; delete old ones.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from burstlab.errors import NotFoundError, SandboxError, SandboxLimitError

from ._limits import Limits, format_size, parse_size

PICKLE_NAME = ".burstlab-restore.pkl"
_ID = re.compile(r"^snap-[0-9a-f]{16}$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@+-]{0,127}$")

_CAPTURE = r'''
def _burstlab_capture(path):
    import cloudpickle, json
    ip = get_ipython()
    skip = set(ip.user_ns_hidden) | {"In", "Out", "get_ipython", "exit", "quit"}
    kept, missed = {}, {}
    class Null:  # the trial pickles write nowhere: no copy of a large array is made, and little time spent
        def write(self, b):
            return memoryview(b).nbytes
    for name, value in list(ip.user_ns.items()):
        if name.startswith("_") or name in skip:
            continue
        try:
            cloudpickle.CloudPickler(Null(), protocol=5).dump(value)
        except Exception as exc:
            missed[name] = f"{type(value).__name__}: {type(exc).__name__}: {exc}"[:300]
        else:
            kept[name] = value
    with open(path, "wb") as f:
        cloudpickle.dump(kept, f, protocol=5)
    print(json.dumps({"captured": sorted(kept), "not_captured": missed}))
try:
    _burstlab_capture(%r)
finally:
    del _burstlab_capture
'''

_RESTORE = r'''
def _burstlab_restore(path):
    import cloudpickle, os, sys
    if os.path.isdir("/home/user/.packages") and "/home/user/.packages" not in sys.path:
        sys.path.insert(0, "/home/user/.packages")  # a template's packages (sandbox/_templates.py)
    with open(path, "rb") as f:
        ns = cloudpickle.load(f)
    os.remove(path)
    get_ipython().user_ns.update(ns)
try:
    _burstlab_restore(%r)
finally:
    del _burstlab_restore
'''


def snapshot_root() -> Path:
    home = os.environ.get("BURSTLAB_HOME") or str(Path.home() / ".local" / "share" / "burstlab")
    return Path(home) / "snapshots"


def _user_dir(user: str) -> Path:
    if not isinstance(user, str) or not _USER.match(user):
        raise SandboxError(f"user={user!r} cannot own snapshots (letters, digits and _.@+- only).")
    return snapshot_root() / user


def _default_user() -> str:
    return os.environ.get("USER") or "root"


def _limit(name: str, default: str) -> int:
    return parse_size(os.environ.get(name) or default, name)


@dataclass(frozen=True)
class Snapshot:
    """A stored snapshot: ``Sandbox.restore(snap)`` starts a sandbox in its state. ``not_captured`` maps each
    variable left out to why it could not be pickled."""

    id: str
    user: str
    created: float
    mode: str
    size_bytes: int
    captured: tuple[str, ...] = ()
    not_captured: dict[str, str] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    network: Any = False

    @property
    def path(self) -> Path:
        return _user_dir(self.user) / self.id

    def to_dict(self) -> dict:
        d = asdict(self)
        d["captured"] = list(self.captured)
        return d

    def delete(self) -> None:
        delete_snapshot(self.id, user=self.user)


def load(snap_id: str, user: str) -> Snapshot:
    """``user``'s snapshot ``snap_id``; another user's id is not found, exactly as an unknown one."""
    if not isinstance(snap_id, str) or not _ID.match(snap_id):
        raise NotFoundError(f"{snap_id!r} is not a snapshot id (snap- and 16 hex digits); list_snapshots() lists them.")
    path = _user_dir(user) / snap_id / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        raise NotFoundError(f"No snapshot {snap_id!r} of {user!r}'s; list_snapshots() lists them.") from None
    meta["captured"] = tuple(meta.get("captured", ()))
    return Snapshot(**meta)


def list_snapshots(user: str | None = None) -> list[Snapshot]:
    """``user``'s snapshots (default: this process's user), oldest first."""
    d = _user_dir(user or _default_user())
    out = []
    for name in sorted(os.listdir(d)) if d.is_dir() else ():
        try:
            out.append(load(name, d.name))
        except NotFoundError:
            continue
    return sorted(out, key=lambda s: s.created)


def delete_snapshot(snap_id: str, user: str | None = None) -> None:
    snap = load(snap_id, user or _default_user())
    shutil.rmtree(snap.path)


# -- CRIU ------------------------------------------------------------------------------------------
_criu: str | None = None


def criu_unavailable() -> str:
    """Why CRIU cannot snapshot sandboxes here (its own words), or "" if ``criu check`` passes."""
    global _criu
    if _criu is None:
        exe = shutil.which("criu")
        if exe is None:
            _criu = "CRIU is not installed (apt-get install criu)"
        else:
            try:
                p = subprocess.run([exe, "check"], capture_output=True, text=True, timeout=30)
                _criu = "" if p.returncode == 0 and "Error" not in p.stdout + p.stderr else (
                    "`criu check` fails here: " + " | ".join((p.stdout + p.stderr).strip().splitlines()[-4:]))
            except (OSError, subprocess.TimeoutExpired) as exc:
                _criu = f"`criu check` could not run: {exc}"
    return _criu


# -- taking one ------------------------------------------------------------------------------------
def _add_workdir(tar: tarfile.TarFile, home: str, uid: int, budget: list[int], skipped: list[str]) -> None:
    """Add the work dir's entries to ``tar`` without following anything the sandbox made."""
    for dirpath, dirnames, filenames, dfd in os.fwalk(home, follow_symlinks=False):
        rel = os.path.relpath(dirpath, home)
        for name in sorted(dirnames) + sorted(filenames):
            arc = os.path.normpath(os.path.join(rel, name))
            if arc == PICKLE_NAME:
                continue
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            ti = tarfile.TarInfo(arc)
            ti.mode, ti.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
            if stat.S_ISDIR(st.st_mode):
                ti.type = tarfile.DIRTYPE
                tar.addfile(ti)
            elif stat.S_ISLNK(st.st_mode):
                ti.type, ti.linkname = tarfile.SYMTYPE, os.readlink(name, dir_fd=dfd)
                tar.addfile(ti)
            elif stat.S_ISREG(st.st_mode):
                try:
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
                except OSError:
                    skipped.append(arc)
                    continue
                with os.fdopen(fd, "rb") as f:
                    st = os.fstat(fd)
                    if not stat.S_ISREG(st.st_mode):
                        skipped.append(arc)
                        continue
                    budget[0] -= st.st_size
                    if budget[0] < 0:
                        raise SandboxLimitError("The snapshot passed BURSTLAB_SNAPSHOT_MAX; make the work dir smaller.")
                    ti.size = st.st_size
                    tar.addfile(ti, f)
            else:
                skipped.append(arc)


def _take_pickle(home: str, uid: int) -> int:
    """The pickle the kernel wrote in its work dir: an fd on it, checked to be the sandbox's regular file."""
    hfd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd = os.open(PICKLE_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=hfd)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
            os.close(fd)
            raise SandboxError("The sandbox's namespace pickle is not its own regular file; snapshot again.")
        os.unlink(PICKLE_NAME, dir_fd=hfd)
        return fd
    finally:
        os.close(hfd)


async def asnapshot(sb, mode: str | None = None) -> Snapshot:
    if mode in (None, "criu"):
        why = await asyncio.get_running_loop().run_in_executor(None, criu_unavailable)
        raise SandboxError(
            (f"This sandbox cannot be snapshotted whole (its processes' memory): {why.rstrip('.')}." if why else
             "CRIU works here, but burstlab's CRIU snapshots are not built yet.") +
            " A weaker snapshot keeps the kernel's picklable variables (cloudpickle; the others are listed by name), "
            "the work dir and the limits: ask for it with sb.snapshot(mode=\"namespace\").")
    if mode != "namespace":
        raise SandboxError(f"snapshot(mode={mode!r}): give mode=\"namespace\" (or none, for CRIU).")
    await sb.astart()
    ex = await sb.arun(_CAPTURE % ("/home/user/" + PICKLE_NAME), timeout=max(sb.limits.timeout, 60.0))
    if ex.error is not None:
        full = "File too large" in ex.error.evalue or "No space left" in ex.error.evalue
        raise SandboxError(f"Could not capture the sandbox's variables: {ex.error.ename}: {ex.error.evalue}" + (
            f". They are pickled into the work dir first, which holds {format_size(sb.limits.work_size)}: create the "
            "sandbox with a larger work_size (e.g. Sandbox(work_size=\"2GiB\")), or hold less in variables."
            if full else ""))
    try:
        found = json.loads(ex.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise SandboxError(f"Could not capture the sandbox's variables (it printed {ex.stdout[-300:]!r}).") from None
    user = sb.user or _default_user()
    udir = _user_dir(user)
    snap_id = "snap-" + secrets.token_hex(8)
    loop = asyncio.get_running_loop()

    def write() -> int:
        os.makedirs(udir.parent, mode=0o700, exist_ok=True)
        os.makedirs(udir, mode=0o700, exist_ok=True)
        d = udir / snap_id
        os.mkdir(d, 0o700)
        budget = [_limit("BURSTLAB_SNAPSHOT_MAX", "2GiB")]
        skipped: list[str] = []
        try:
            home = os.path.join(sb.state_dir, "fs", "home")
            pfd = _take_pickle(home, sb.uid)
            fd = os.open(d / "state.tar", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
                with os.fdopen(pfd, "rb") as pf:
                    size = os.fstat(pfd).st_size
                    budget[0] -= size
                    ti = tarfile.TarInfo(PICKLE_NAME)
                    ti.size, ti.mode, ti.mtime = size, 0o600, int(time.time())
                    tar.addfile(ti, pf)
                _add_workdir(tar, home, sb.uid, budget, skipped)
            size = os.path.getsize(d / "state.tar")
            if budget[0] < 0:
                raise SandboxLimitError("The snapshot passed BURSTLAB_SNAPSHOT_MAX; hold less in variables.")
            quota = _limit("BURSTLAB_SNAPSHOT_QUOTA", "10GiB")
            used = sum(f.stat().st_size for f in udir.glob("snap-*/state.tar"))
            if used > quota:
                raise SandboxLimitError(f"{user}'s snapshots would take {format_size(used)}, above "
                                        f"BURSTLAB_SNAPSHOT_QUOTA ({format_size(quota)}); delete old ones "
                                        "(list_snapshots(), delete_snapshot(id)).")
            not_captured = dict(found["not_captured"])
            not_captured.update({p: "work dir entry that is not a file, dir or symlink" for p in skipped})
            meta = Snapshot(id=snap_id, user=user, created=time.time(), mode="namespace", size_bytes=size,
                            captured=tuple(found["captured"]), not_captured=not_captured,
                            limits=asdict(sb.limits), network=sb.network).to_dict()
            fd = os.open(d / "meta.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(meta, f)
            return size
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise

    await loop.run_in_executor(None, write)
    return load(snap_id, user)


def _unpack(tar_path: str, home: str, uid: int) -> None:
    """Unpack a snapshot's tar into a sandbox's work dir that no user code has touched yet (a fresh sandbox, or
    one straight from a pool): the tar is burstlab's own (root-only, written by ``asnapshot``), and nothing is
    ever written through a symlink it holds, or outside ``home``."""
    links: set[str] = set()
    with tarfile.open(tar_path, "r:") as tar:
        for m in tar:
            name = os.path.normpath(m.name)
            parts = name.split("/")
            if name.startswith("/") or ".." in parts or name == ".":
                raise SandboxError(f"Snapshot entry {m.name!r} is outside the work dir; the snapshot is damaged.")
            if any("/".join(parts[:i]) in links for i in range(1, len(parts))):
                raise SandboxError(f"Snapshot entry {m.name!r} is under a symlink; the snapshot is damaged.")
            dest = os.path.join(home, name)
            if m.isdir():
                os.makedirs(dest, exist_ok=True)
                os.chmod(dest, m.mode & 0o7777 | 0o700)
                os.chown(dest, uid, uid)
            elif m.issym():
                os.symlink(m.linkname, dest)
                os.lchown(dest, uid, uid)
                links.add(name)
            elif m.isreg():
                src = tar.extractfile(m)
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                    os.fchmod(fd, m.mode & 0o7777)
                    os.fchown(fd, uid, uid)


async def arestore(cls, snap: "Snapshot | str", user: str | None = None, pool: Any = None, **kwargs: Any):
    """A new, started sandbox (of class ``cls``) in ``snap``'s state; from ``pool`` when it serves the snapshot's
    network and fixed sizes."""
    if isinstance(snap, Snapshot):
        snap = load(snap.id, user or snap.user)
    else:
        snap = load(snap, user or _default_user())
    return await arestore_from(cls, snap.path / "state.tar", snap.limits, snap.network, snap.user, pool,
                               f"snapshot {snap.id}", **kwargs)


async def arestore_from(cls, tar: Path, limits: dict, network: Any, user: str, pool: Any, what: str, **kwargs: Any):
    """A new, started sandbox with ``limits``, its work dir and variables from the state tar ``tar``."""
    kwargs.setdefault("network", network)
    lim = Limits(**limits)
    sb = None
    if pool is not None and pool.network == network:
        sb = await pool.aacquire(timeout=lim.timeout, memory=lim.memory, pids=lim.pids, cpus=lim.cpus,
                                 meter=kwargs.get("meter"), user=user, notebook=kwargs.get("notebook", ""))
        if sb.limits != lim:  # its sizes are fixed at start, and differ: a new one instead
            await sb.aclose()
            sb = None
    if sb is None:
        sb = cls(timeout=lim.timeout, memory=lim.memory, limits=lim, user=user, **kwargs)
    try:
        await sb.astart()
        await aload_state(sb, tar, what)
    except BaseException:
        await sb.aclose()
        raise
    return sb


async def aload_state(sb, tar: Path, what: str) -> None:
    """Put the state tar ``tar`` into the started sandbox ``sb``, which no user code has touched yet: its work dir,
    then its variables (a template's pool readies its sandboxes this way)."""
    await asyncio.get_running_loop().run_in_executor(
        None, _unpack, str(tar), os.path.join(sb.state_dir, "fs", "home"), sb.uid)
    ex = await sb.arun(_RESTORE % ("/home/user/" + PICKLE_NAME), timeout=max(sb.limits.timeout, 60.0))
    if ex.error is not None:
        raise SandboxError(f"Could not load {what}'s variables: {ex.error.ename}: {ex.error.evalue}")


def drop(snap: Snapshot) -> None:
    shutil.rmtree(snap.path, ignore_errors=True)


async def apause(sb) -> None:
    """Snapshot ``sb`` (namespace mode) and stop everything it runs; ``resume_locked`` brings it back."""
    if sb._closed:
        raise SandboxError(f"This sandbox is closed{sb._closed_why}; create a new Sandbox().")
    if sb._paused is not None or sb._kernel is None:
        return
    snap = await asnapshot(sb, "namespace")
    async with sb._get_lock():
        if sb._closed or sb._kernel is None:
            drop(snap)
            return
        if sb._meter_id is not None and sb.meter is not None:
            sb.meter.stop(sb._meter_id, detail={"usage": sb.usage(), "paused": True})
            sb._meter_id = None
        await sb._teardown()
        sb._paused = snap


async def resume_locked(sb) -> None:
    """(The sandbox's lock held.) Start ``sb`` afresh and put its paused state back."""
    snap, sb._paused = sb._paused, None
    try:
        await sb._start_locked()
        await asyncio.get_running_loop().run_in_executor(
            None, _unpack, str(snap.path / "state.tar"), os.path.join(sb.state_dir, "fs", "home"), sb.uid)
        ex = await sb._run_locked(_RESTORE % ("/home/user/" + PICKLE_NAME), max(sb.limits.timeout, 60.0), None)
        if ex.error is not None:
            raise SandboxError(f"Could not load the paused sandbox's variables: {ex.error.ename}: {ex.error.evalue}")
    except BaseException:
        if sb._kernel is not None or sb._cgroup is not None:
            await sb._teardown()
        sb._paused = snap  # still paused: the next use tries again
        raise
    drop(snap)
    if sb.paused_why:  # its lifetime paused it: say so ahead of the next run's output, and count a new lifetime
        sb._notice = f"[burstlab: this sandbox was paused{sb.paused_why}; it was resumed for this run]\n"
        sb.paused_why = ""
        if sb.lifetime is not None:
            sb._deadline = time.monotonic() + sb.lifetime


async def afork(sb, n: int, mode: str | None = "namespace", pool: Any = None) -> list:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 64:
        raise SandboxError(f"fork(n={n!r}): n is a number of copies from 1 to 64.")
    snap = await asnapshot(sb, mode)
    try:
        got = await asyncio.gather(*(arestore(type(sb), snap, pool=pool, meter=sb.meter, notebook=sb.notebook)
                                     for _ in range(n)), return_exceptions=True)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, snap.path, True)
    failed = [g for g in got if isinstance(g, BaseException)]
    if failed:
        await asyncio.gather(*(g.aclose() for g in got if not isinstance(g, BaseException)))
        raise failed[0]
    return list(got)


__all__ = ["Snapshot", "criu_unavailable", "delete_snapshot", "list_snapshots", "load", "snapshot_root"]
