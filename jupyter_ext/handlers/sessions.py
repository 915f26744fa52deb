"""GPU sessions: ``GET/POST sessions``, ``GET/DELETE sessions/{id}``, ``POST sessions/{id}/execute``."""

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import BadRequest
from .base import BurstLabHandler, api_errors


class SessionsHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self):
        # ?ended=1: also the sessions that ended in the last few minutes, saying who or what ended each (the lab).
        ended = self.get_query_argument("ended", "0")
        if ended not in ("0", "1"):
            raise BadRequest(f"ended={ended!r}: give ended=1 (also the sessions ended in the last 5 minutes) or 0.")
        self.reply(await self.manager.list_sessions(self.user, ended=ended == "1"))

    @web.authenticated
    @authorized
    @api_errors
    async def post(self):
        self.reply(await self.manager.create_session(self.user, self.json_body()), 201)


class SessionHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self, id):
        self.reply(await self.manager.get_session(self.user, id))

    @web.authenticated
    @authorized
    @api_errors
    async def delete(self, id):
        # ?from=panel: the lab's panel asked, so the notebook's next cell says so in those words.
        self.reply(await self.manager.stop_session(self.user, id, via=self.get_query_argument("from", "")))


class SessionExecuteHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def post(self, id):
        self.reply(await self.manager.execute_session(self.user, id, self.json_body()))
