"""Sandbox limits: one parser for sizes, one frozen record of every limit, no I/O.

``parse_size`` is the one parser of what a user writes for a size (``"512MiB"``, ``"1G"``,
``"2 GB"``, ``1048576``); it raises an error naming the valid forms.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from burstlab.errors import SandboxError

SIZE_FORMS = 'an int (bytes) or a string like "512MiB", "1GiB", "64M", "2 GB" (K/M/G/T = powers of 1024)'

_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kb": 1000, "kib": 1024,
    "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1024**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1024**4, "tb": 1000**4, "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | str, what: str = "size") -> int:
    """Bytes from ``value``.

    >>> parse_size("512MiB")
    536870912
    >>> parse_size("1G")
    1073741824
    >>> parse_size(4096)
    4096
    """
    if isinstance(value, bool):
        raise SandboxError(f"{what}={value!r} is not a size; give {SIZE_FORMS}.")
    if isinstance(value, int):
        if value <= 0:
            raise SandboxError(f"{what}={value!r} must be positive; give {SIZE_FORMS}.")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m and m.group(2).lower() in _UNITS:
            n = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
            if n > 0:
                return n
    raise SandboxError(f"{what}={value!r} is not a size; give {SIZE_FORMS}.")


def format_size(n: int) -> str:
    """``536870912`` -> ``"512 MiB"``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            v = n / factor
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


MIN_CPUS = 0.1  # the smallest CPU quota a sandbox takes: at 0.01 cores a kernel needs ~10 s to start, a snapshot ~20 s


@dataclass(frozen=True)
class Limits:
    """Every limit of one sandbox. Sizes are bytes, times seconds.

    timeout        wall-clock seconds per run; on expiry the run is interrupted, and killed after ``grace``
    grace          seconds between the interrupt and the kill
    memory         memory cgroup limit (RAM + swap + tmpfs pages the sandbox wrote)
    pids           most processes and threads alive at once (pids cgroup, and RLIMIT_NPROC)
    cpus           CPU quota in cores (cgroup CFS quota)
    output         bytes of stdout/stderr/rich output kept per run; the rest is dropped at the source
    work_size      size of the writable work dir (a tmpfs)
    tmp_size       size of /tmp inside the sandbox (a tmpfs)
    max_upload     largest file ``files.write`` accepts
    max_download   largest file ``files.read`` returns
    open_files     RLIMIT_NOFILE
    """

    timeout: float = 30.0
    grace: float = 2.0
    memory: int = 512 * 1024**2
    pids: int = 128
    cpus: float = 1.0
    output: int = 4 * 1024**2
    work_size: int = 256 * 1024**2
    tmp_size: int = 64 * 1024**2
    max_upload: int = 64 * 1024**2
    max_download: int = 64 * 1024**2
    open_files: int = 1024

    def replace(self, **changes) -> "Limits":
        return dataclasses.replace(self, **changes)


def make_limits(
    base: Limits | None = None, *, timeout: float | None = None, memory: int | str | None = None,
    pids: int | None = None, cpus: float | None = None, output: int | str | None = None,
    work_size: int | str | None = None, tmp_size: int | str | None = None,
) -> Limits:
    """Validate what a user passed and fold it into ``base`` (the defaults when None)."""
    lim = base or Limits()
    changes: dict = {}
    if timeout is not None:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise SandboxError(f"timeout={timeout!r} must be a positive number of seconds, e.g. timeout=30.")
        changes["timeout"] = float(timeout)
    if memory is not None:
        mem = parse_size(memory, "memory")
        if mem < 64 * 1024**2:
            raise SandboxError(f"memory={memory!r} is below 64 MiB, too small for a Python kernel; give at least \"64MiB\".")
        changes["memory"] = mem
    if pids is not None:
        if not isinstance(pids, int) or pids < 16:
            raise SandboxError(f"pids={pids!r} must be an int of at least 16 (a kernel alone runs ~8 threads).")
        changes["pids"] = pids
    if cpus is not None:
        if not isinstance(cpus, (int, float)) or isinstance(cpus, bool) or not cpus >= MIN_CPUS:
            raise SandboxError(f"cpus={cpus!r} must be a number of cores of at least {MIN_CPUS:g} (below that a "
                               "Python kernel takes minutes to start), e.g. cpus=1 or cpus=0.5.")
        changes["cpus"] = float(cpus)
    for name, val in (("output", output), ("work_size", work_size), ("tmp_size", tmp_size)):
        if val is not None:
            changes[name] = parse_size(val, name)
    return lim.replace(**changes) if changes else lim


__all__ = ["Limits", "SIZE_FORMS", "format_size", "make_limits", "parse_size"]
