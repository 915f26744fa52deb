"""Sandbox templates: an environment built once (files, extra packages, a set-up cell), cached by content hash,
and started from a warm pool of its own.

``SandboxTemplate(files={...}, packages=[...], wheels="dir", setup="...")``. ``build()`` looks for
``$BURSTLAB_HOME/templates/<sha256>/`` (the hash covers the files, the set-up cell, the packages, the wheels' bytes,
the limits and the Python version): found, it is instant; otherwise it starts a sandbox, writes the files, installs
the packages from the wheel directory inside the jail (``pip install --no-index --find-links`` into
``/home/user/.packages``, which restored kernels put on ``sys.path``), runs the set-up cell once, and keeps a
namespace snapshot of the result (``_snapshot.py``: what the cell left in picklable variables, and the work dir)
there. Without ``wheels``, each package must already be importable in the sandbox (the notebook's environment is
visible read-only), which the build checks. ``sandbox()`` starts a sandbox in the template's state, from the
template's own ``SandboxPool`` once ``pool(size)`` made one: the pool restores the template's state into each of
its sandboxes while they wait, so taking one is the pool's hand-out alone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from burstlab._sync import run_sync
from burstlab.errors import NotFoundError, SandboxError

from . import _snapshot
from ._limits import make_limits


_ID = re.compile(r"^tpl-[0-9a-f]{24}$")


_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _module_of(pkg: str) -> str:
    """The module a package requirement (``"numpy"``, ``"my-pkg==1.0"``) is imported as."""
    mod = re.split(r"[=<>!~\[; ]", pkg, maxsplit=1)[0].strip().replace("-", "_")
    if not _MODULE.match(mod):
        raise SandboxError(f"packages: {pkg!r} is not a package name (e.g. \"numpy\" or \"my-pkg==1.0\").")
    return mod


def templates_root() -> Path:
    return _snapshot.snapshot_root().parent / "templates"


class SandboxTemplate:
    """An environment built once and cached by content (see the module's doc)."""

    def __init__(self, *, files: dict[str, bytes | str] | None = None, packages: list[str] | tuple = (),
                 wheels: str | None = None, setup: str = "", timeout: float = 300, memory: int | str = "1GiB",
                 user: str | None = None) -> None:
        if user is not None:
            _snapshot._user_dir(user)  # a name that can own files under BURSTLAB_HOME, or a SandboxError
        self.user = user
        self.files = {k: v.encode() if isinstance(v, str) else bytes(v) for k, v in (files or {}).items()}
        self.packages = [str(p) for p in packages]
        for pkg in self.packages:
            _module_of(pkg)  # a name that can be imported, or a SandboxError now
        self.wheels = wheels
        self.setup = setup
        self.limits = make_limits(timeout=timeout, memory=memory)
        if wheels is not None and not os.path.isdir(wheels):
            raise SandboxError(f"wheels={wheels!r} is not a directory of .whl files.")
        h = hashlib.sha256()
        for part in (json.dumps(sorted(self.files)), setup, json.dumps(self.packages), sys.version,
                     json.dumps(asdict(self.limits), sort_keys=True), *(() if user is None else ("user", user))):
            h.update(part.encode() + b"\0")
        for name in sorted(self.files):
            h.update(self.files[name])
        for whl in self._wheel_files():
            h.update(whl.name.encode())
            h.update(whl.read_bytes())
        self.id = "tpl-" + h.hexdigest()[:24]
        self.created = 0.0  # when it was built (from its record once built)
        self._sizes: dict[str, int] | None = None
        self._pool = None
        self.builds = 0  # builds this object ran (0 when the cache had it)

    def _wheel_files(self) -> list[Path]:
        return sorted(Path(self.wheels).glob("*.whl")) if self.wheels else []

    @property
    def path(self) -> Path:
        """Where the build is kept: ``templates/<id>``, or ``templates/<user>/<id>`` for a user's own template."""
        return (templates_root() if self.user is None else templates_root() / self.user) / self.id

    def to_dict(self) -> dict:
        """What a template is, without its files' bytes (the record REST and MCP show)."""
        if not self.created and self.built:  # built before (a cache hit): when, from its record
            try:
                self.created = json.loads((self.path / "template.json").read_text())["created"]
            except (OSError, ValueError, KeyError):
                pass
        files = self._sizes if self._sizes is not None else {k: len(v) for k, v in sorted(self.files.items())}
        return {"id": self.id, "user": self.user or "", "files": files, "packages": list(self.packages),
                "setup": self.setup, "limits": {"timeout": self.limits.timeout, "memory": self.limits.memory},
                "created": self.created}

    @classmethod
    def load(cls, template_id: str, user: str) -> "SandboxTemplate":
        """``user``'s built template ``template_id`` (as ``to_dict`` recorded it); another user's id is not found,
        exactly as an unknown one."""
        if not isinstance(template_id, str) or not _ID.match(template_id):
            raise NotFoundError(f"{template_id!r} is not a template id (tpl- and 24 hex digits).")
        path = templates_root() / user / template_id
        try:
            rec = json.loads((path / "template.json").read_text())
        except (OSError, ValueError):
            raise NotFoundError(f"No template {template_id!r} of {user!r}'s; list_templates() lists them.") from None
        t = cls.__new__(cls)
        t.user, t.id, t.files, t.packages, t.wheels, t.setup = user, template_id, {}, rec["packages"], None, rec["setup"]
        t.limits = make_limits(timeout=rec["limits"]["timeout"], memory=rec["limits"]["memory"])
        t.created, t.builds, t._pool, t._sizes = rec["created"], 0, None, rec["files"]
        return t

    @property
    def built(self) -> bool:
        return (self.path / "meta.json").is_file()

    def build(self) -> "SandboxTemplate":
        run_sync(self.abuild())
        return self

    async def abuild(self, meter: Any = None, notebook: str = "") -> "SandboxTemplate":
        """Build (unless built): ``meter`` (a burstlab.billing.Meter) bills the build's sandbox to the template's
        user and ``notebook``."""
        if self.built:
            return self
        from ._sandbox import Sandbox

        async with Sandbox(timeout=self.limits.timeout, memory=self.limits.memory, meter=meter,
                           user=self.user or "", notebook=notebook, sandbox_idle_timeout=None) as sb:
            for name, data in self.files.items():
                sb.files.write(name, data)
            if self.packages and self.wheels:
                for whl in self._wheel_files():
                    sb.files.write(f".wheels/{whl.name}", whl.read_bytes())
                r = await sb.aexec(["python", "-m", "pip", "install", "--no-index", "--find-links", ".wheels",
                                    "--target", ".packages", "--no-compile", "--disable-pip-version-check",
                                    *self.packages], timeout=self.limits.timeout)
                if not r.ok:
                    raise SandboxError(f"Template {self.id}: pip could not install {self.packages} from {self.wheels}: "
                                       f"{r.error or r.stderr[-1500:]}")
                await sb.aexec(["rm", "-rf", ".wheels"])
                await sb.arun("import sys; sys.path.insert(0, '/home/user/.packages')")
            for pkg in self.packages:
                ex = await sb.arun(f"import {_module_of(pkg)}")
                if ex.error is not None:
                    raise SandboxError(f"Template {self.id}: package {pkg!r} is not importable in the sandbox "
                                       f"({ex.error.ename}: {ex.error.evalue}); give wheels= a directory holding it.")
            if self.setup:
                ex = await sb.arun(self.setup, timeout=self.limits.timeout)
                if ex.error is not None:
                    raise SandboxError(f"Template {self.id}: the set-up cell failed: {ex.error.ename}: {ex.error.evalue}")
            snap = await sb.asnapshot("namespace")
        os.makedirs(templates_root(), mode=0o700, exist_ok=True)
        os.makedirs(self.path.parent, mode=0o700, exist_ok=True)
        self.created = time.time()
        fd = os.open(snap.path / "template.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f)
        try:
            os.rename(snap.path, self.path)  # another build of the same content may have won: keep that one
        except OSError:
            shutil.rmtree(snap.path, ignore_errors=True)
        self.builds += 1
        return self

    def pool(self, size: int = 4):
        """This template's warm pool: sandboxes of its limits, each already in the template's state (its files,
        packages and the set-up cell's variables restored while it waits), filling in the background."""
        from ._pool import SandboxPool

        if self._pool is None:
            lim = self.limits
            self._pool = SandboxPool(size, timeout=lim.timeout, memory=lim.memory, prepare=self._prepare)
            self._pool.start(wait=False)
        return self._pool

    async def apool(self, size: int = 4):
        """``pool(size)`` on burstlab's loop."""
        from ._pool import SandboxPool

        if self._pool is None:
            lim = self.limits
            self._pool = SandboxPool(size, timeout=lim.timeout, memory=lim.memory, prepare=self._prepare)
            await self._pool.astart(wait=False)
        return self._pool

    async def _prepare(self, sb) -> None:
        await self.abuild()
        await _snapshot.aload_state(sb, self.path / "state.tar", f"template {self.id}")

    def sandbox(self, **kwargs: Any):
        """A started sandbox in this template's state (built first if it is not), from its pool if it has one."""
        return run_sync(self.asandbox(**kwargs))

    async def asandbox(self, **kwargs: Any):
        """``meter``, ``user`` and ``notebook`` as for a Sandbox; a sandbox ready in the pool is handed out as it
        is (its state was restored while it waited), otherwise a new one is started and restored."""
        from ._sandbox import Sandbox

        await self.abuild()
        meta = json.loads((self.path / "meta.json").read_text())
        user = kwargs.pop("user", "") or self.user or _snapshot._default_user()
        pool = self._pool
        if pool is not None and pool.ready > 0 and set(kwargs) <= {"meter", "notebook"} and pool.network == meta["network"]:
            lim = self.limits
            sb = await pool.aacquire(timeout=lim.timeout, memory=lim.memory, pids=lim.pids, cpus=lim.cpus,
                                     meter=kwargs.get("meter"), user=user, notebook=kwargs.get("notebook", ""))
            sb.user, sb.notebook = user, kwargs.get("notebook", sb.notebook)
            return sb
        return await _snapshot.arestore_from(Sandbox, self.path / "state.tar", meta["limits"], meta["network"], user,
                                             None, f"template {self.id}", **kwargs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def aclose(self) -> None:
        """Close this template's pool (its build stays cached)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()

    def delete(self) -> None:
        """Remove the build (its pool is closed first); the next ``build()`` builds it again."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)


def list_templates(user: str) -> list[dict]:
    """``user``'s built templates (``to_dict`` records), oldest first."""
    d = templates_root() / user
    _snapshot._user_dir(user)
    out = []
    for name in sorted(os.listdir(d)) if d.is_dir() else ():
        try:
            out.append(SandboxTemplate.load(name, user).to_dict())
        except NotFoundError:
            continue
    return sorted(out, key=lambda r: r["created"])


__all__ = ["SandboxTemplate", "list_templates", "templates_root"]
