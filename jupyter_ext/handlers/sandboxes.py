"""Sandboxes: ``GET/POST sandboxes``, ``GET/DELETE sandboxes/{id}``, ``POST sandboxes/{id}/execute[?stream=1]``, ``POST sandboxes/{id}/exec``.

With ``?stream=1`` the execute answers ``application/x-ndjson``: ``{"event": "output", "output": ...}``
per output as the kernel produces it, then ``{"event": "done", "execution": ...}``. A request that is
refused (bad body, unknown id) is refused before the stream starts, with an ordinary JSON error.
"""

import asyncio
import json

from jupyter_server.auth.decorator import authorized
from tornado import web
from tornado.iostream import StreamClosedError

from ..bounds import OutputBudget, marker_output
from ..errors import BadRequest
from .base import BurstLabHandler, api_errors


class SandboxesHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self):
        self.reply(self.manager.list_sandboxes(self.user))

    @web.authenticated
    @authorized
    @api_errors
    async def post(self):
        self.reply(await self.manager.create_sandbox(self.user, self.json_body(), self.get_argument("from", None)), 201)


class SandboxHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self, id):
        self.reply(self.manager.get_sandbox(self.user, id))

    @web.authenticated
    @authorized
    @api_errors
    async def delete(self, id):
        self.reply(await self.manager.close_sandbox(self.user, id))


class SandboxInterruptHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def post(self, id):
        self.reply(await self.manager.interrupt_sandbox(self.user, id))


class SandboxSnapshotHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def post(self, id):
        self.reply(await self.manager.snapshot_sandbox(self.user, id, self.json_body()), 201)


class SnapshotsHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self):
        self.reply(self.manager.list_snapshots(self.user))


class SnapshotHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def delete(self, id):
        self.reply(self.manager.delete_snapshot(self.user, id))


class SandboxMetricsHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self, id):
        self.reply(self.manager.sandbox_metrics(self.user, id))


class SandboxExecHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def post(self, id):
        self.reply(await self.manager.exec_sandbox(self.user, id, self.json_body()))


class SandboxExecuteHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def post(self, id):
        stream = self.get_argument("stream", "0")
        if stream not in ("0", "1"):
            raise BadRequest(f"stream={stream!r}: give stream=1 for NDJSON events, or leave it out.")
        body = self.json_body()
        if stream == "0":
            self.reply(await self.manager.execute_sandbox(self.user, id, body))
            return
        await self._stream(id, body)

    async def _stream(self, id, body):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def on_output(output):  # called on burstlab's loop
            loop.call_soon_threadsafe(queue.put_nowait, output)

        task = asyncio.ensure_future(self.manager.execute_sandbox(self.user, id, body, on_output))
        budget = OutputBudget(self.manager.maxima.output)  # the outputs streamed; "done" is bounded apart
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
                    self.set_header("Content-Type", "application/x-ndjson")
                    self.set_header("Cache-Control", "no-cache")
                    self.set_header("X-Accel-Buffering", "no")
                if connected:
                    connected = await self._send_output(budget, getter.result())
            if not started:
                execution = await task  # refused before any output: an ordinary error response
                self.set_header("Content-Type", "application/x-ndjson")
                connected = True
            else:
                while not queue.empty() and connected:
                    connected = await self._send_output(budget, queue.get_nowait())
                if budget.dropped and connected:
                    connected = await self._send({"event": "output", "output": marker_output(budget.limit, budget.dropped)})
                try:
                    execution = task.result()
                except Exception as exc:  # the stream has begun: the failure is its last event
                    if connected:
                        await self._send({"event": "error", "message": str(exc)})
                        self.finish(set_content_type="application/x-ndjson")
                    return
            if connected:
                await self._send({"event": "done", "execution": execution})
                self.finish(set_content_type="application/x-ndjson")
        finally:
            if not task.done():  # the client went away: let the run finish, quietly
                task.add_done_callback(lambda t: t.exception())

    async def _send_output(self, budget: OutputBudget, output) -> bool:
        kept = budget.take(output.to_json())
        return True if kept is None else await self._send({"event": "output", "output": kept})

    async def _send(self, event) -> bool:
        self.write(json.dumps(event) + "\n")
        try:
            await self.flush()
            return True
        except StreamClosedError:
            return False
