"""Pure decisions of a map: how big the next chunk is, how many chunks fly, whether to retry, what it cost.

No I/O here; the engine (``_engine.py``) asks and acts.
"""

from __future__ import annotations

from dataclasses import dataclass

from burstlab.billing import billed_seconds, cost_microusd

TARGET_CHUNK_S = 0.2  # aim for chunks that run this long: per-task overhead (~1-10 ms) stays a few percent
MIN_CHUNK_S = 0.02  # splitting the last inputs among workers stops where chunks would run shorter than this
CHUNK_BUDGET_S = 1.0  # a worker stops a chunk after this long and hands back the inputs it did not reach
MAX_CHUNK = 50_000  # never more inputs than this in one task (one results buffer stays a few MB)
MAX_CHUNK_STREAM = 2_000  # ... when the inputs are a generator of unknown length (read-ahead stays bounded)
GROWTH = 65_536  # a chunk is at most this many times bigger than the one before (the budget bounds a misjudgement)
FIRST_BUDGET_S = 0.1  # before the function is timed, a chunk stops after this long and hands back the rest
FIRST_BYTES = 1 << 20  # ... and is that large only while all of them pickle to at most this many bytes


def chunk_size(per_item_s: float | None, previous: int, slots: int, remaining: int | None,
               target_s: float = TARGET_CHUNK_S, max_size: int = MAX_CHUNK) -> int:
    """Inputs in the next chunk, from the measured seconds per input (None before the first result)."""
    if per_item_s is None:
        return 1
    ideal = max(1, int(target_s / max(per_item_s, 1e-7)))
    size = min(ideal, max(1, previous) * GROWTH, max_size)
    if remaining is None:
        size = min(size, MAX_CHUNK_STREAM)
    elif slots > 0:  # leave work for every worker, unless that makes chunks too short to be worth a task
        floor = max(1, int(MIN_CHUNK_S / max(per_item_s, 1e-7)))
        size = min(size, max(-(-remaining // slots), floor), max(1, remaining))
    return max(1, size)


@dataclass(frozen=True)
class Retries:
    """``retries=burstlab.Retries(3, backoff=2.0, initial=1.0)``: up to ``max_retries`` extra attempts per
    input, the n-th after ``initial * backoff**(n-1)`` seconds (at most ``max_delay``). Infrastructure
    failures (a worker died) are always retried; the function's own exceptions when their type is in
    ``retry_on`` (default: any ``Exception``)."""

    max_retries: int
    backoff: float = 2.0
    initial: float = 1.0
    max_delay: float = 60.0
    retry_on: tuple = (Exception,)

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff < 1.0 or self.initial < 0 or self.max_delay < 0:
            raise ValueError(f"{self!r}: give max_retries >= 0, backoff >= 1, initial and max_delay >= 0 seconds.")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before the attempt after failed attempt number ``attempt`` (1-based)."""
        return min(self.max_delay, self.initial * self.backoff ** max(0, attempt - 1))


def first_chunk_size(remaining: int | None, slots: int, item_bytes: int) -> int:
    """Inputs in each of the first chunks, one per worker, sent before the function has been timed.

    Each holds an even share of the inputs and stops after ``FIRST_BUDGET_S``, handing back what it did not
    reach: a trivial function finishes the whole map in one round trip per worker (no one-input probe first),
    a slow one runs one input per worker, as a probe would. Large inputs (``item_bytes``, one pickled) or a
    generator of unknown length: one input."""
    if remaining is None or remaining <= 1 or item_bytes * remaining > FIRST_BYTES:
        return 1
    return max(1, min(MAX_CHUNK, -(-remaining // max(1, slots))))


def window(slots: int) -> int:
    """Chunks in flight at once: enough to keep every slot busy while results travel back."""
    return 2 * max(1, slots) + 1


def update_rate(old: float | None, seconds: float, count: int, weight: float = 0.5,
                old_count: int = 0) -> float | None:
    """Seconds per input, smoothed over chunks. A chunk of many more inputs than the last measurement
    (``old_count``) replaces it: a first chunk of one input also timed the function's unpickling."""
    if count <= 0:
        return old
    sample = seconds / count
    if old is None or count >= 4 * old_count > 0:
        return sample
    return (1 - weight) * old + weight * sample


def should_retry(attempts: int, retries: int, infrastructure: bool, exc: BaseException | None,
                 retry_on: tuple[type[BaseException], ...]) -> bool:
    """Whether an input that failed on its ``attempts``-th attempt runs again."""
    if attempts > retries:
        return False
    if infrastructure:
        return True
    return bool(retry_on) and exc is not None and isinstance(exc, retry_on)


@dataclass
class Span:
    """The part of a map one worker spent: from its first chunk's start to its last chunk's end."""

    start_ns: int
    stop_ns: int

    def extend(self, start_ns: int, stop_ns: int) -> None:
        self.start_ns = min(self.start_ns, start_ns)
        self.stop_ns = max(self.stop_ns, stop_ns)


def spans_cost_microusd(spans: dict[str, Span], rate_nusd_per_s: int, quantity: int = 1) -> int:
    """What the spans cost at one rate, billed as the ledger will bill them (whole seconds, min 1)."""
    return sum(cost_microusd(billed_seconds(s.start_ns, s.stop_ns), rate_nusd_per_s, quantity) for s in spans.values())


__all__ = ["CHUNK_BUDGET_S", "FIRST_BUDGET_S", "MAX_CHUNK", "first_chunk_size", "TARGET_CHUNK_S", "Retries", "Span", "chunk_size", "should_retry", "spans_cost_microusd",
           "update_rate", "window"]
