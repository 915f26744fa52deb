"""Budgets: ``GET budgets``, ``PUT/DELETE budgets/{scope}/{name}``."""

from jupyter_server.auth.decorator import authorized
from tornado import web

from .base import BurstLabHandler, api_errors


class BudgetsHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def get(self):
        self.reply(await self.manager.budgets(self.user))


class BudgetHandler(BurstLabHandler):
    @web.authenticated
    @authorized
    @api_errors
    async def put(self, scope, name):
        self.reply(await self.manager.set_budget(self.user, scope, name, self.json_body()))

    @web.authenticated
    @authorized
    @api_errors
    async def delete(self, scope, name):
        self.reply(await self.manager.remove_budget(self.user, scope, name))
