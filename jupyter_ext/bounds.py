"""Bounds at the API's edge: request bodies parsed without surprises, responses cut to a size.

- :func:`parse_json` reads a request body: ``NaN``, ``Infinity`` and numbers that overflow to infinity
  come back as :class:`NonFinite` (no schema accepts one, so validation refuses it naming the field),
  nesting deeper than :data:`MAX_DEPTH`, more than :data:`MAX_VALUES` values and lone surrogates
  (``"\\ud800"``) are a 400.
- :func:`bound_execution` cuts an execution's JSON to a number of bytes, the way it goes out of a REST
  response or an MCP tool result, ending with a marker that says what was dropped.
- :class:`OutputBudget` counts what a streaming response has sent.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import BadRequest

MAX_DEPTH = 64  # no request body of this API nests deeper than 4
MAX_VALUES = 10_000  # nor holds more than a few dozen values (a body's size is bounded apart: max_request_body)


class NonFinite:
    """``NaN``, ``Infinity``, ``-Infinity`` (or ``1e400``) in a request: not a JSON number this API takes."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _float(text: str) -> float | NonFinite:
    value = float(text)
    return value if math.isfinite(value) else NonFinite(text)


def parse_json(raw: bytes) -> Any:
    """The body's JSON value, or BadRequest saying why not."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"The request body is not UTF-8 ({exc.reason} at byte {exc.start}); send UTF-8 JSON.") from None
    try:
        value = json.loads(text, parse_constant=NonFinite, parse_float=_float)
    except RecursionError:
        raise BadRequest(f"The request body nests too deeply; no field of this API nests deeper than {MAX_DEPTH}.") from None
    except ValueError as exc:  # JSONDecodeError, or an integer with more digits than Python converts
        raise BadRequest(f"The request body is not valid JSON ({_short(str(exc))}); send a JSON object.") from None
    _check(value)
    return value


def _check(value: Any) -> None:
    """Depth and text, depth-first with one frame per level (memory grows with the depth, never the size)."""
    if isinstance(value, str):
        _text(value, "body")
    if not isinstance(value, (dict, list)):
        return
    stack: list[tuple[Any, Any]] = [(_items(value), None)]  # (iterator over (key, item), this container's key)

    def where(key: Any) -> str:
        return "/".join(str(k) for _, k in stack[1:]) + ("/" if len(stack) > 1 else "") + str(key)

    count = 0
    while stack:
        for key, item in stack[-1][0]:
            count += 1
            if count > MAX_VALUES:
                raise BadRequest(f"The request body holds more than {MAX_VALUES:,} values; no request of this API "
                                 "needs so many.")
            if isinstance(key, str):
                _text(key, where(key) + " (a key)")
            if isinstance(item, str):
                _text(item, where(key))
            elif isinstance(item, (dict, list)):
                if len(stack) >= MAX_DEPTH:
                    raise BadRequest(f"{_short(where(key))}: nested deeper than {MAX_DEPTH} levels; no field of this "
                                     "API nests so deep.")
                stack.append((_items(item), key))
                break
        else:
            stack.pop()


def _items(container: dict | list):
    return iter(container.items()) if isinstance(container, dict) else enumerate(container)


def _text(s: str, where: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:
        where = where.encode("utf-8", "backslashreplace").decode("utf-8")  # the message must be text itself
        raise BadRequest(f"{_short(where)}: holds a lone surrogate (\\u{ord(s[exc.start]):04x} at character {exc.start}), "
                         "which is not text; send valid Unicode.") from None


def _short(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + "..."


# -- outputs going out ------------------------------------------------------------------------------

MAX_ERROR_TEXT = 64 * 1024  # characters of an error's value and of each traceback line
MAX_TRACEBACK_LINES = 200


def size_of(value: Any) -> int:
    """Bytes of ``value`` as JSON (what it costs in a response)."""
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def marker(limit: int, dropped: int) -> str:
    return (f"\n[burstlab: this response's output limit of {limit:,} bytes was reached; {dropped:,} more bytes of "
            "output were dropped]\n")


def marker_output(limit: int, dropped: int) -> dict:
    return {"kind": "stream", "name": "stderr", "text": marker(limit, dropped), "data": {}, "metadata": {}}


class OutputBudget:
    """Bytes of output one response may still carry."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.dropped = 0

    def take(self, output: dict) -> dict | None:
        """``output`` (a stream's text cut to what is left), or None once the budget is spent (after the first
        output it could not keep whole, nothing more is kept: no gaps in what is shown)."""
        if self.dropped:
            self.dropped += size_of(output)
            return None
        size = size_of(output)
        if self.used + size <= self.limit:
            self.used += size
            return output
        room = self.limit - self.used
        if output.get("kind") == "stream" and room > 200:
            text = output.get("text", "")
            keep = text[: max(0, (room - 200) // 6)]  # JSON escapes a character to at most 6 bytes
            cut = {**output, "text": keep}
            self.used += size_of(cut)
            self.dropped += size - size_of(cut)
            return cut
        self.used = self.limit
        self.dropped += size
        return None


def bound_error(error: dict | None) -> dict | None:
    if not error:
        return error
    tb = [_clip(str(line)) for line in list(error.get("traceback") or [])[-MAX_TRACEBACK_LINES:]]
    return {**error, "ename": _clip(str(error.get("ename", "")), 256), "evalue": _clip(str(error.get("evalue", ""))),
            "traceback": tb}


def _clip(text: str, n: int = MAX_ERROR_TEXT) -> str:
    return text if len(text) <= n else text[:n] + f"... [{len(text) - n:,} more characters]"


def bound_execution(data: dict, limit: int) -> dict:
    """An Execution's JSON with at most ``limit`` bytes of outputs; a marker output says what was dropped."""
    budget = OutputBudget(limit)
    kept = []
    for output in data.get("outputs") or []:
        cut = budget.take(output)
        if cut is not None:
            kept.append(cut)
    if budget.dropped:
        kept.append(marker_output(limit, budget.dropped))
    return {**data, "outputs": kept, "error": bound_error(data.get("error"))}


__all__ = ["MAX_DEPTH", "NonFinite", "OutputBudget", "bound_execution", "parse_json", "size_of"]
