"""The notebook's environment follows its code to the GPU host.

Three steps, each a plain function so that both sides (the notebook and the host's kernel) can run them:

1. **Look** (notebook): :func:`imported_distributions` maps the top-level modules the notebook has imported to
   the distributions that provide them, with versions, whether they are pure Python, and whether they are the
   user's own (editable or installed from a local folder); :func:`local_modules` finds the ``.py`` modules
   beside the notebook. burstlab's own platform (burstlab and everything it requires) is left out: the host's
   worker runs its own copy.
2. **Compare** (host, then notebook): :func:`host_versions` runs on the host (inside the session's kernel);
   :func:`compare` and :func:`report` are pure and say what differs, in one table.
3. **Ship** (both): :func:`build_wheel` packs an installed pure distribution, or the sources of a local one,
   into a wheel named by its content hash; :func:`missing` tells which of those the host's cache lacks (a
   second start with the same environment ships nothing); :func:`install` unpacks them into a per-environment
   overlay folder under the host's ``BURSTLAB_HOME`` that the kernel and the map tasks put first on
   ``sys.path``. Compiled distributions are never shipped: the report names the fix.

Nothing here reaches a package index: everything comes from the notebook's own environment.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.metadata as metadata
import io
import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from burstlab.errors import ConfigError

_COMPILED = (".so", ".pyd", ".dylib", ".dll")
MAX_LOCAL = 64 << 20  # bytes of the modules beside the notebook that sync ships as code
_SKIP_PARTS = ("__pycache__",)


def normalise(name: str) -> str:
    """A distribution's canonical name (PEP 503): ``Foo_Bar`` -> ``foo-bar``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Dist:
    """A distribution the notebook imported from."""

    name: str  # canonical
    version: str
    pure: bool  # no compiled files: can be shipped
    local: bool  # editable, or installed from a local folder: its sources are shipped
    modules: tuple[str, ...] = ()  # the top-level modules the notebook imported from it


@dataclass(frozen=True)
class Mismatch:
    """One distribution whose version differs on the host (``there`` is None when the host lacks it)."""

    name: str
    here: str
    there: str | None
    pure: bool
    local: bool = False

    @property
    def shippable(self) -> bool:
        return self.pure or self.local


@dataclass(frozen=True)
class Wheel:
    """A wheel built from the notebook's installed files, named by the hash of its content."""

    name: str
    version: str
    sha256: str
    data: bytes = field(repr=False)

    @property
    def filename(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"


# -- 1. look (notebook side) ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _owners() -> dict[str, list[str]]:
    """Top-level module -> distributions providing it (reading every installed RECORD once per process: ~0.1 s)."""
    return metadata.packages_distributions()


_last: list = [-1, ()]  # (len(sys.modules), what imported_distributions found) at its last look
_unknown: set[str] = set()  # top-level modules no distribution provided when last looked


def _look_again_for(tops: frozenset[str]) -> None:
    """Read the installed distributions again if the notebook imported a module not seen before that none
    of them provided (it may have been installed since)."""
    owners = _owners()
    new = {m for m in tops if m not in owners and m not in _unknown and not m.startswith("_")
           and m not in sys.stdlib_module_names}
    _unknown.update(m for m in new if not _installed_beside(m))  # a script's or a test's own module: no rescan
    new = {m for m in new if m not in _unknown}
    if new:
        _owners.cache_clear()
        _imported.cache_clear()
        owners = _owners()
        _unknown.update(m for m in new if m not in owners)


def _installed_beside(module: str) -> bool:
    """Whether ``module`` was imported from a folder that holds installed distributions (``*.dist-info``)."""
    path = getattr(sys.modules.get(module), "__file__", None)
    if not path:
        return False
    folder = os.path.dirname(os.path.dirname(path)) if os.path.basename(path) == "__init__.py" else os.path.dirname(path)
    try:
        return any(name.endswith(".dist-info") for name in os.listdir(folder))
    except OSError:
        return False


@functools.lru_cache(maxsize=None)
def platform_distributions(root: str = "burstlab") -> frozenset[str]:
    """``root`` and every distribution it requires, transitively (extras left out): the host's own runtime."""
    seen: set[str] = set()
    todo = [root]
    while todo:
        name = normalise(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for req in requires:
            if ";" in req and "extra" in req.split(";", 1)[1]:
                continue
            m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
            if m:
                todo.append(m.group(1))
    return frozenset(seen)


def _is_pure(dist: metadata.Distribution) -> bool:
    wheel = dist.read_text("WHEEL") or ""
    if "Root-Is-Purelib: false" in wheel:
        return False
    return not any(str(f).endswith(_COMPILED) for f in (dist.files or []))


def _is_local(dist: metadata.Distribution) -> bool:
    """An editable install: its files are the user's sources, not the installed RECORD."""
    try:
        direct = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        return False
    return bool(direct.get("dir_info", {}).get("editable"))


def imported_distributions(modules: Mapping[str, object] | None = None,
                           exclude: Iterable[str] | None = None) -> dict[str, Dist]:
    """The distributions providing the top-level modules in ``modules`` (``sys.modules`` by default).

    Cached by the set of top-level modules: a notebook that imported nothing new since its last session start
    pays nothing; a module no known distribution provides makes it read the installed ones again once."""
    if modules is None and exclude is None and _last[0] == len(sys.modules):
        return dict(_last[1])  # nothing was imported since the last look (the common case: a session start)
    fast = modules is None and exclude is None
    modules = sys.modules if modules is None else modules
    tops = frozenset(m.partition(".")[0] for m in list(modules))
    skip = platform_distributions() if exclude is None else frozenset(normalise(n) for n in exclude)
    _look_again_for(tops)
    found = _imported(tops, skip)
    if fast:
        _last[:] = [len(modules), found]
    return dict(found)


@functools.lru_cache(maxsize=64)
def _imported(tops: frozenset[str], skip: frozenset[str]) -> tuple[tuple[str, Dist], ...]:
    owners = _owners()
    found: dict[str, list[str]] = {}
    for module in sorted(tops):
        if module in sys.stdlib_module_names or module.startswith("_"):
            continue
        for dist_name in owners.get(module, ()):
            found.setdefault(normalise(dist_name), []).append(module)
    out: list[tuple[str, Dist]] = []
    for name, mods in sorted(found.items()):
        if name in skip:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        out.append((name, Dist(name, dist.version, _is_pure(dist), _is_local(dist), tuple(sorted(set(mods))))))
    return tuple(out)


def local_modules(root: str | os.PathLike, modules: Mapping[str, object] | None = None) -> dict[str, Path]:
    """Top-level ``.py`` modules and packages imported from ``root`` (the notebook's folder), by name."""
    root = Path(root).resolve()
    modules = sys.modules if modules is None else modules
    installed = _owners()  # a module an installed distribution provides is not "local"
    out: dict[str, Path] = {}
    for name, module in list(modules.items()):
        if "." in name or name == "__main__" or name in installed:
            continue
        path = getattr(module, "__file__", None)
        if not path:
            continue
        path = Path(path).resolve()
        if path.name == "__init__.py":  # a package beside the notebook (not the notebook's own folder)
            if path.parent.parent == root:
                out[name] = path.parent
        elif path.parent == root and path.suffix == ".py":
            out[name] = path
    return dict(sorted(out.items()))


def environment_hash(dists: Mapping[str, Dist], wheels: Iterable[Wheel] = ()) -> str:
    """One hash per environment: what the notebook has, and the content of what it ships."""
    h = hashlib.sha256()
    for d in sorted(dists.values(), key=lambda d: d.name):
        h.update(f"{d.name}=={d.version}\n".encode())
    for w in sorted(wheels, key=lambda w: w.sha256):
        h.update(w.sha256.encode())
    return h.hexdigest()[:16]


# -- 2. compare ------------------------------------------------------------------------------------------------


def host_versions(names: Iterable[str], overlay: str | None = None) -> dict[str, str | None]:
    """On the host: the installed version of each distribution (the overlay's first), or None."""
    paths = ([overlay] if overlay else []) + sys.path
    index: dict[str, str] = {}
    for dist in metadata.distributions(path=paths):  # in path order: the first one found is the one imported
        index.setdefault(normalise(dist.metadata["Name"] or ""), dist.version)
    return {name: index.get(normalise(name)) for name in names}


def compare(here: Mapping[str, Dist], there: Mapping[str, str | None]) -> list[Mismatch]:
    """The distributions whose version on the host differs from the notebook's (local ones always ship)."""
    return [Mismatch(d.name, d.version, there.get(d.name), d.pure, d.local)
            for d in sorted(here.values(), key=lambda d: d.name)
            if d.local or there.get(d.name) != d.version]


def report(mismatches: Iterable[Mismatch], host: str = "the host") -> str:
    """One table: package, here, there, and what burstlab does about it."""
    rows = [(m.name, m.here, m.there or "missing",
             "shipped" if m.shippable else "not shipped: compiled")
            for m in mismatches]
    if not rows:
        return ""
    head = ("package", "here", f"on {host}", "")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head] + rows]
    compiled = [m for m in mismatches if not m.shippable]
    if compiled:
        names = " ".join(f"{m.name}=={m.here}" for m in compiled)
        lines.append(f"Compiled packages are not shipped: install them on {host} (`pip install {names}`), "
                     "or use a host image that has them.")
    return "\n".join(lines)


# -- 3. ship ---------------------------------------------------------------------------------------------------


def _record_line(arcname: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{arcname},sha256={digest},{len(data)}"


def _pack(name: str, version: str, files: list[tuple[str, bytes]]) -> Wheel:
    """A pure wheel of ``files`` (sorted, fixed timestamps: the same content gives the same bytes)."""
    dist_info = f"{name.replace('-', '_')}-{version}.dist-info"
    meta = [(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()),
            (f"{dist_info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: burstlab\nRoot-Is-Purelib: true\nTag: py3-none-any\n")]
    entries = sorted(files) + meta
    record = "\n".join([_record_line(a, d) for a, d in entries] + [f"{dist_info}/RECORD,,", ""]).encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for arcname, data in entries + [(f"{dist_info}/RECORD", record)]:
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    data = buf.getvalue()
    return Wheel(name, version, hashlib.sha256(data).hexdigest(), data)


def _module_sources(module_names: Iterable[str]) -> list[tuple[str, bytes]]:
    files = []
    for name in module_names:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if not path:
            continue
        path = Path(path)
        if path.name == "__init__.py":
            for f in sorted(path.parent.rglob("*")):
                rel = f.relative_to(path.parent).parts
                if f.is_file() and not any(p in _SKIP_PARTS or p.startswith(".") for p in rel) \
                        and not f.suffix == ".pyc":
                    files.append((f"{name}/{f.relative_to(path.parent).as_posix()}", f.read_bytes()))
        elif path.suffix == ".py":
            files.append((path.name, path.read_bytes()))
    return files


def build_wheel(dist: Dist) -> Wheel:
    """A wheel of an installed pure distribution (its RECORD's files), or of a local one's sources."""
    if not (dist.pure or dist.local):
        raise ValueError(f"{dist.name} {dist.version} is compiled: install it on the host instead.")
    if dist.local:  # the user's sources change between starts: pack them each time
        return _pack(dist.name, dist.version, _module_sources(dist.modules))
    return _installed_wheel(dist)


@functools.lru_cache(maxsize=32)  # wheels held in memory: the last 32 built
def _installed_wheel(dist: Dist) -> Wheel:
    installed = metadata.distribution(dist.name)
    files = []
    for f in installed.files or []:
        rel = str(f)
        if rel.startswith("..") or any(p in rel for p in _SKIP_PARTS) or rel.endswith(".pyc") \
                or ".dist-info/" in rel:
            continue
        located = Path(installed.locate_file(f))
        if located.is_file():
            files.append((rel, located.read_bytes()))
    return _pack(dist.name, dist.version, files)


def build_local_wheel(modules: Mapping[str, Path]) -> Wheel | None:
    """The ``.py`` modules beside the notebook, as one wheel (versioned by their content)."""
    if not modules:
        return None
    files = _module_sources(modules)
    size = sum(len(d) for _, d in files)
    if size > MAX_LOCAL:
        raise ConfigError(f"The modules beside the notebook ({', '.join(modules)}) hold {size >> 20} MiB: more than "
                          f"{MAX_LOCAL >> 20} MiB is not shipped as code. Move data out of those packages and send it "
                          "with `%gpu upload`.")
    digest = hashlib.sha256(b"".join(a.encode() + d for a, d in sorted(files))).hexdigest()[:12]
    return _pack("burstlab-local", f"0+{digest}", files)


def env_root(home: str | None = None) -> Path:
    return Path(home or os.environ.get("BURSTLAB_HOME") or Path.home() / ".burstlab") / "envs"


def missing(hashes: Iterable[str], home: str | None = None) -> list[str]:
    """On the host: which wheels (by hash) its cache lacks."""
    cache = env_root(home) / "wheels"
    return [h for h in hashes if not (cache / f"{h}.whl").is_file()]


def install(wheels: Mapping[str, bytes], order: Iterable[str], env_hash: str, home: str | None = None) -> str:
    """On the host: cache ``wheels`` (hash -> bytes, only the missing ones travel), unpack the wheels named in
    ``order`` into the environment's overlay, and return the overlay's path (put it first on ``sys.path``)."""
    root = env_root(home)
    cache = root / "wheels"
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    for sha, data in wheels.items():
        if hashlib.sha256(data).hexdigest() != sha:
            raise ValueError(f"wheel {sha[:12]} arrived damaged")
        tmp = cache / f".{sha}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, cache / f"{sha}.whl")
    overlay = root / f"overlay-{env_hash}"
    if not (overlay / ".complete").exists():  # unpacked aside, then renamed: workers of one host may race
        building = Path(tempfile.mkdtemp(prefix=f".overlay-{env_hash}-", dir=root))
        try:
            for sha in order:
                with zipfile.ZipFile(cache / f"{sha}.whl") as z:
                    for member in z.infolist():
                        target = (building / member.filename).resolve()
                        if not str(target).startswith(str(building.resolve()) + os.sep):
                            raise ValueError(f"wheel {sha[:12]} names a path outside the overlay: {member.filename}")
                        z.extract(member, building)
            (building / ".complete").write_text("\n".join(order))
            if overlay.exists():  # an earlier, unfinished one (its process died): replace it
                shutil.rmtree(overlay, ignore_errors=True)
            try:
                os.rename(building, overlay)
            except OSError:  # another process put it in place first: the same content
                if not (overlay / ".complete").exists():
                    raise
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return str(overlay)


__all__ = [
    "Dist",
    "Mismatch",
    "Wheel",
    "build_local_wheel",
    "build_wheel",
    "compare",
    "environment_hash",
    "host_versions",
    "imported_distributions",
    "install",
    "local_modules",
    "missing",
    "normalise",
    "platform_distributions",
    "report",
]
