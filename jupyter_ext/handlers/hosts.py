"""``GET hosts``: the GPU inventory."""

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import BurstLabHandler, api_errors


class HostsHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self):
        self.reply(await self.manager.hosts(self.user))
