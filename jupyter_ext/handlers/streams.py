"""NDJSON streams of the sandbox handlers: a run's outputs (``execute``, ``exec``) and a work dir's file events.

A stream begins only once the work was accepted (its first event): a request refused before that (a bad body,
an unknown id, a watch of a path that is not a directory) is an ordinary JSON error with its own status. Once
begun, each event is one JSON object on its own line, flushed as it comes; a failure after that is the stream's
last event, ``{"event": "error", "message": ...}``. What one stream sends is bounded by the service's output cap
(``Maxima.output``), and a watch by its ``timeout`` (at most ``Maxima.wait``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

from tornado.iostream import StreamClosedError

from ..bounds import OutputBudget, marker_output

NDJSON = "application/x-ndjson"


def wants_stream(handler, body: Any) -> bool:
    """Whether a run's request asks for a stream: ``"stream": true`` in its body, or ``Accept: application/x-ndjson``."""
    asked = isinstance(body, dict) and body.get("stream") is True
    return asked or NDJSON in handler.request.headers.get("Accept", "")


def _begin(handler) -> None:
    handler.set_header("Content-Type", NDJSON)
    handler.set_header("Cache-Control", "no-cache")
    handler.set_header("X-Accel-Buffering", "no")


async def send(handler, event: dict) -> bool:
    """Write one event and flush it; False once the client has gone."""
    handler.write(json.dumps(event) + "\n")
    try:
        await handler.flush()
        return True
    except StreamClosedError:
        return False


async def stream_run(handler, start: Callable[[Callable[[Any], None]], Awaitable[dict]], done_key: str,
                     limit: int) -> None:
    """Stream a run: ``start(on_output)`` runs it (``on_output`` takes each Output, on any thread) and returns its
    final record, sent last as ``{"event": "done", done_key: record}``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def on_output(output) -> None:  # called on burstlab's loop
        loop.call_soon_threadsafe(queue.put_nowait, output)

    task = asyncio.ensure_future(start(on_output))
    budget = OutputBudget(limit)  # the outputs streamed; "done" is bounded apart

    async def send_output(output) -> bool:
        kept = budget.take(output.to_json())
        return True if kept is None else await send(handler, {"event": "output", "output": kept})

    started = connected = False
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                break
            if not started:  # the first output: the run was accepted, the stream begins
                started = connected = True
                _begin(handler)
            if connected:
                connected = await send_output(getter.result())
        if not started:
            record = await task  # refused before any output: an ordinary error response
            _begin(handler)
            connected = True
        else:
            while not queue.empty() and connected:
                connected = await send_output(queue.get_nowait())
            if budget.dropped and connected:
                connected = await send(handler, {"event": "output", "output": marker_output(budget.limit, budget.dropped)})
            try:
                record = task.result()
            except Exception as exc:  # the stream has begun: the failure is its last event
                if connected:
                    await send(handler, {"event": "error", "message": str(exc)})
                    handler.finish(set_content_type=NDJSON)
                return
        if connected:
            await send(handler, {"event": "done", done_key: record})
            handler.finish(set_content_type=NDJSON)
    finally:
        if not task.done():  # the client went away: let the run finish, quietly
            task.add_done_callback(lambda t: t.exception())


async def stream_watch(handler, start: Callable[[Callable[[dict], None], Callable[[Callable[[], None]], None]],
                                                Awaitable[str]], limit: int) -> None:
    """Stream a watch: ``start(on_event, set_stop)`` watches until it ends and returns why (``timeout``, ``closed``,
    ``stopped``); it hands ``set_stop`` the function that ends it, which is called when the client goes away or
    the stream passes ``limit`` bytes. The first event (``ready``) begins the stream; ``end`` is its last."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stopper: list[Callable[[], None]] = []

    def on_event(event: dict) -> None:  # called on burstlab's loop
        loop.call_soon_threadsafe(queue.put_nowait, event)

    stopped: list[bool] = []

    def stop() -> None:
        stopped.append(True)
        for fn in stopper:
            fn()

    def set_stop(fn: Callable[[], None]) -> None:  # the watch says how to end it (on burstlab's loop)
        stopper.append(fn)
        if stopped:
            fn()

    handler.stream_stop = stop  # the handler's on_connection_close calls it
    task = asyncio.ensure_future(start(on_event, set_stop))
    started = connected = False
    sent, reason = 0, ""
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                break
            event = getter.result()
            if not started:
                started = connected = True
                _begin(handler)
            if not connected or reason:
                continue
            line = {"event": event["event"], "path": event.get("path", ""), "dir": bool(event.get("dir")),
                    "reason": None}
            sent += len(json.dumps(line)) + 1
            if sent > limit:
                reason = "output"
                stop()
                continue
            connected = await send(handler, line)
            if not connected:
                stop()
        try:
            why = await task
        except Exception as exc:
            if not started:  # refused before the watch was in place: an ordinary error response
                raise
            if connected:
                await send(handler, {"event": "end", "path": "", "dir": False, "reason": f"error: {exc}"})
                handler.finish(set_content_type=NDJSON)
            return
        if not started:
            _begin(handler)
            connected = True
        if connected:
            await send(handler, {"event": "end", "path": "", "dir": False, "reason": reason or why})
            handler.finish(set_content_type=NDJSON)
    finally:
        if not task.done():
            stop()
            task.add_done_callback(lambda t: t.exception())


__all__ = ["NDJSON", "send", "stream_run", "stream_watch", "wants_stream"]
