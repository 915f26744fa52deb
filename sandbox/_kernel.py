"""The kernel's side, inside the jail: an IPKernelApp whose output is capped at the source.

``OutputCap.wrap(session)`` counts the bytes of stream and rich-output messages per execution
(keyed by the parent request's id). Past the limit, stream text is cut and rich outputs are
dropped; before the execution's ``status: idle`` it sends one stderr marker saying how much was
dropped. The supervisor keeps its own count too, since code in the kernel can bypass anything
the kernel does (docs/sandbox.md).
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

_RICH = ("display_data", "execute_result", "update_display_data")


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
            if msg_type in _RICH:
                size = sum(len(v) if isinstance(v, str) else len(json.dumps(v)) for v in content.get("data", {}).values())
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
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize([
        "-f", spec["connection_file"],
        "--HistoryManager.enabled=False",
    ])
    OutputCap(spec["output_limit"]).wrap(app.session)
    app.start()


__all__ = ["OutputCap", "marker", "start_kernel"]
