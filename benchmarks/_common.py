"""Small helpers shared by the benchmarks: timing, statistics, markdown tables."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def timeit(fn: Callable[[], object], n: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``n`` calls of ``fn`` (after ``warmup`` discarded calls)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p95(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]


def row(label: str, xs: list[float], unit: str = "ms", scale: float = 1e3) -> list[str]:
    return [label, str(len(xs)), f"{median(xs) * scale:.2f}", f"{p95(xs) * scale:.2f}", unit]


def print_table(title: str, rows: list[list[str]], headers=("measurement", "n", "median", "p95", "unit")) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join("---" for _ in headers) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def ratio(label: str, ours: float, theirs: float, goal: str = "") -> str:
    line = f"- {label}: {ours / theirs:.2f}x"
    return line + (f" (goal {goal})" if goal else "")
