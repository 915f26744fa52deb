"""``GET usage?notebook=&kind=&since=&until=``: the caller's ledger rows and totals."""

import math

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..errors import BadRequest
from ..openapi import MAX_TIME
from .base import BurstLabHandler, api_errors


class UsageHandler(BurstLabHandler):
    def _time(self, name: str):
        raw = self.get_argument(name, None)
        if raw is None:  # absent; an empty value is not a time (the document says number)
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or not 0 <= value <= MAX_TIME:
            raise BadRequest(f"{name}={raw!r} is not a time; give seconds since the epoch, e.g. {name}=1764000000.")
        return value

    @web.authenticated
    @authorized
    @api_errors
    async def get(self):
        self.reply(await self.manager.usage(
            self.user, notebook=self.get_argument("notebook", None) or None,
            kind=self.get_argument("kind", None) or None, since=self._time("since"), until=self._time("until")))
