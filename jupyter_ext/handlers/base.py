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

from ..auth import BurstLabIdentityProvider, grant, is_operator, request_token, table_of
from burstlab.workspace import format_size

from ..bounds import parse_json
from ..errors import ApiError, NotFound, PayloadTooLarge



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


@web.stream_request_body
class BurstLabHandler(APIHandler):
    """Base of the REST handlers: ``self.manager``, ``self.user``, ``self.json_body()``.

    Bodies are streamed (``@stream_request_body``), so nothing of a body is read before ``prepare``
    has checked its declared size and the token: a body over the maximum is a 413 and an unknown
    token a 403 before the first byte of it; a chunked body is read only up to the maximum."""

    auth_resource = "burstlab"

    def body_limit(self) -> int:
        """The largest body this request may send (``c.BurstLabApp.max_request_body``)."""
        return self.manager.maxima.body

    def _body_too_large(self, size: int) -> PayloadTooLarge:
        limit = self.body_limit()
        return PayloadTooLarge(f"The request body is {size:,} bytes; JSON bodies are limited to {format_size(limit)} "
                               "(c.BurstLabApp.max_request_body). Upload large data with PUT sandboxes/ID/files/PATH.")

    def _refuse(self, exc: ApiError) -> None:
        raise web.HTTPError(exc.status, log_message=exc.message, reason=exc.reason)

    def data_received(self, chunk: bytes) -> None:
        self._body_size += len(chunk)
        if self._body_size > self.body_limit():
            self._body_chunks = []  # the connection's own limit closes it at the same size
            return
        self._body_chunks.append(chunk)

    @property
    def manager(self):
        return self.settings["burstlab_manager"]

    async def prepare(self):
        self._body_chunks: list[bytes] = []
        self._body_size = 0
        limit = self.body_limit()
        declared = self.request.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            self._refuse(self._body_too_large(int(declared)))
        if self.request.connection is not None and hasattr(self.request.connection, "set_max_body_size"):
            self.request.connection.set_max_body_size(limit)  # chunked bodies: read no further than this
        # Inside an ordinary Jupyter server the identity provider is the server's own; the token the
        # server gave its kernels (BURSTLAB_TOKEN) is ours to recognise, here, on our handlers only.
        table = table_of(self)
        if table is not None and not isinstance(self.identity_provider, BurstLabIdentityProvider):
            found = table.lookup(request_token(self))
            if found is not None:
                grant(self, found)
                self._jupyter_current_user = User(username=found.user, name=found.user, display_name=found.user)
                self._token_authenticated = True
        await super().prepare()
        if not self.current_user:  # refused before a byte of the body is read
            raise web.HTTPError(403)

    @property
    def operator(self) -> bool:
        """Whether the caller is the operator (the server's own identity or its kernels' token)."""
        return is_operator(self)

    @property
    def user(self) -> str:
        """Whose objects this request may see: the token's user, else the server's own user."""
        return getattr(self, "_burstlab_user", None) or self.manager.owner

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:  # RFC 9110: a 405 names the methods that are allowed
            allowed = [m for m in ("GET", "POST", "PUT", "DELETE")
                       if getattr(type(self), m.lower()) is not getattr(web.RequestHandler, m.lower())]
            self.set_header("Allow", ", ".join(allowed))
        exc = (kwargs.get("exc_info") or (None, None))[1]
        if isinstance(exc, web.HTTPError) and exc.log_message:
            # tornado hands back every % of a message given without arguments doubled (it is a format string),
            # and jupyter_server's APIHandler would send it so ("%%%%gpu"): send the message as it was written.
            message = exc.log_message % exc.args
            self.set_header("Content-Type", "application/json")
            self.finish(json.dumps({"message": message, "reason": exc.reason}))
            return
        super().write_error(status_code, **kwargs)

    def json_body(self) -> Any:
        if self._body_size > self.body_limit():
            raise self._body_too_large(self._body_size)
        body, self._body_chunks = b"".join(self._body_chunks), []
        if not body.strip():
            return {}
        return parse_json(body)

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
