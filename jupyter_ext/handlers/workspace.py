"""``GET workspace``: the caller's user, the version, and for the operator the Dask scheduler kernels join."""

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import BurstLabHandler, api_errors


class WorkspaceHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self):
        self.reply(await self.manager.workspace(self.user, operator=self.operator))
