"""The kernel's side, inside the jail: an IPKernelApp whose output is capped at the source.

``OutputCap.wrap(session)`` counts the bytes of stream, rich-output and comm messages per
execution (keyed by the parent request's id); a rich output counts its whole encoded content (data,
metadata, transient, values of any type). Past the limit, stream text is cut and the others are
dropped; before the execution's ``status: idle`` it sends one stderr marker saying how much was
dropped. Error messages (and error replies) have their value and traceback cut to the limit. The supervisor keeps its own count too, since code in the kernel can bypass anything
the kernel does (docs/sandbox.md).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

_RICH = ("display_data", "execute_result", "update_display_data")
_COMM = ("comm_open", "comm_msg", "comm_close")


def encoded_size(obj: Any) -> int:
    try:
        return len(json.dumps(obj, default=repr))
    except (TypeError, ValueError, RecursionError):
        return len(repr(obj))


def trim_error(content: dict, limit: int) -> dict:
    """An error's ename/evalue/traceback cut to ``limit`` characters in all."""
    ev, tb = content.get("evalue", ""), content.get("traceback", [])
    if not isinstance(ev, str) or not isinstance(tb, list):
        return content
    if len(ev) + sum(len(x) if isinstance(x, str) else limit for x in tb) <= limit:
        return content
    room = limit
    ev = ev[: max(room // 2, 0)]
    room -= len(ev)
    kept = []
    for line in reversed(tb):  # the innermost frames and the error line are at the end
        line = line if isinstance(line, str) else repr(line)
        if len(line) > room:
            break
        kept.append(line)
        room -= len(line)
    return dict(content, evalue=ev, traceback=["[burstlab: traceback cut to the output limit]"] + kept[::-1])


def marker(limit: int, dropped: int) -> str:
    from ._limits import format_size

    return f"\n[burstlab: output limit of {format_size(limit)} per run reached; {dropped:,} more bytes were dropped]\n"


class OutputCap:
    """Per-execution byte budget for iopub output. Thread-safe (streams flush on the IOPub thread)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parent: str | None = None
        self.used = 0
        self.dropped = 0
        self.lock = threading.Lock()

    def admit(self, msg_type: str, content: dict, parent_id: str | None) -> tuple[dict | None, str | None]:
        """Returns (content to send or None to drop it, marker text to send first or None)."""
        with self.lock:
            if parent_id != self.parent:
                self.parent, self.used, self.dropped = parent_id, 0, 0
            if msg_type == "stream":
                text = content.get("text", "")
                size = len(text.encode("utf-8", "surrogatepass"))
                room = self.limit - self.used
                if size <= room:
                    self.used += size
                    return content, None
                keep = text.encode("utf-8", "surrogatepass")[: max(room, 0)].decode("utf-8", "ignore")
                self.used = self.limit
                self.dropped += size - len(keep.encode("utf-8"))
                return (dict(content, text=keep) if keep else None), None
            if msg_type in _RICH or msg_type in _COMM:
                size = encoded_size(content)
                if self.used + size <= self.limit:
                    self.used += size
                    return content, None
                self.dropped += size
                self.used = self.limit
                return None, None
            if msg_type == "status" and content.get("execution_state") == "idle" and self.dropped:
                text = marker(self.limit, self.dropped)
                self.dropped = 0
                return content, text
            if msg_type == "error" or (msg_type == "execute_reply" and content.get("status") == "error"):
                return trim_error(content, self.limit), None
            return content, None

    def wrap(self, session: Any) -> None:
        orig = session.send

        def send(stream, msg_or_type, content=None, parent=None, *args, **kwargs):
            if isinstance(msg_or_type, str):
                msg_type, body = msg_or_type, content or {}
                parent_id = None
                if isinstance(parent, dict):  # a parent message or a parent header
                    parent_id = (parent.get("header") or parent).get("msg_id")
                marker_parent = parent
            else:  # a whole message, as OutStream sends them
                msg_type, body = msg_or_type["header"]["msg_type"], msg_or_type.get("content") or {}
                marker_parent = msg_or_type.get("parent_header") or {}
                parent_id = marker_parent.get("msg_id")
            new, note = self.admit(msg_type, body, parent_id)
            if note:
                orig(stream, "stream", {"name": "stderr", "text": note}, marker_parent, ident=kwargs.get("ident"))
            if new is None:
                return None
            if new is not body:
                if isinstance(msg_or_type, str):
                    content = new
                else:
                    msg_or_type = dict(msg_or_type, content=new)
            return orig(stream, msg_or_type, content, parent, *args, **kwargs)

        session.send = send


def start_kernel(spec: dict) -> None:
    """Runs as the kernel process inside the jail (after privileges are dropped). Blocks until shutdown."""
    os.environ.clear()
    os.environ.update(spec["env"])
    os.chdir(spec["cwd"])
    import zmq
    from ipykernel.kernelapp import IPKernelApp

    # No send high-water mark on the kernel's PUB sockets (iopub): the supervisor reads with a small
    # receive queue (its memory stays bounded), so a backlog waits here, in the sandbox's own memory
    # (its cgroup limit), instead of being dropped when the supervisor falls behind.
    new_socket = zmq.Context.socket

    def socket(self, socket_type, *args, **kwargs):
        sock = new_socket(self, socket_type, *args, **kwargs)
        if socket_type == zmq.PUB:
            sock.setsockopt(zmq.SNDHWM, 0)
        return sock

    zmq.Context.socket = socket

    app = IPKernelApp.instance()
    app.initialize([
        "-f", spec["connection_file"],
        "--HistoryManager.enabled=False",
    ])
    OutputCap(spec["output_limit"]).wrap(app.session)
    app.start()


__all__ = ["OutputCap", "marker", "start_kernel"]
