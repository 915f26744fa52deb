"""Sandbox files: ``GET/PUT/DELETE sandboxes/{id}/files/{path}``.

``PUT`` streams the body (``@stream_request_body``): it is counted as it arrives and never held past
the sandbox's ``max_upload``; the token is checked before a byte of it is read.
"""

from jupyter_server.auth.decorator import authorized
from tornado import web

from burstlab.workspace import Limits

from ..errors import NotFound, PayloadTooLarge
from .base import BurstLabHandler, api_errors


@web.stream_request_body
class FilesHandler(BurstLabHandler):
    def body_limit(self) -> int:
        # Before the token is known: the largest upload any sandbox takes (then the sandbox's own, below).
        return Limits().max_upload if self.request.method == "PUT" else super().body_limit()

    async def prepare(self):
        await super().prepare()
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = 0
        self._refusal: Exception | None = None
        if self.request.method != "PUT":
            return
        try:
            self._limit = self.manager.upload_limit(self.user, self.path_kwargs["id"])
        except NotFound as exc:
            self._refusal = exc
            return
        declared = self.request.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self._limit:
            self._refusal = self._too_large(int(declared))

    def _too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"The upload is {size:,} bytes, over this sandbox's max_upload of {self._limit:,}; "
                               "send a smaller file, or create the sandbox with a larger max_upload.")

    def data_received(self, chunk: bytes) -> None:
        if self._refusal is not None:
            return
        self._size += len(chunk)
        if self._size > self._limit:
            self._refusal = self._too_large(self._size)
            self._chunks = []
            return
        self._chunks.append(chunk)

    @web.authenticated
    @authorized
    @api_errors
    async def get(self, id, path=None):
        data = await self.manager.read_file(self.user, id, path or "")
        if isinstance(data, dict):
            self.reply(data)
            return
        self.finish(data, set_content_type="application/octet-stream")

    @web.authenticated
    @authorized
    @api_errors
    async def put(self, id, path=None):
        if self._refusal is not None:
            raise self._refusal
        data, self._chunks = b"".join(self._chunks), []
        self.reply(await self.manager.write_file(self.user, id, path or "", data))

    @web.authenticated
    @authorized
    @api_errors
    async def delete(self, id, path=None):
        self.reply(await self.manager.remove_file(self.user, id, path or ""))
