"""GPU specs and GPU inventory.

``parse_gpu_spec`` is the one parser of what a user writes to ask for GPUs (``"H100"``, ``"h100"``,
``"H100:2"``, ``"H100,A100"``, ``["H100", "A100:2"]``). ``discover`` finds this host's GPUs through
NVML (nvidia-ml-py) and falls back to GPUs declared in configuration, which are labelled
``declared`` wherever they are shown.
"""

from __future__ import annotations

import re
import socket
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from .errors import ConfigError, GpuSpecError
from .wire import GpuRequest, GpuSpec

# Types we know the names (and list prices, see billing.rates) of. A workspace may have others
# (NVML reports whatever it finds); these are only used for normalisation and error messages.
KNOWN_TYPES = (
    "B200", "H200", "H100", "A100-80GB", "A100", "L40S", "L40", "L4", "A10G", "A10", "A6000", "V100", "T4",
)

CPU = "CPU"  # the resource CPU-only work asks for (fan-out with gpu=None); never a GPU type
SPEC_FORMS = '"H100", "h100", "H100:2" (two on one host), "H100,A100" or ["H100", "A100"] (fallbacks in order)'

_TYPE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9\-]*$")


def normalise_type(name: str) -> str:
    """Canonical GPU type name: upper case, with NVML marketing names reduced to the family.

    >>> normalise_type("NVIDIA H100 80GB HBM3")
    'H100'
    >>> normalise_type("NVIDIA A100-SXM4-80GB")
    'A100-80GB'
    >>> normalise_type("Tesla T4")
    'T4'
    """
    upper = name.strip().upper()
    if upper in KNOWN_TYPES:
        return upper
    tokens = re.split(r"[\s_\-]+", upper.replace("NVIDIA", " ").replace("TESLA", " "))
    tokens = [t for t in tokens if t]
    for known in KNOWN_TYPES:
        family = known.split("-")[0]
        if family in tokens:
            if known == "A100-80GB" and "80GB" not in tokens:
                continue
            return known
    if tokens and _TYPE_RE.match("-".join(tokens)):
        return "-".join(tokens)
    return upper


def parse_gpu_spec(spec: str | Sequence[str] | GpuSpec, available: Iterable[str] | None = None) -> GpuSpec:
    """Parse what a user wrote into a :class:`GpuSpec`.

    ``available`` is the set of GPU types this workspace has; when given, a spec naming none of
    them is refused with a message listing them. Raises :class:`GpuSpecError` naming the valid
    forms otherwise.
    """
    if isinstance(spec, GpuSpec):
        parsed = spec
    else:
        if isinstance(spec, str):
            parts = [p for p in (x.strip() for x in spec.split(",")) if p]
        elif isinstance(spec, (list, tuple)) and all(isinstance(p, str) for p in spec):
            parts = [p.strip() for p in spec]
        else:
            raise GpuSpecError(f"A GPU spec must be a string or a list of strings, not {spec!r}. Valid forms: {SPEC_FORMS}.")
        if not parts:
            raise GpuSpecError(f"Empty GPU spec. Valid forms: {SPEC_FORMS}.")
        choices = []
        for part in parts:
            name, _, count_text = part.partition(":")
            name = name.strip()
            if not name or not _TYPE_RE.match(name):
                raise GpuSpecError(f"{part!r} is not a GPU type. Valid forms: {SPEC_FORMS}.")
            count = 1
            if _:
                if not count_text.strip().isdigit() or int(count_text) < 1:
                    raise GpuSpecError(f"{part!r}: the count after ':' must be a whole number >= 1. Valid forms: {SPEC_FORMS}.")
                count = int(count_text)
            choices.append(GpuRequest(type=normalise_type(name), count=count))
        parsed = GpuSpec(choices=tuple(choices))
    if available is not None:
        have = sorted(set(available))
        usable = [c for c in parsed.choices if c.type in have]
        if not usable:
            listed = ", ".join(have) if have else "none"
            raise GpuSpecError(
                f"No GPU of type {', '.join(c.type for c in parsed.choices)} in this workspace "
                f"(it has: {listed}). Valid forms: {SPEC_FORMS}."
            )
    return parsed


def impossible_count_message(request: GpuRequest, most: int, *, per: str, fix: str) -> str:
    """The one message for a count that no ``per`` ("host" for a session, "worker" for a map input) can ever
    hold: waiting cannot help, so it says so and names what would."""
    return (
        f"{request} can never be held here: no {per} has more than {most} {request.type}, and "
        f"{'a session holds its GPUs on one host' if per == 'host' else 'each input runs on one worker'}, "
        f"so waiting cannot help. {fix}"
    )


@dataclass(frozen=True)
class Gpu:
    """One GPU on this host. ``index`` is what ``CUDA_VISIBLE_DEVICES`` names it by."""

    type: str
    index: int
    source: str  # "nvml" or "declared"
    host: str
    uuid: str = ""
    memory_bytes: int = 0
    minor: int = -1  # /dev/nvidia<minor> (NVML only)


def parse_declared(text: str) -> dict[str, int]:
    """``"H100:2,A100:1"`` -> ``{"H100": 2, "A100": 1}``; a bare type counts as one."""
    out: Counter[str] = Counter()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, count_text = part.partition(":")
        if not _TYPE_RE.match(name.strip()) or (sep and not count_text.strip().isdigit()):
            raise ConfigError(
                f"BURSTLAB_DECLARED_GPUS / c.BurstLab.declared_gpus: {part!r} is not TYPE or TYPE:COUNT "
                f"(example: H100:2,A100:1)."
            )
        out[normalise_type(name)] += int(count_text) if sep else 1
    return dict(out)


def nvml_gpus(host: str | None = None) -> list[Gpu]:
    """GPUs NVML finds on this host; an empty list where there is no driver or no GPU."""
    host = host or socket.gethostname()
    try:
        import pynvml  # provided by nvidia-ml-py
    except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded: no GPU here
        return []
    try:
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            uuid = pynvml.nvmlDeviceGetUUID(handle)
            uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle).total
            gpus.append(Gpu(type=normalise_type(name), index=i, source="nvml", host=host, uuid=uuid, memory_bytes=mem,
                            minor=pynvml.nvmlDeviceGetMinorNumber(handle)))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def discover(declared: str = "", host: str | None = None) -> list[Gpu]:
    """This host's GPUs: NVML's when it finds any, else those declared (``"H100:2,A100:1"``)."""
    host = host or socket.gethostname()
    found = nvml_gpus(host)
    if found:
        return found
    gpus = []
    index = 0
    for gpu_type, count in parse_declared(declared).items():
        for _ in range(count):
            gpus.append(Gpu(type=gpu_type, index=index, source="declared", host=host))
            index += 1
    return gpus


__all__ = ["CPU", "Gpu", "KNOWN_TYPES", "SPEC_FORMS", "discover", "normalise_type", "parse_declared", "parse_gpu_spec"]
