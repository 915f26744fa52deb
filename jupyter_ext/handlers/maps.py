"""Fan-outs: ``GET maps``, ``DELETE maps/{id}`` (cancel)."""

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import BurstLabHandler, api_errors


class MapsHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self):
        self.reply(await self.manager.list_maps(self.user))


class MapHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def delete(self, id):
        self.reply(await self.manager.cancel_map(self.user, id, via=self.get_query_argument("from", "")))
