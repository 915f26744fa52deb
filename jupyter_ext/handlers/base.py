"""What every burstlab handler shares: the caller's user, JSON bodies, and the one map from errors to statuses.

Each verb of each handler carries ``@web.authenticated`` and ``@authorized`` (resource ``burstlab``),
then ``@api_errors``, which turns the manager's :class:`~burstlab.jupyter_ext.errors.ApiError` and
burstlab's errors into JSON responses (``{"message", "reason"}``) with a specific status each. An
exception nobody expected is left to jupyter_server (a 500, logged): it is a bug, not an answer.
"""

from __future__ import annotations

import functools
import json
from http import HTTPStatus
from typing import Any

from jupyter_server.auth import User
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from burstlab.errors import BurstlabError, http_status

from ..auth import BurstLabIdentityProvider, request_token, table_of
from ..errors import ApiError, BadRequest, NotFound, PayloadTooLarge

MAX_JSON_BODY = 16 * 1024 * 1024



def api_errors(method):
    """Translate the manager's and burstlab's errors into HTTP errors, at this one boundary."""

    @functools.wraps(method)
    async def inner(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except ApiError as exc:
            raise web.HTTPError(exc.status, log_message=exc.message, reason=exc.reason) from None
        except BurstlabError as exc:
            # burstlab.errors.HTTP_STATUS, the one table of this boundary: a platform failure not in it (a
            # scheduler out of reach, a sandbox that cannot start) is a 503.
            status = http_status(exc)
            raise web.HTTPError(status, log_message=str(exc), reason=HTTPStatus(status).phrase) from None

    return inner


class BurstLabHandler(APIHandler):
    """Base of the REST handlers: ``self.manager``, ``self.user``, ``self.json_body()``."""

    auth_resource = "burstlab"

    @property
    def manager(self):
        return self.settings["burstlab_manager"]

    async def prepare(self):
        # Inside an ordinary Jupyter server the identity provider is the server's own; the token the
        # server gave its kernels (BURSTLAB_TOKEN) is ours to recognise, here, on our handlers only.
        table = table_of(self)
        if table is not None and not isinstance(self.identity_provider, BurstLabIdentityProvider):
            found = table.lookup(request_token(self))
            if found is not None:
                name, self._burstlab_agent = found
                self._burstlab_user = name
                self._jupyter_current_user = User(username=name, name=name, display_name=name)
                self._token_authenticated = True
        await super().prepare()

    @property
    def user(self) -> str:
        """Whose objects this request may see: the token's user, else the server's own user."""
        return getattr(self, "_burstlab_user", None) or self.manager.owner

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:  # RFC 9110: a 405 names the methods that are allowed
            allowed = [m for m in ("GET", "POST", "PUT", "DELETE")
                       if getattr(type(self), m.lower()) is not getattr(web.RequestHandler, m.lower())]
            self.set_header("Allow", ", ".join(allowed))
        super().write_error(status_code, **kwargs)

    def json_body(self) -> Any:
        body = self.request.body or b""
        if len(body) > MAX_JSON_BODY:
            raise PayloadTooLarge(f"The request body is {len(body):,} bytes; JSON bodies are limited to "
                                  f"{MAX_JSON_BODY:,} (16 MiB). Upload large data with PUT sandboxes/ID/files/PATH.")
        if not body.strip():
            return {}
        try:
            return json.loads(body)
        except ValueError as exc:
            raise BadRequest(f"The request body is not valid JSON ({exc}); send a JSON object.") from None

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data))  # APIHandler.finish sets application/json


class NotFoundHandler(BurstLabHandler):
    """Any other path under ``burstlab/api/``: a JSON 404 naming where the API is described."""

    @web.authenticated
    @authorized
    @api_errors
    async def _not_found(self, *args, **kwargs):
        raise NotFound(f"No such burstlab API path: {self.request.path}. GET {self.base_url}burstlab/api/openapi.json "
                       "lists them.")

    get = post = put = delete = patch = _not_found
