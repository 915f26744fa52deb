"""``GET openapi.json``: the OpenAPI document, with this server's base URL."""

from jupyter_server.auth.decorator import authorized
from tornado import web

from .. import openapi
from .base import BurstLabHandler, api_errors


class OpenApiHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self):
        from burstlab import __version__

        self.reply(openapi.document(self.base_url, __version__, self.manager.maxima))
