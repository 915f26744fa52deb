"""Showing remote outputs in the notebook as if the cell ran locally, and small text tables."""

from __future__ import annotations

import html
import sys
from typing import Any

from burstlab.wire import Output, UsageRecord, usd

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


money = usd  # the one money formatter, burstlab.wire.usd

CELL_MIME = "application/vnd.burstlab.cell+json"  # a %%gpu cell's "ran on" record (labextension/src/ranlabel.ts)


def cell_share(record: UsageRecord, since_ns: int, until_ns: int) -> tuple[int, int]:
    """A cell's own share of its session: the nanoseconds the session was billed while the cell ran (from the
    later of the cell's start and the session's, to ``until_ns``) and their cost in micro-dollars at the
    interval's per-second rate (the ledger's, for all its GPUs), rounded up as billing rounds."""
    ns = max(0, int(until_ns) - max(int(since_ns), record.start_ns))
    return ns, -(-ns * record.rate_nusd_per_s * record.quantity // 10**12)


def seconds(ns: int) -> str:
    """A cell's duration for people: ``0.4 s``, ``12 s``, ``3m05s``."""
    s = ns / 1e9
    if s < 10:
        return f"{s:.1f} s"
    if s < 60:
        return f"{s:.0f} s"
    return f"{int(s) // 60}m{int(s) % 60:02d}s"


def cell_footer(session, record: UsageRecord, ns: int, cost: int) -> str:
    """The text footer a terminal prints (and every frontend but the lab shows) under a ``%%gpu`` cell."""
    return (f"[{session.label} on {session.host} · this cell {seconds(ns)}, {money(cost)} · "
            f"session {record.billed_s} s held, {money(record.cost_microusd)} so far]")


def cell_record(session, record: UsageRecord, since_ns: int, until_ns: int) -> dict[str, Any]:
    """What a ``%%gpu`` cell's label shows and its metadata keeps: where it ran, the cell's own time and cost
    (``cell_ms``, ``cell_cost_microusd``: :func:`cell_share`) and, secondary, its session's so far (``held_s``,
    ``cost_microusd``, as the ledger prices the interval up to now)."""
    from datetime import datetime, timezone

    ns, cost = cell_share(record, since_ns, until_ns)
    return {
        "gpu": session.label,
        "spec": session.key,
        "host": session.host,
        "cell_ms": ns // 1_000_000,
        "cell_cost_microusd": cost,
        "rate_nusd_per_s": record.rate_nusd_per_s * record.quantity,
        "held_s": record.billed_s,
        "cost_microusd": record.cost_microusd,
        "interval_id": record.id,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "text": f"ran on {session.label} @ {session.host} · {seconds(ns)} · {money(cost)}",
        "session_text": f"session {session.key}: {record.billed_s} s held, {money(record.cost_microusd)} so far",
    }


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


class Report:
    """Sections of tables shown as HTML in a notebook and as text in a terminal."""

    def __init__(self) -> None:
        self.sections: list[tuple[str, list[str], list[list[Any]], str]] = []

    def add(self, title: str, headers: list[str], rows: list[list[Any]], footer: str = "") -> "Report":
        self.sections.append((title, headers, rows, footer))
        return self

    @property
    def text(self) -> str:
        parts = []
        for title, headers, rows, footer in self.sections:
            body = table(headers, rows) if rows else "(none yet)"
            parts.append("\n".join(p for p in (title, body, footer) if p))
        return "\n\n".join(parts)

    def _repr_html_(self) -> str:
        out = []
        for title, headers, rows, footer in self.sections:
            out.append(f"<h4 style='margin:0.6em 0 0.2em'>{html.escape(title)}</h4>")
            if not rows:
                out.append("<p><i>none yet</i></p>")
            else:
                head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            if footer:
                out.append(f"<p><b>{html.escape(footer)}</b></p>")
        return "<div class='burstlab-bill'>" + "".join(out) + "</div>"

    def __repr__(self) -> str:
        return self.text


def bill_section(report: Report, records: list[UsageRecord], title: str, by: tuple[str, ...]) -> Report:
    """Usage grouped ``by`` some of notebook, kind, resource (GPU type) and day, with a total."""
    from burstlab.workspace import group_usage

    grouped = group_usage(records, by)
    gpu_use = any(row.gpu_use for row in grouped)  # a column only where some row holds GPUs
    rows = [[*row.key, row.intervals, row.billed_s, money(row.cost_microusd),
             row.open or "", row.recovered or "", *([row.gpu_use] if gpu_use else [])] for row in grouped]
    total_s = sum(r.billed_s * r.quantity for r in records)
    total = money(sum(r.cost_microusd for r in records))
    headers = [{"resource": "GPU type"}.get(k, k) for k in by] + ["intervals", "billed s", "cost", "open", "recovered",
                                                                 *(["GPU use"] if gpu_use else [])]
    return report.add(title, headers, rows, f"total: {total_s} billed s, {total}")


def bill_table(records: list[UsageRecord], title: str) -> str:
    """Usage grouped by kind and resource, with totals (text)."""
    return bill_section(Report(), records, title, ("kind", "resource")).text


__all__ = ["CELL_MIME", "Publisher", "RemoteValue", "Report", "bill_section", "bill_table", "cell_footer", "cell_record", "cell_share", "money", "table"]
