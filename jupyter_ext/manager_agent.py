"""What agents build on sandboxes, as :class:`~burstlab.jupyter_ext.manager.Manager` methods (a mixin, to keep
manager.py about the sandboxes' life): file watches, and templates named by id.

Templates are each user's own: ``POST templates`` builds a :class:`burstlab.sandbox.SandboxTemplate` with the
caller as its user (its id is a hash that covers the user, its build lives under ``templates/<user>/``), so
another user's id is not found, exactly as an unknown one, and no build is ever shared between users. A
template keeps a warm pool of ``warm`` sandboxes (0 to :data:`MAX_WARM`) in its state while the service runs;
``POST sandboxes {"template": id}`` takes one from it. A user holds at most :data:`MAX_TEMPLATES` templates.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from burstlab import _sync
from burstlab.errors import NotFoundError, SandboxError
from burstlab.workspace import format_size, parse_size

from .errors import BadRequest, Conflict, NotFound
from .openapi import validate

MAX_TEMPLATES = 8  # templates one user keeps built
MAX_WARM = 2  # sandboxes each template keeps ready


async def _loop_call(coro):
    """Run ``coro`` on burstlab's private loop (where sandboxes live) and await it here."""
    return await asyncio.wrap_future(_sync.submit(coro))


class AgentRequests:
    """Mixed into Manager: uses its entries, reservations, maxima and workspace."""

    # -- file watches -------------------------------------------------------------------------------

    async def watch_files(self, user: str, id: str, path: str, timeout: float | None,
                          on_event: Callable[[dict], None], set_stop: Callable[[Callable[[], None]], None]) -> str:
        """Watch ``path`` of the sandbox's work dir for ``timeout`` seconds (default and most: ``Maxima.wait``),
        calling ``on_event`` with each event (``ready`` first); returns why it ended (``timeout``, ``stopped``,
        ``closed``). A path that cannot be watched is a BadRequest before any event."""
        entry = self._entry(user, id)
        limit = self.maxima.wait
        seconds = limit if timeout is None else timeout
        if not 0 < seconds <= limit:
            raise BadRequest(f"timeout={timeout!r}: a watch lasts from 0 to {limit:g} s (c.BurstLabApp.max_wait); "
                             "watch again when it ends.")
        sb = entry.sandbox
        seen: list[bool] = []

        def each(event: dict) -> None:
            seen.append(True)
            on_event(event)

        async def run():
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            set_stop(lambda: loop.call_soon_threadsafe(stop.set))
            result = await sb.awatch(path, each, timeout=seconds, stop=stop)
            return result, stop.is_set()

        try:
            result, stopped = await _loop_call(run())
        except NotFoundError as exc:  # no such directory in the work dir: a path that names nothing, as a file's
            raise NotFound(str(exc)) from None
        except SandboxError as exc:
            if entry.state != "running":
                return "closed"
            raise BadRequest(str(exc)) from None
        if not seen:
            if entry.state != "running" or getattr(sb, "_closed", False):
                raise NotFound(f"Sandbox {id!r} was closed before the watch began.")
            raise BadRequest(f"Cannot watch {path!r}: {result.stderr.strip() or result.error or result.exit_code}.")
        if stopped:
            return "stopped"
        if result.timed_out:
            return "timeout"
        return "closed"

    # -- templates ----------------------------------------------------------------------------------

    def _template_pools(self) -> dict:
        return self.__dict__.setdefault("_templates", {})  # (user, id) -> a SandboxTemplate holding its pool

    def _template(self, user: str, template_id: str):
        from burstlab.workspace import SandboxTemplate

        held = self._template_pools().get((user, template_id))
        if held is not None:
            return held
        try:
            return SandboxTemplate.load(template_id, user)
        except NotFoundError:
            raise NotFound(f"No template {template_id!r} of yours; GET templates lists them.") from None
        except SandboxError as exc:
            raise BadRequest(str(exc)) from None

    def list_templates(self, user: str) -> dict:
        from burstlab.workspace import list_templates

        try:
            records = list_templates(user)
        except SandboxError as exc:
            raise BadRequest(str(exc)) from None
        pools = self._template_pools()
        return {"templates": [{**r, "warm": self._warm(pools.get((user, r["id"])))} for r in records]}

    @staticmethod
    def _warm(tpl) -> int:
        pool = getattr(tpl, "_pool", None) if tpl is not None else None
        return pool.size if pool is not None else 0

    async def create_template(self, user: str, body: Any) -> dict:
        """Build a template (``files``: text by path, ``packages`` importable in the sandbox, a ``setup`` cell run
        once) as the caller's, billed as a sandbox of theirs while it builds; instant when built before."""
        from burstlab.workspace import SandboxTemplate, list_templates

        body = validate("TemplateCreate", body, self.maxima)
        m = self.maxima
        notebook = body.get("notebook") or self.default_notebook
        timeout = float(body.get("timeout", min(300.0, m.timeout)))
        try:
            memory = parse_size(body.get("memory", min(1024**3, m.memory)), "memory")
            tpl = SandboxTemplate(files=body.get("files", {}), packages=body.get("packages", []),
                                  setup=body.get("setup", ""), timeout=timeout, memory=memory, user=user)
        except SandboxError as exc:
            raise BadRequest(str(exc)) from None
        if memory > m.memory:
            raise BadRequest(f"memory: {format_size(memory)} is above this service's maximum of "
                             f"{format_size(m.memory)}; ask for less (c.BurstLabApp.max_sandbox_memory).")
        if self._closing:
            raise Conflict("The server is shutting down; no new templates.")
        pools = self._template_pools()
        held = pools.get((user, tpl.id))
        if held is None and not tpl.built:
            mine = list_templates(user)
            if len(mine) >= MAX_TEMPLATES:
                raise Conflict(f"You have {len(mine)} templates, this service's maximum per user ({MAX_TEMPLATES}); "
                               "delete one with DELETE templates/ID first.")
            self._reserve_sandbox(user, memory)  # the build is a sandbox of the caller's while it runs
            try:
                await self._blocking(self.ws.admit_sandbox, user, notebook)
                await _loop_call(tpl.abuild(meter=self.ws.meter, notebook=notebook))
            except SandboxError as exc:
                raise BadRequest(f"The template did not build: {exc}") from None
            finally:
                self._reserved[user] -= 1
                self._reserved_memory -= memory
        tpl = held or pools.get((user, tpl.id)) or tpl  # a request for the same content may have finished first
        warm = int(body.get("warm", 1))
        if (user, tpl.id) not in pools and warm > 0:
            pools[(user, tpl.id)] = tpl  # before the await: a parallel request finds it
            await _loop_call(tpl.apool(warm))
        return {**tpl.to_dict(), "warm": self._warm(tpl)}

    async def delete_template(self, user: str, template_id: str) -> dict:
        tpl = self._template(user, template_id)
        record = {**tpl.to_dict(), "warm": 0}
        self._template_pools().pop((user, template_id), None)
        await _loop_call(tpl.aclose())
        await asyncio.to_thread(tpl.delete)
        return record

    async def sandbox_from_template(self, user: str, template_id: str, notebook: str):
        """A started sandbox in the template's state, from its warm pool when one is ready; metered and budgeted
        as the caller's, like every sandbox of the workspace (the Manager's entry registers it with the workspace).
        The caller has reserved its caps."""
        tpl = self._template(user, template_id)
        await self._blocking(self.ws.admit_sandbox, user, notebook)

        sb = await _loop_call(tpl.asandbox(meter=self.ws.meter, user=user, notebook=notebook))
        try:
            await self._blocking(self.ws.watcher.start)  # its budgets are watched (and enforced) from now on
        except BaseException:
            await _loop_call(sb.aclose())
            raise
        return sb

    def template_memory(self, user: str, template_id: str) -> int:
        return self._template(user, template_id).limits.memory

    async def _close_templates(self) -> None:
        pools = self._template_pools()
        held = list(pools.values())
        pools.clear()
        await asyncio.gather(*(_loop_call(t.aclose()) for t in held), return_exceptions=True)


__all__ = ["AgentRequests", "MAX_TEMPLATES", "MAX_WARM"]
