"""A map's progress: one live widget in a notebook, one rewritten line in a terminal, two lines in a log.

Never a line per input: a terminal line is redrawn in place at most every ``interval`` seconds, and
output that is not a terminal (CI logs, files) gets a line at the start and one at the end.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from burstlab.wire import usd


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def summary(name: str, total: int | None, done: int, failed: int, retried: int, workers: int, elapsed: float,
            cost_microusd: int, estimate_microusd: int | None = None, *, setup_s: float = 0.0,
            eta_s: float | None = None, reused: int = 0) -> str:
    """The one line of text shown everywhere (pure). ``estimate_microusd``: what the inputs not yet
    finished should cost, from the measured time per input (shown once known). ``setup_s``: seconds the
    workers spent in ``@burstlab.enter``; ``eta_s``: seconds to the last input; ``reused``: inputs whose
    results came from the checkpoint (each shown only when there is something to say)."""
    of = f"/{total}" if total is not None else ""
    parts = [f"{name}: {done + failed}{of} done"]
    if reused:
        parts.append(f"{reused} from checkpoint")
    if failed:
        parts.append(f"{failed} failed")
    if retried:
        parts.append(f"{retried} retried")
    parts.append(f"{workers} worker{'s' if workers != 1 else ''} up")
    if setup_s:
        parts.append(f"set-up {setup_s:.1f} s")
    parts.append(f"{elapsed:.1f} s")
    if eta_s is not None and total is not None and done + failed < total:
        parts.append(f"ETA {_duration(eta_s)}")
    parts.append(usd(cost_microusd))
    if estimate_microusd is not None:
        parts.append(f"est. {usd(cost_microusd + estimate_microusd)} in all")
    return " | ".join(parts)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


class Progress:
    """Shows one map's progress; ``update`` is cheap to call often."""

    def __init__(self, name: str, total: int | None, stream: TextIO | None = None, interval: float = 0.2,
                 widget: bool = False):
        self.name = name
        self.total = total
        self.stream = stream or sys.stderr
        self.interval = interval
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0
        self._bar = self._label = None
        self.lines = 0  # lines written (tests assert it stays small)
        if widget:
            import ipywidgets
            from IPython.display import display

            self._bar = ipywidgets.IntProgress(min=0, max=max(1, total or 1), description=name[:20])
            self._label = ipywidgets.HTML()
            display(ipywidgets.HBox([self._bar, self._label]))
        elif not self.tty:
            self._write(f"{name}: started{f' ({total} inputs)' if total is not None else ''}\n")

    @classmethod
    def make(cls, progress: Any, name: str, total: int | None) -> "Progress | None":
        """``progress``: None (show it), False (don't), True, or a text stream to write to."""
        if progress is False:
            return None
        if hasattr(progress, "write"):
            return cls(name, total, stream=progress)
        if _in_notebook():
            try:
                return cls(name, total, widget=True)
            except ImportError:  # ipywidgets missing: plain text
                pass
        return cls(name, total)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
        self.lines += text.count("\n")

    def update(self, *, done: int, failed: int, retried: int, workers: int, elapsed: float, cost_microusd: int,
               final: bool = False, estimate_microusd: int | None = None, setup_s: float = 0.0,
               eta_s: float | None = None, reused: int = 0) -> None:
        now = time.monotonic()
        if not final and now - self._last < self.interval:
            return
        self._last = now
        line = summary(self.name, self.total, done, failed, retried, workers, elapsed, cost_microusd, estimate_microusd,
                       setup_s=setup_s, eta_s=eta_s, reused=reused)
        if self._bar is not None:
            if self.total is None:
                self._bar.max = max(self._bar.max, done + failed + 1)
            self._bar.value = done + failed
            self._bar.bar_style = "danger" if failed else ("success" if final else "")
            self._label.value = line.split(": ", 1)[1]
        elif self.tty:
            self._write("\r" + line + ("\n" if final else ""))
        elif final:
            self._write(line + "\n")


__all__ = ["Progress", "summary"]
