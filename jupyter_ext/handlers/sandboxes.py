"""Sandboxes: ``GET/POST sandboxes``, ``GET/DELETE sandboxes/{id}``, ``POST sandboxes/{id}/execute[?stream=1]``,
``POST sandboxes/{id}/exec``.

With ``?stream=1`` the execute answers ``application/x-ndjson``: ``{"event": "output", "output": ...}``
per output as the kernel produces it, then ``{"event": "done", "execution": ...}``; an exec with ``"stream": true``
(or ``Accept: application/x-ndjson``) the same, ending with ``{"event": "done", "result": ExecResult}``. A request
that is refused (bad body, unknown id) is refused before the stream starts, with an ordinary JSON error
(``streams.py``).
"""

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import BadRequest
from .base import BurstLabHandler, api_errors
from .files import FilesHandler
from .streams import stream_run, stream_watch, wants_stream


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
        body = self.json_body()
        if not wants_stream(self, body):
            self.reply(await self.manager.exec_sandbox(self.user, id, body))
            return
        await stream_run(self, lambda on_output: self.manager.exec_sandbox(self.user, id, body, on_output), "result",
                         self.manager.maxima.output)


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
        await stream_run(self, lambda on_output: self.manager.execute_sandbox(self.user, id, body, on_output),
                         "execution", self.manager.maxima.output)


class SandboxWatchHandler(FilesHandler):
    """``GET sandboxes/{id}/files/watch?path=P[&timeout=S]``: the work dir's file events as NDJSON ``FileEvent``s.
    Without ``path`` (and for PUT/DELETE) it is the file named ``watch`` in the work dir, as any other file."""

    @web.authenticated
    @authorized
    @api_errors
    async def get(self, id, path=None):
        where = self.get_argument("path", None)
        if where is None:
            return await super().get(id, "watch")
        timeout = self.get_argument("timeout", None)
        try:
            seconds = None if timeout is None else float(timeout)
        except ValueError:
            raise BadRequest(f"timeout={timeout!r}: give a number of seconds.") from None
        await stream_watch(self, lambda on_event, set_stop: self.manager.watch_files(
            self.user, id, where, seconds, on_event, set_stop), self.manager.maxima.output)

    async def put(self, id, path=None):
        return await super().put(id, "watch")

    async def delete(self, id, path=None):
        return await super().delete(id, "watch")

    def on_connection_close(self):
        stop = getattr(self, "stream_stop", None)
        if stop is not None:
            stop()
        super().on_connection_close()
