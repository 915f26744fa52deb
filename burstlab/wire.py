"""The one wire format shared by every part of burstlab.

Small frozen dataclasses with ``to_json()`` (a JSON-ready dict) and ``from_json(d)``. The magics
render them, the sandbox returns them, the REST API serialises them. Nothing else defines a shape
that crosses a process boundary.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar


class _Wire:
    """Mixin: ``to_json``/``from_json`` for frozen dataclasses whose fields are JSON values,
    tuples, or other ``_Wire`` dataclasses (or tuples of them)."""

    _nested: ClassVar[dict[str, type]] = {}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            out[f.name] = _dump(getattr(self, f.name))
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]):
        kwargs = {}
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for key, value in data.items():
            if key not in names:
                continue  # newer peers may send more fields; ignore them
            nested = cls._nested.get(key)
            if nested is not None and value is not None:
                if isinstance(value, list):
                    value = tuple(nested.from_json(v) for v in value)
                else:
                    value = nested.from_json(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)


def _dump(value: Any) -> Any:
    if isinstance(value, _Wire):
        return value.to_json()
    if isinstance(value, (tuple, list)):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class GpuRequest(_Wire):
    """One acceptable choice: ``count`` GPUs of ``type`` on one host."""

    type: str
    count: int = 1

    def __str__(self) -> str:
        return self.type if self.count == 1 else f"{self.type}:{self.count}"


@dataclass(frozen=True)
class GpuSpec(_Wire):
    """What a cell or a function asks for: choices in order of preference (fallbacks)."""

    choices: tuple[GpuRequest, ...]
    _nested: ClassVar[dict[str, type]] = {"choices": GpuRequest}

    def __str__(self) -> str:
        return ",".join(str(c) for c in self.choices)


@dataclass(frozen=True)
class GpuInventoryEntry(_Wire):
    """GPUs of one type on one host: how many, how many free, and where they came from.

    ``source`` is ``"nvml"`` for GPUs found through NVML and ``"declared"`` for GPUs named in
    configuration; declared GPUs have no CUDA behind them and are labelled so wherever shown.
    """

    type: str
    host: str
    count: int
    free: int
    source: str

    @property
    def declared(self) -> bool:
        return self.source == "declared"


@dataclass(frozen=True)
class Output(_Wire):
    """One output of a cell, as the Jupyter protocol names it.

    ``kind`` is ``stream`` (``name`` is stdout/stderr, ``text`` holds it), ``display_data``
    or ``execute_result`` (``data`` maps mimetype to content).
    """

    kind: str
    name: str = ""
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecutionError(_Wire):
    """The user's exception: type name, value, and the traceback lines the kernel formatted."""

    ename: str
    evalue: str
    traceback: tuple[str, ...] = ()


@dataclass(frozen=True)
class Execution(_Wire):
    """Everything one run of one cell produced."""

    outputs: tuple[Output, ...] = ()
    error: ExecutionError | None = None
    execution_count: int | None = None
    duration_s: float = 0.0
    _nested: ClassVar[dict[str, type]] = {"outputs": Output, "error": ExecutionError}

    @property
    def stdout(self) -> str:
        return "".join(o.text for o in self.outputs if o.kind == "stream" and o.name == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(o.text for o in self.outputs if o.kind == "stream" and o.name == "stderr")

    @property
    def results(self) -> list[dict[str, Any]]:
        """Rich results (display_data and execute_result), each a mimetype -> data dict."""
        return [dict(o.data) for o in self.outputs if o.kind in ("display_data", "execute_result")]

    @property
    def text(self) -> str | None:
        """``text/plain`` of the cell's value (its ``execute_result``), or None."""
        for o in self.outputs:
            if o.kind == "execute_result":
                return o.data.get("text/plain")
        return None


@dataclass(frozen=True)
class UsageRecord(_Wire):
    """One metered interval, as the ledger reports it.

    Times are integer nanoseconds since the epoch; ``stop_ns`` is None while the interval is open.
    Money is integer micro-dollars; the rate is nano-dollars per second per unit and was the rate
    in force when the interval opened.
    """

    id: str
    kind: str
    user: str
    notebook: str
    resource: str
    quantity: int
    declared: bool
    rate_nusd_per_s: int
    start_ns: int
    heartbeat_ns: int
    stop_ns: int | None
    billed_s: int
    cost_microusd: int
    recovered: bool = False
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def cost_usd(self) -> float:
        return self.cost_microusd / 1_000_000


@dataclass(frozen=True)
class BudgetStatus(_Wire):
    """A budget and where spending stands against it.

    ``scope`` is ``user`` or ``notebook``; ``name`` the user or notebook it limits. Money is integer
    micro-dollars; ``state`` is ``ok``, ``warning`` (spent reached ``soft_fraction`` of the limit)
    or ``exceeded`` (spent reached the limit: running cells and maps in that scope are stopped, new
    ones refused).
    """

    scope: str
    name: str
    limit_microusd: int
    soft_fraction: float
    spent_microusd: int
    remaining_microusd: int
    state: str


__all__ = [
    "BudgetStatus",
    "Execution",
    "ExecutionError",
    "GpuInventoryEntry",
    "GpuRequest",
    "GpuSpec",
    "Output",
    "UsageRecord",
]
