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
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from burstlab._sync import run_sync
from burstlab.errors import SandboxError

from . import _snapshot
from ._limits import make_limits


def templates_root() -> Path:
    return _snapshot.snapshot_root().parent / "templates"


class SandboxTemplate:
    """An environment built once and cached by content (see the module's doc)."""

    def __init__(self, *, files: dict[str, bytes | str] | None = None, packages: list[str] | tuple = (),
                 wheels: str | None = None, setup: str = "", timeout: float = 300, memory: int | str = "1GiB") -> None:
        self.files = {k: v.encode() if isinstance(v, str) else bytes(v) for k, v in (files or {}).items()}
        self.packages = [str(p) for p in packages]
        self.wheels = wheels
        self.setup = setup
        self.limits = make_limits(timeout=timeout, memory=memory)
        if wheels is not None and not os.path.isdir(wheels):
            raise SandboxError(f"wheels={wheels!r} is not a directory of .whl files.")
        h = hashlib.sha256()
        for part in (json.dumps(sorted(self.files)), setup, json.dumps(self.packages), sys.version,
                     json.dumps(asdict(self.limits), sort_keys=True)):
            h.update(part.encode() + b"\0")
        for name in sorted(self.files):
            h.update(self.files[name])
        for whl in self._wheel_files():
            h.update(whl.name.encode())
            h.update(whl.read_bytes())
        self.id = "tpl-" + h.hexdigest()[:24]
        self._pool = None
        self.builds = 0  # builds this object ran (0 when the cache had it)

    def _wheel_files(self) -> list[Path]:
        return sorted(Path(self.wheels).glob("*.whl")) if self.wheels else []

    @property
    def path(self) -> Path:
        return templates_root() / self.id

    @property
    def built(self) -> bool:
        return (self.path / "meta.json").is_file()

    def build(self) -> "SandboxTemplate":
        run_sync(self.abuild())
        return self

    async def abuild(self) -> "SandboxTemplate":
        if self.built:
            return self
        from ._sandbox import Sandbox

        async with Sandbox(timeout=self.limits.timeout, memory=self.limits.memory, meter=None,
                           sandbox_idle_timeout=None) as sb:
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
                mod = pkg.split("==")[0].split(">")[0].split("<")[0].strip().replace("-", "_")
                ex = await sb.arun(f"import {mod}")
                if ex.error is not None:
                    raise SandboxError(f"Template {self.id}: package {pkg!r} is not importable in the sandbox "
                                       f"({ex.error.ename}: {ex.error.evalue}); give wheels= a directory holding it.")
            if self.setup:
                ex = await sb.arun(self.setup, timeout=self.limits.timeout)
                if ex.error is not None:
                    raise SandboxError(f"Template {self.id}: the set-up cell failed: {ex.error.ename}: {ex.error.evalue}")
            snap = await sb.asnapshot("namespace")
        os.makedirs(templates_root(), mode=0o700, exist_ok=True)
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
        user = kwargs.pop("user", "") or _snapshot._default_user()
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


__all__ = ["SandboxTemplate", "templates_root"]
