"""Showing remote outputs in the notebook as if the cell ran locally, and small text tables."""

from __future__ import annotations

import sys
from typing import Any

from burstlab.wire import Output, UsageRecord

MAX_STREAM_BYTES = 8 * 1024 * 1024


class RemoteValue:
    """A remote cell's value (its execute_result), displayed as ``Out[n]`` with all its mimetypes."""

    def __init__(self, data: dict[str, Any], metadata: dict[str, Any]):
        self.data = data
        self.metadata = {k: v for k, v in metadata.items() if k != "transient"}

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.data, self.metadata

    def __repr__(self) -> str:
        return str(self.data.get("text/plain", "<remote value>"))


class Publisher:
    """Re-publishes outputs in the local kernel, capping stream text at ``max_stream_bytes``."""

    def __init__(self, max_stream_bytes: int = MAX_STREAM_BYTES):
        self.max_stream_bytes = max_stream_bytes
        self.stream_bytes = 0
        self.dropped = 0
        self.value: RemoteValue | None = None

    def __call__(self, out: Output) -> None:
        from IPython.display import clear_output, publish_display_data

        if out.kind == "stream":
            size = len(out.text.encode("utf-8", "replace"))
            if self.stream_bytes + size > self.max_stream_bytes:
                self.dropped += size
                return
            self.stream_bytes += size
            stream = sys.stderr if out.name == "stderr" else sys.stdout
            stream.write(out.text)
            stream.flush()
        elif out.kind in ("display_data", "update_display_data"):
            metadata = dict(out.metadata)
            transient = metadata.pop("transient", None)
            kwargs: dict[str, Any] = {"transient": transient} if transient else {}
            if out.kind == "update_display_data":
                kwargs["update"] = True
            publish_display_data(out.data, metadata, **kwargs)
        elif out.kind == "execute_result":
            self.value = RemoteValue(out.data, out.metadata)
        elif out.kind == "clear_output":
            clear_output(wait=bool(out.metadata.get("wait")))

    def finish(self) -> None:
        if self.dropped:
            print(
                f"[burstlab: {self.dropped / 1e6:.1f} MB of output dropped after the first "
                f"{self.max_stream_bytes / 1e6:.0f} MB; write large results to a file or bring them back with --pull]",
                file=sys.stderr,
            )


def money(microusd: int) -> str:
    return f"${microusd / 1e6:,.4f}"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def bill_table(records: list[UsageRecord], title: str) -> str:
    """Usage grouped by kind and resource, with totals."""
    groups: dict[tuple[str, str, bool], list[UsageRecord]] = {}
    for r in records:
        groups.setdefault((r.kind, r.resource, r.declared), []).append(r)
    rows = []
    for (kind, resource, declared), rs in sorted(groups.items()):
        rows.append([kind, resource + (" (declared)" if declared else ""), len(rs),
                     sum(r.billed_s * r.quantity for r in rs), money(sum(r.cost_microusd for r in rs)),
                     sum(r.stop_ns is None for r in rs)])
    total_s = sum(r.billed_s * r.quantity for r in records)
    total = money(sum(r.cost_microusd for r in records))
    body = table(["kind", "resource", "intervals", "billed s", "cost", "open"], rows) if rows else "(no usage yet)"
    return f"{title}\n{body}\ntotal: {total_s} billed s, {total}"


__all__ = ["Publisher", "RemoteValue", "bill_table", "money", "table"]
