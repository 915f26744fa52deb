"""Templates: ``GET/POST templates``, ``DELETE templates/{id}`` (the caller's own; ``manager_agent.py``)."""

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import BurstLabHandler, api_errors


class TemplatesHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self):
        self.reply(self.manager.list_templates(self.user))

    @web.authenticated
    @authorized
    @api_errors
    async def post(self):
        self.reply(await self.manager.create_template(self.user, self.json_body()), 201)


class TemplateHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def delete(self, id):
        self.reply(await self.manager.delete_template(self.user, id))
