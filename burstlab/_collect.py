"""One execution's iopub messages as outputs, an error and an execution count: the one collector of both kernel
clients.

The GPU session's client (``remote_kernel/client.py``, over jupyter_client's channels) and the sandbox's
(``sandbox/_client.py``, raw ZMQ on pinned sockets) each read iopub their own way and hand every message of the
execution to an :class:`OutputCollector`. It keeps every kind of ``burstlab.wire.OUTPUT_KINDS`` in order, as
``Output.from_message`` makes them (``update_display_data`` and ``clear_output`` are kept as sent, never folded),
tells ``on_output`` each output as it arrives (raw stream chunks), merges consecutive chunks of one stream in what it
keeps, turns the kernel's error into a bounded ``ExecutionError``, and caps what it keeps at ``limit`` bytes.

What an output costs: the size of the message that carried it when the client knows it (the sandbox counts every
frame as received, so metadata, transient and buffers count whatever their shape, and messages that are not
outputs use the budget too), else its content (:func:`output_size`). Past the limit, one of two policies:

- ``inline_marker=True`` (GPU sessions): the stream that crosses the limit is cut where it reaches it, one marker
  output says the rest was dropped, and nothing after it is kept;
- ``inline_marker=False`` (sandboxes): an output that does not fit is dropped and counted in ``dropped`` (later
  ones that fit are kept), and the owner says what was dropped after the run (the sandbox's marker also counts
  what its kernel dropped at the source).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from burstlab.wire import Execution, ExecutionError, Output

MAX_TRACEBACK_LINES = 200
MAX_ERROR_CHARS = 64 * 1024


def output_size(out: Output) -> int:
    """What an output costs: its text, each mime value (a str's length, anything else as JSON), its metadata."""
    size = len(out.text.encode("utf-8", "surrogatepass")) + len(out.name)
    for key, value in out.data.items():
        size += len(key) + (len(value) if isinstance(value, str) else _json_size(value))
    if out.metadata:
        size += _json_size(out.metadata)
    return size


def _json_size(value: Any) -> int:
    try:
        return len(json.dumps(value, default=str))
    except (ValueError, TypeError, RecursionError):
        return len(repr(value))


def limit_marker(limit: int) -> Output:
    return Output(kind="stream", name="stderr",
                  text=f"\n[burstlab: output limit of {limit / 2**20:g} MiB per run reached; the rest of this run's "
                       "output was dropped]\n")


def execution_error(content: Any) -> ExecutionError:
    """An ExecutionError from an ``error`` message's (or an error reply's) content, whatever the kernel put
    there: missing fields are empty, and its size is bounded."""
    c = content if isinstance(content, dict) else {}
    ename, evalue, tb = c.get("ename", ""), c.get("evalue", ""), c.get("traceback", ())
    tb = tb if isinstance(tb, (list, tuple)) else ()
    return ExecutionError(str(ename)[:200], str(evalue)[:MAX_ERROR_CHARS],
                          tuple(str(x)[:MAX_ERROR_CHARS] for x in tb[:MAX_TRACEBACK_LINES]))


class OutputCollector:
    """What one execution gathered so far: ``outputs`` (a list), ``error``, ``execution_count``, and the bytes
    ``used`` and ``dropped``; ``idle`` once the kernel said so, ``reply`` once the shell reply is in."""

    def __init__(self, limit: int, on_output: Callable[[Output], Any] | None = None, *,
                 inline_marker: bool = True) -> None:
        self.limit = limit
        self.on_output = on_output
        self.inline_marker = inline_marker
        self.outputs: list[Output] = []
        self.used = 0
        self.dropped = 0
        self.error: ExecutionError | None = None
        self.execution_count: int | None = None
        self.idle = False
        self.reply = False
        self.started = time.perf_counter()

    def feed(self, msg_type: str, content: dict, size: int | None = None) -> bool:
        """Take one iopub message of this execution; True once the kernel is idle again. ``size``: what the
        message took on the wire, if the client counts it (see the module's doc)."""
        if msg_type == "status":
            if content.get("execution_state") == "idle":
                self.idle = True
            return self.idle
        if msg_type == "error":
            self.error = execution_error(content)
        elif msg_type == "execute_input":
            count = content.get("execution_count")
            self.execution_count = count if isinstance(count, int) else self.execution_count
        else:
            out = Output.from_message(msg_type, content)
            if out is not None:
                self.add(out, size)
            elif size is not None:  # a comm message, another kind: not kept, but it used the budget
                self.count_other(size)
        return self.idle

    def take_reply(self, content: dict) -> None:
        """The shell's ``execute_reply``: its execution count, and its error if iopub sent none."""
        self.reply = True
        count = content.get("execution_count", self.execution_count)
        self.execution_count = count if isinstance(count, int) else self.execution_count
        if content.get("status") == "error" and self.error is None:
            self.error = execution_error(content)

    def count_other(self, size: int) -> None:
        """A message that is not kept (a comm message, another cell's output) still uses the budget."""
        if self.used + size > self.limit:
            self.dropped += size
        else:
            self.used += size

    def add(self, out: Output, size: int | None = None) -> None:
        """Keep ``out`` (costing ``size``, else its content's) while within the limit; past it, the policy."""
        if self.dropped and self.inline_marker:  # past the limit, marker shown: dropped unseen
            return
        size = output_size(out) if size is None else max(size, 0)
        if self.used + size <= self.limit:
            self.used += size
            self._deliver(out)
        elif not self.inline_marker:
            self.dropped += size
        elif out.kind == "stream" and self.limit - self.used > 0:
            keep = out.text.encode("utf-8", "surrogatepass")[: self.limit - self.used].decode("utf-8", "ignore")
            self.dropped += max(1, size - len(keep))
            self.used = self.limit
            self._deliver(Output(kind="stream", name=out.name, text=keep))
            self._deliver(limit_marker(self.limit))
        else:
            self.dropped += max(1, size)
            self._deliver(limit_marker(self.limit))

    def _deliver(self, out: Output) -> None:
        if self.on_output is not None:
            self.on_output(out)
        last = self.outputs[-1] if self.outputs else None
        if out.kind == "stream" and last is not None and last.kind == "stream" and last.name == out.name:
            self.outputs[-1] = Output(kind="stream", name=out.name, text=last.text + out.text)
        else:
            self.outputs.append(out)

    def execution(self) -> Execution:
        return Execution(outputs=tuple(self.outputs), error=self.error, execution_count=self.execution_count,
                         duration_s=time.perf_counter() - self.started)


__all__ = ["MAX_ERROR_CHARS", "MAX_TRACEBACK_LINES", "OutputCollector", "execution_error", "limit_marker",
           "output_size"]
