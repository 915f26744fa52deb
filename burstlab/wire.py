"""The one wire format shared by every part of burstlab.

Small frozen dataclasses with ``to_json()`` (a JSON-ready dict) and ``from_json(d)``. The magics
render them, the sandbox returns them, the REST API serialises them, and the OpenAPI document's
schemas are derived from them (``json_schema()``); tests/test_api.py checks the lab's TypeScript
types (labextension/src/types.ts) against them. Nothing else defines a shape that crosses a process
boundary.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar


class _Wire:
    """Mixin: ``to_json``/``from_json`` for frozen dataclasses whose fields are JSON values,
    tuples, or other ``_Wire`` dataclasses (or tuples of them); ``json_schema()`` for the OpenAPI
    document (a field's ``metadata`` may add ``enum`` or replace its ``schema``)."""

    _nested: ClassVar[dict[str, type]] = {}
    _open: ClassVar[bool] = False  # whether the schema allows fields beyond these

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema (OpenAPI 3.1) of ``to_json()``'s result; every field is present."""
        props = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if "schema" in f.metadata:
                props[f.name] = dict(f.metadata["schema"])
                continue
            schema = _schema_of(str(f.type), cls._nested.get(f.name))
            if "enum" in f.metadata:
                target = schema["anyOf"][0] if "anyOf" in schema else schema
                target["enum"] = list(f.metadata["enum"])
            props[f.name] = schema
        return {"type": "object", "properties": props, "additionalProperties": cls._open, "required": sorted(props)}

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


_SCALARS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


def _schema_of(annotation: str, nested: type | None) -> dict[str, Any]:
    """A field's annotation (a string, as ``from __future__ import annotations`` leaves it) as JSON Schema."""
    annotation = annotation.replace(" ", "")
    if annotation.endswith("|None"):
        return {"anyOf": [_schema_of(annotation[: -len("|None")], nested), {"type": "null"}]}
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    if annotation.startswith("dict["):
        return {"type": "object"}
    if annotation.startswith("tuple["):
        inner = annotation[len("tuple["): -len(",...]")]
        items = {"$ref": f"#/components/schemas/{nested.__name__}"} if nested else _schema_of(inner, None)
        return {"type": "array", "items": items}
    if nested is not None:
        return {"$ref": f"#/components/schemas/{nested.__name__}"}
    raise TypeError(f"no JSON Schema for the annotation {annotation!r}")  # pragma: no cover (a new field type)


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


OUTPUT_KINDS = ("stream", "display_data", "update_display_data", "execute_result", "clear_output")


@dataclass(frozen=True)
class Output(_Wire):
    """One output of a cell, as the Jupyter protocol names it (``kind`` is one of ``OUTPUT_KINDS``).

    ``stream``: ``name`` is stdout/stderr, ``text`` holds it. ``display_data`` and ``execute_result``:
    ``data`` maps mimetype to content. ``update_display_data``: replaces the earlier display whose
    ``metadata["transient"]["display_id"]`` is the same. ``clear_output``: clears what the cell showed
    before (``metadata["wait"]``: when the next output arrives). Every kernel client (GPU sessions,
    sandboxes) keeps all five, in order, so an execution replays as the cell showed it; a display's
    ``transient`` (its ``display_id``) travels in ``metadata["transient"]``.
    """

    kind: str = field(metadata={"enum": OUTPUT_KINDS})
    name: str = ""
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_message(cls, msg_type: str, content: dict[str, Any]) -> "Output | None":
        """An iopub message (its type and content) as an Output, or None if it is not an output.
        The one place the Jupyter protocol's output messages become records."""
        def mapping(value: Any) -> dict[str, Any]:  # a kernel may send anything: what is not an object is empty
            return dict(value) if isinstance(value, dict) else {}

        if msg_type == "stream":
            name, text = content.get("name"), content.get("text", "")
            return cls(kind="stream", name=name if name in ("stdout", "stderr") else "stdout",
                       text=text if isinstance(text, str) else str(text))
        if msg_type in ("display_data", "update_display_data", "execute_result"):
            metadata = mapping(content.get("metadata"))
            transient = mapping(content.get("transient"))
            if transient:
                metadata["transient"] = transient
            return cls(kind=msg_type, data=mapping(content.get("data")), metadata=metadata)
        if msg_type == "clear_output":
            return cls(kind="clear_output", metadata={"wait": bool(content.get("wait"))})
        return None


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


def usd(microusd: int) -> str:
    """Money for people: ``$1,234.5679``, to a hundredth of a cent, rounded up (as billing rounds), so the
    same amount reads the same in a budget message, ``%gpu bill``, a map's progress and the lab. The one
    money formatter; sums are made on the integers, never on this text."""
    units = -(-int(microusd) // 100)  # hundredths of a cent, rounded towards +infinity
    whole, frac = divmod(abs(units), 10_000)
    return f"{'-' if units < 0 else ''}${whole:,}.{frac:04d}"


@dataclass(frozen=True)
class ExecResult(_Wire):
    """What one command run in a sandbox (``Sandbox.exec``, ``POST sandboxes/{id}/exec``) produced. ``exit_code``
    is the command's status (``128 + n`` when signal ``n`` ended it, e.g. 137 for a kill); ``error`` names a limit
    it hit (``SandboxTimeout``, ``SandboxMemoryLimit``) with what to do, or is ``None``."""

    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    error: str | None = None
    dropped_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None

    def to_dict(self) -> dict[str, Any]:
        return self.to_json()


FILE_EVENTS = ("ready", "create", "modify", "delete", "overflow", "end")


@dataclass(frozen=True)
class FileEvent(_Wire):
    """One line of a watch of a sandbox's work dir (``GET sandboxes/{id}/files/watch``; ``sb.files.watch`` yields the
    same fields as dicts). ``ready``: the watch is in place (``path`` is what is watched); ``create``/``modify``/
    ``delete``: ``path`` (relative to the work dir) changed, ``dir`` says whether it is a directory; ``overflow``:
    inotify dropped events; ``end``: the stream's last line, ``reason`` saying why (``timeout``, ``output``: the
    service's output cap, ``closed``: the sandbox closed, ``stopped``)."""

    event: str = field(metadata={"enum": FILE_EVENTS})
    path: str = ""
    dir: bool = False
    reason: str | None = None


SESSION_STATES = ("running", "stopped", "lost")
# Who or what ended a session (SessionRecord.ended_by); "" while it runs. "user": its own notebook (`%gpu stop`,
# `burstlab.stop()`); "closed": its notebook's kernel shut down or restarted; "panel": the lab's panel; "client":
# another client (the REST API, another process); "budget", "idle": burstlab itself; "lost": its host or kernel
# went away; "error": it could not be made ready.
SESSION_ENDED_BY = ("", "user", "closed", "panel", "client", "budget", "idle", "lost", "error")


@dataclass(frozen=True)
class SessionRecord(_Wire):
    """A GPU session as every front door shows it (``GET sessions``, ``Workspace.list_sessions()``, the lab).

    ``spec`` is the session's GPU spec (``"H100:2"``), ``gpu_type``/``count``/``host`` what it holds.
    ``origin`` is ``server`` (started through the REST API) or ``kernel`` (a notebook's ``%%gpu``).
    ``billed_s``/``cost_microusd`` price it up to now. ``idle_timeout`` is the workspace's (seconds, 0: off);
    ``idle_since`` when the session last went idle (seconds since the epoch), None while a cell runs on it,
    once it has ended, or where the holder has not said. Once it has ended (listed a few minutes more with
    ``GET sessions?ended=1``), ``ended_by`` says who or what ended it (``SESSION_ENDED_BY``), ``why`` the holder's
    words for it ("released after 600 s idle") and ``ended`` when (seconds since the epoch).
    """

    id: str
    spec: str
    gpu_type: str
    count: int
    declared: bool
    host: str
    user: str
    notebook: str
    started: float
    state: str = field(default="running", metadata={"enum": SESSION_STATES})
    billed_s: int = 0
    cost_microusd: int = 0
    origin: str = field(default="kernel", metadata={"enum": ("server", "kernel")})
    idle_timeout: float = 0.0
    idle_since: float | None = None
    ended_by: str = field(default="", metadata={"enum": SESSION_ENDED_BY})
    why: str = ""
    ended: float | None = None
    isolated: bool = False  # its kernel runs in the session jail (SessionIsolation)
    isolation: str = ""  # how (uid, work dir, device nodes), or why not


@dataclass(frozen=True)
class SessionIsolation(_Wire):
    """Whether this workspace's GPU session kernels run in the session jail (``GET workspace``, ``%gpu hosts``).

    ``setting`` is ``c.BurstLab.isolate_sessions`` (``auto``, ``on``, ``off``); ``enabled`` whether new sessions
    ask for the jail; ``reason`` why (or why not). Each session's own record says what its host did
    (``SessionRecord.isolated``/``isolation``): under ``auto`` a host whose worker is not root falls back.
    """

    setting: str = field(default="auto", metadata={"enum": ("auto", "on", "off")})
    enabled: bool = False
    reason: str = ""


MAP_STATES = ("running", "done", "failed", "cancelled", "lost")


@dataclass(frozen=True)
class MapRecord(_Wire):
    """A map (``burstlab.map``) as the registry on the scheduler holds it: progress, state and cost so far.

    ``gpu`` is the resource each input runs on (a GPU type, or ``CPU``); the counts are inputs.
    Fields are None where an older or broken peer left them out.
    """

    id: str
    name: str | None = None
    user: str = ""
    notebook: str | None = None
    gpu: str | None = None
    total: int | None = None
    done: int | None = None
    failed: int | None = None
    running: int | None = None
    state: str = field(default="running", metadata={"enum": MAP_STATES})
    started: float | None = None
    cost_microusd: int | None = None


@dataclass(frozen=True)
class SandboxRecord(_Wire):
    """A sandbox a service holds for a user (``GET sandboxes``): who, its limits, and what it has used.

    ``limits`` has the sandbox's limits (seconds, bytes, pids, cores: ``timeout``, ``memory``, ``pids``,
    ``cpus``, ``output``, ``work_size``, ``tmp_size``, ``max_upload``, ``max_download``); ``usage`` has
    ``cpu_s``, ``wall_s`` and ``memory_peak`` (bytes).
    """

    id: str
    user: str
    notebook: str
    state: str = field(metadata={"enum": ("running", "paused", "closed")})
    created: float
    network: bool
    limits: dict[str, Any] = field(default_factory=dict, metadata={"schema": {"$ref": "#/components/schemas/Limits"}})
    usage: dict[str, Any] = field(default_factory=dict, metadata={"schema": {
        "type": "object", "properties": {"cpu_s": {"type": "number"}, "wall_s": {"type": "number"},
                                         "memory_peak": {"type": "integer"}},
        "additionalProperties": False, "required": ["cpu_s", "memory_peak", "wall_s"]}})


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
    ones refused). ``period`` is ``""`` (all time) or ``day``/``week``/``month``: spending counts from the
    period's start in UTC.
    """

    scope: str = field(metadata={"enum": ("user", "notebook")})
    name: str
    limit_microusd: int
    soft_fraction: float
    spent_microusd: int
    remaining_microusd: int
    state: str = field(metadata={"enum": ("ok", "warning", "exceeded")})
    period: str = field(default="", metadata={"enum": ("", "day", "week", "month")})
    _open: ClassVar[bool] = True


__all__ = [
    "BudgetStatus",
    "ExecResult",
    "Execution",
    "ExecutionError",
    "FILE_EVENTS",
    "FileEvent",
    "GpuInventoryEntry",
    "GpuRequest",
    "GpuSpec",
    "MAP_STATES",
    "MapRecord",
    "OUTPUT_KINDS",
    "Output",
    "SESSION_ENDED_BY",
    "SESSION_STATES",
    "SandboxRecord",
    "SessionIsolation",
    "SessionRecord",
    "UsageRecord",
    "usd",
]
