"""The server's side of the REST API, without HTTP: one Workspace, the users' sandboxes, who owns what.

The handlers (``handlers/``) are thin over :class:`Manager`; it knows nothing of tornado. Every
method takes the calling user's name and answers only with that user's objects: another user's id
is :class:`NotFound`, exactly as an unknown one. Blocking Workspace calls run on the manager's own
threads (never the server's shared ones): short calls on one pool, budgets and usage (ledger only, never
Dask) on another, so that no stalled Dask call can hold them up, and ``POST sessions`` tries on a
bounded pool of its own; a request that queues for a GPU (up to ``Maxima.wait`` seconds) holds no
thread while it waits (it sleeps between tries), and its slot is reserved per user before it starts;
sandboxes and GPU sessions are driven on burstlab's private loop
(``burstlab._sync``), where their sockets live, and awaited from the server's loop.

Every cap is a reservation taken before the first ``await`` of a create (sandboxes per user and in
all, their memory in all, GPU sessions per user, waiting requests), so parallel requests can never
pass a cap together; what they reserved is given back however the create ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, TypeVar

from burstlab import _sync
from burstlab.errors import NotFoundError, SandboxError, SandboxLimitError
from burstlab.workspace import Limits, format_size, parse_size
from burstlab.wire import Execution, Output

from .bounds import bound_execution
from .errors import BadRequest, Conflict, NotFound
from .manager_agent import AgentRequests
from .maxima import Maxima
from .openapi import validate

T = TypeVar("T")


@dataclass
class _SandboxEntry:
    id: str
    user: str
    notebook: str
    sandbox: Any  # a burstlab.sandbox.Sandbox, taken from the workspace (Workspace.asandbox)
    created: float
    state: str = "running"
    last_usage: dict = field(default_factory=dict)


async def _on_burstlab_loop(coro: Awaitable[T]) -> T:
    """Run ``coro`` on burstlab's private loop (where sandboxes and sessions live) and await it here."""
    return await asyncio.wrap_future(_sync.submit(coro))


CLOSE_DEADLINE_S = 5.0  # seconds closing the service waits for one sandbox's close


class Manager(AgentRequests):
    """One Workspace for the whole server, and per-user views of it (file watches and templates: manager_agent.py)."""

    def __init__(self, workspace, maxima: Maxima | None = None, default_notebook: str = "api"):
        self.ws = workspace
        self.maxima = maxima or Maxima()
        self.default_notebook = default_notebook
        self._sandboxes: dict[str, _SandboxEntry] = {}
        self._reserved: dict[str, int] = {}  # user -> sandboxes being created
        self._reserved_memory = 0  # bytes of the sandboxes being created
        self._sessions_of: dict[str, set[str]] = {}  # user -> ids of sessions started through the API
        self._starting: dict[str, int] = {}  # user -> POST sessions queueing or starting
        self._api_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="burstlab-api")
        # Budgets and usage are ledger work only: their own threads, so requests that wait on Dask (a panel's
        # polls while the scheduler is slow to answer) can never take every thread and hold them up.
        self._ledger_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="burstlab-ledger")
        self._wait_pool = ThreadPoolExecutor(max_workers=max(1, self.maxima.waiters), thread_name_prefix="burstlab-wait")
        self._closing = False

    @property
    def owner(self) -> str:
        """The server's own user (a Jupyter server's requests, and its kernels' token)."""
        return self.ws.user

    # -- workspace and hosts ------------------------------------------------------------------------

    async def workspace(self, user: str, operator: bool = False) -> dict:
        """The workspace; the scheduler's address only for the operator (API users never reach the cluster)."""
        from burstlab import __version__

        def scheduler() -> str:
            return self.ws.client.scheduler.address

        address = await self._blocking(scheduler) if operator else None
        url = self.ws.config.ledger_url
        return {"user": user, "version": __version__, "scheduler": address,
                "ledger": "postgresql" if url.startswith("postgres") else "sqlite",
                "idle_timeout": float(self.ws.config.idle_timeout),
                "isolate_sessions": self.ws.session_isolation().to_json()}

    async def hosts(self, user: str) -> dict:
        entries = await self._blocking(self.ws.hosts)
        rates = self.ws.meter.rates
        return {"hosts": [{**e.to_json(), "declared": e.declared,
                           "microusd_per_hour": rates.rate(e.type) * 3600 // 1000} for e in entries]}

    # -- sessions ---------------------------------------------------------------------------------

    def _cluster_up(self) -> bool:
        """Whether a Dask cluster exists yet; before it does there are no sessions or maps to list."""
        return self.ws.connected

    async def list_sessions(self, user: str, ended: bool = False) -> dict:
        """The user's running sessions; ``ended``: also those ended in the last few minutes, with ``ended_by``."""
        if not self._cluster_up():
            return {"sessions": []}
        return {"sessions": [r.to_json() for r in await self._blocking(self.ws.list_sessions, user, ended)]}

    async def _session_record(self, user: str, id: str) -> dict:
        if self._cluster_up():
            for record in await self._blocking(self.ws.list_sessions, user):
                if record.id == id:
                    return record.to_json()
        raise NotFound(f"No running GPU session {id!r} of yours; GET sessions lists them.")

    async def get_session(self, user: str, id: str) -> dict:
        return await self._session_record(user, id)

    def _running_sessions(self, user: str) -> int:
        ids = self._sessions_of.get(user, set())
        for sid in [i for i in ids if (s := self.ws.get_session(i)) is None or s.state != "running"]:
            ids.discard(sid)
        return len(ids)

    async def create_session(self, user: str, body: Any) -> dict:
        body = validate("SessionCreate", body, self.maxima)
        notebook = body.get("notebook") or self.default_notebook
        m = self.maxima
        if self._closing:
            raise Conflict("The server is shutting down; no new sessions.")
        # Reserved before the first await: parallel requests cannot pass these caps together.
        starting = self._starting.get(user, 0)
        held = self._running_sessions(user)
        if held + starting >= m.sessions_per_user:
            raise Conflict(f"You hold {held} GPU sessions (and {starting} starting), this service's maximum per user "
                           f"({m.sessions_per_user}, c.BurstLabApp.max_sessions_per_user); stop one with "
                           "DELETE sessions/ID first.")
        if starting >= m.waiters_per_user or sum(self._starting.values()) >= m.waiters:
            raise Conflict(f"Too many requests are already waiting for GPUs ({starting} of yours, "
                           f"{sum(self._starting.values())} in all; at most {m.waiters_per_user} per user and "
                           f"{m.waiters} in all); try again when one has answered.")
        self._starting[user] = starting + 1
        try:
            session = await self._session_within(body["gpu"], float(body.get("wait", 0)), user, notebook)
            self._sessions_of.setdefault(user, set()).add(session.id)
        finally:
            self._starting[user] -= 1
        return self._session_json(session, user, notebook)

    async def _session_within(self, gpu: Any, wait: float, user: str, notebook: str):
        """A new session, trying for ``wait`` seconds. Waiting holds no thread: each try (no wait) runs on
        the wait pool, and between tries this coroutine sleeps, backing off from 0.5 to 1 s."""
        from burstlab.errors import CapacityError

        deadline = time.monotonic() + min(wait, self.maxima.wait)
        pause = 0.5
        while True:
            last = time.monotonic() >= deadline
            try:
                return await self._blocking(self.ws.session, gpu, 0.0, user=user, notebook=notebook, reuse=False,
                                            pool=self._wait_pool)
            except CapacityError:
                if last or self._closing:
                    raise
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(1.0, pause * 2)

    def _session_json(self, session, user: str, notebook: str) -> dict:
        return self.ws.session_record(session, origin="server").to_json()

    async def stop_session(self, user: str, id: str, via: str = "") -> dict:
        record = await self._session_record(user, id)
        mine = self.ws.get_session(id)
        reason = "stopped from the burstlab panel" if via == "panel" else f"stopped through the REST API by {user}"
        await self._blocking(self.ws.stop_session, id, reason)
        if mine is not None:
            return self._session_json(mine, record["user"], record["notebook"])
        return {**record, "state": "stopped"}

    async def execute_session(self, user: str, id: str, body: Any) -> dict:
        body = validate("ExecuteRequest", body, self.maxima)
        record = await self._session_record(user, id)
        session = self.ws.get_session(id)
        if session is None or record.get("origin") != "server":
            raise Conflict(f"Session {id!r} belongs to a notebook's %%gpu cells; run code there, or start a "
                           "session of your own with POST sessions.")
        timeout = self._run_timeout(body.get("timeout"), None)

        async def run() -> Execution:
            task = asyncio.ensure_future(session.execute(body["code"]))
            if timeout is None:
                return await task
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                await session.interrupt()
            return await task

        return bound_execution((await _on_burstlab_loop(run())).to_json(), self.maxima.output)  # lost: 409

    # -- sandboxes --------------------------------------------------------------------------------

    def _forget_ended(self) -> dict[str, str]:
        """Drop the entries whose sandbox closed itself (its lifetime or idle timeout): their ids and why."""
        ended = {}
        for e in list(self._sandboxes.values()):
            if e.state == "running" and getattr(e.sandbox, "_closed", False):
                e.state = "closed"
                self._sandboxes.pop(e.id, None)
                ended[e.id] = getattr(e.sandbox, "_closed_why", "")
        return ended

    def _entry(self, user: str, id: str) -> _SandboxEntry:
        entry = self._sandboxes.get(id)
        if entry is not None and entry.user == user and id in self._forget_ended():
            raise NotFound(f"Sandbox {id!r} was closed{entry.sandbox._closed_why}; create a new one with POST sandboxes.")
        if entry is None or entry.user != user or entry.state != "running":
            raise NotFound(f"No sandbox {id!r} of yours; GET sandboxes lists them.")
        return entry

    def _sandbox_json(self, e: _SandboxEntry) -> dict:
        if e.state == "running":
            try:
                e.last_usage = e.sandbox.usage()
            except OSError:  # the cgroup went away under us (closing)
                pass
        state = "paused" if e.state == "running" and e.sandbox.paused else e.state  # its lifetime paused it
        return self.ws.sandbox_record(e.sandbox, state=state, usage=e.last_usage).to_json()  # its id, everywhere

    def list_sandboxes(self, user: str) -> dict:
        self._forget_ended()
        return {"sandboxes": [self._sandbox_json(e) for e in self._sandboxes.values()
                              if e.user == user and e.state == "running"]}

    def get_sandbox(self, user: str, id: str) -> dict:
        return self._sandbox_json(self._entry(user, id))

    def _run_timeout(self, timeout: float | None, default: float | None) -> float | None:
        if timeout is None:
            return default
        if timeout > self.maxima.timeout:
            raise BadRequest(f"timeout: {timeout:g} s is above this service's maximum of {self.maxima.timeout:g} s; "
                             "ask for less (the administrator sets c.BurstLabApp.max_sandbox_timeout).")
        return float(timeout)

    def _sandbox_kwargs(self, body: dict) -> dict:
        m = self.maxima
        # Sandbox's defaults, clamped to this service's maxima; what the caller names is checked below.
        base = Limits()
        kwargs: dict[str, Any] = {"timeout": min(base.timeout, m.timeout), "memory": min(base.memory, m.memory),
                                  "pids": min(base.pids, m.pids), "cpus": min(base.cpus, m.cpus)}
        if "timeout" in body:
            kwargs["timeout"] = self._run_timeout(body["timeout"], None)
        if "memory" in body:
            try:
                memory = parse_size(body["memory"], "memory")
            except SandboxError as exc:
                raise BadRequest(str(exc)) from None
            if memory > m.memory:
                raise BadRequest(f"memory: {format_size(memory)} is above this service's maximum of "
                                 f"{format_size(m.memory)}; ask for less (c.BurstLabApp.max_sandbox_memory).")
            kwargs["memory"] = memory
        if "pids" in body:
            if body["pids"] > m.pids:
                raise BadRequest(f"pids: {body['pids']} is above this service's maximum of {m.pids} "
                                 "(c.BurstLabApp.max_sandbox_pids).")
            kwargs["pids"] = body["pids"]
        if "cpus" in body:
            if body["cpus"] > m.cpus:
                raise BadRequest(f"cpus: {body['cpus']:g} is above this service's maximum of {m.cpus:g} "
                                 "(c.BurstLabApp.max_sandbox_cpus).")
            kwargs["cpus"] = float(body["cpus"])
        if body.get("network"):
            if not m.network:
                raise BadRequest("network: this service does not give sandboxes network access (a sandbox with "
                                 "network shares the host's); leave it false, or the administrator sets "
                                 "c.BurstLabApp.allow_sandbox_network = True.")
            kwargs["network"] = True
        if body.get("env") or body.get("secrets"):  # checked by Sandbox (400 naming the variable, never its value)
            kwargs["env"] = dict(body.get("env") or {})
            kwargs["secrets"] = dict(body.get("secrets") or {})  # the caller's values: never this server's environment
        return kwargs

    async def create_sandbox(self, user: str, body: Any, from_snapshot: str | None = None) -> dict:
        body = validate("SandboxCreate", body, self.maxima)
        kwargs = self._sandbox_kwargs(body)
        notebook = body.get("notebook") or self.default_notebook
        if self._closing:
            raise Conflict("The server is shutting down; no new sandboxes.")
        snap = self._snapshot(user, from_snapshot) if from_snapshot is not None else None
        template = body.get("template")
        if template is not None and (snap is not None or set(body) - {"template", "lifetime", "lifetime_action",
                                                                       "notebook"}):
            raise BadRequest("A sandbox from a template has the template's limits: give template with lifetime and "
                             "notebook only (and no ?from=).")
        try:
            memory = self.ws.check_sandbox(**kwargs).memory  # a bad setting is the caller's: 400, nothing reserved
        except SandboxError as exc:
            raise BadRequest(str(exc)) from None
        if template is not None:
            memory = self.template_memory(user, template)  # 404 for an unknown id, or another user's
        if snap is not None:  # its own limits, within this service's maxima
            m, lim = self.maxima, snap.limits
            if lim["memory"] > m.memory or lim["timeout"] > m.timeout or lim["pids"] > m.pids or lim["cpus"] > m.cpus:
                raise BadRequest(f"Snapshot {snap.id}'s limits are above this service's maxima; it cannot be restored here.")
            memory = lim["memory"]
        self._reserve_sandbox(user, memory)  # before the first await: parallel creates cannot pass the caps
        try:
            # A spent budget refuses a sandbox as it refuses a GPU session (402, with the numbers).
            await self._blocking(self.ws.admit_sandbox, user, notebook)
            # From the workspace's warm pool (or started, if the pool cannot serve it): metered as the caller.
            if template is not None:  # from the template's warm pool when one is ready
                sandbox = await self.sandbox_from_template(user, template, notebook)
            elif snap is None:
                sandbox = await _on_burstlab_loop(self.ws.asandbox(**kwargs, user=user, notebook=notebook))
            else:  # a new sandbox in the snapshot's state, metered and budgeted as the workspace's own
                sandbox = await _on_burstlab_loop(self.ws.arestore_sandbox(snap.id, user=user, notebook=notebook))
        finally:
            self._reserved[user] -= 1
            self._reserved_memory -= memory
        if body.get("lifetime") is not None:
            sandbox.set_lifetime(body["lifetime"])
        sandbox.lifetime_action = body.get("lifetime_action", "close")
        entry = _SandboxEntry(id=self.ws.sandbox_id(sandbox), user=user, notebook=notebook, sandbox=sandbox,
                              created=time.time())
        self._sandboxes[entry.id] = entry
        if self._closing:  # shut down while we were starting: do not leave it behind
            await self._close_entry(entry)
            raise Conflict("The server is shutting down; no new sandboxes.")
        return self._sandbox_json(entry)

    def _reserve_sandbox(self, user: str, memory: int) -> None:
        """Take one sandbox of ``user``'s and ``memory`` bytes of the service's, or Conflict (no await)."""
        m = self.maxima
        running = [e for e in self._sandboxes.values() if e.state == "running"]
        held = sum(1 for e in running if e.user == user) + self._reserved.get(user, 0)
        if held >= m.sandboxes_per_user:
            raise Conflict(f"You have {held} sandboxes, this service's maximum per user "
                           f"({m.sandboxes_per_user}); close one with DELETE sandboxes/ID first.")
        total = len(running) + sum(self._reserved.values())
        if total >= m.sandboxes:
            raise Conflict(f"This service runs {total} sandboxes, its maximum for all users together ({m.sandboxes}, "
                           "c.BurstLabApp.max_sandboxes); try again when one has closed.")
        used = sum(e.sandbox.limits.memory for e in running) + self._reserved_memory
        if used + memory > m.memory_total:
            raise Conflict(f"A sandbox of {format_size(memory)} would take this service's sandboxes past "
                           f"{format_size(m.memory_total)} of memory in all ({format_size(used)} are given out; "
                           "c.BurstLabApp.max_sandbox_memory_total); ask for less memory, or try again later.")
        self._reserved[user] = self._reserved.get(user, 0) + 1
        self._reserved_memory += memory

    async def _close_entry(self, entry: _SandboxEntry) -> None:
        if entry.state != "running":
            return
        entry.state = "closing"
        try:
            entry.last_usage = entry.sandbox.usage()
        except OSError:
            pass
        try:
            await _on_burstlab_loop(entry.sandbox.aclose())
        finally:
            entry.state = "closed"
            self._sandboxes.pop(entry.id, None)

    async def interrupt_sandbox(self, user: str, id: str) -> dict:
        """Interrupt the sandbox's running cell (its execute answers with the KeyboardInterrupt)."""
        entry = self._entry(user, id)
        if entry.state == "running":
            await _on_burstlab_loop(entry.sandbox.ainterrupt())
        return self._sandbox_json(entry)

    async def close_sandbox(self, user: str, id: str) -> dict:
        entry = self._entry(user, id)
        await self._close_entry(entry)
        return self._sandbox_json(entry)

    async def execute_sandbox(self, user: str, id: str, body: Any,
                              on_output: Callable[[Output], None] | None = None) -> dict:
        body = validate("ExecuteRequest", body, self.maxima)
        entry = self._entry(user, id)
        timeout = self._run_timeout(body.get("timeout"), None)
        try:
            execution = await _on_burstlab_loop(entry.sandbox.arun(body["code"], timeout, on_output))
        except SandboxError as exc:
            if entry.state != "running":
                raise NotFound(f"Sandbox {id!r} was closed during the run.") from None
            raise
        return bound_execution(execution.to_json(), self.maxima.output)

    # -- snapshots (burstlab.sandbox: per user under BURSTLAB_HOME) -------------------------------

    def _snapshot(self, user: str, snap_id: str):
        try:
            found = [s for s in self.ws.snapshots(user) if s.id == snap_id]
        except SandboxError as exc:
            raise BadRequest(str(exc)) from None
        if not found:
            raise NotFound(f"No snapshot {snap_id!r} of yours; GET snapshots lists them.")
        return found[0]

    async def snapshot_sandbox(self, user: str, id: str, body: Any) -> dict:
        """``Sandbox.snapshot(mode)``; CRIU's refusal (no mode) is a 409 naming mode "namespace"."""
        body = validate("SnapshotRequest", {} if body is None else body, self.maxima)
        entry = self._entry(user, id)
        try:
            snap = await _on_burstlab_loop(entry.sandbox.asnapshot(body.get("mode")))
        except (SandboxLimitError, NotFoundError):
            raise
        except SandboxError as exc:
            raise Conflict(str(exc)) from None
        return snap.to_dict()

    def list_snapshots(self, user: str) -> dict:
        try:
            return {"snapshots": [s.to_dict() for s in self.ws.snapshots(user)]}
        except SandboxError as exc:
            raise BadRequest(str(exc)) from None

    def delete_snapshot(self, user: str, snap_id: str) -> dict:
        snap = self._snapshot(user, snap_id)
        self.ws.delete_snapshot(snap.id, user=user)
        return snap.to_dict()

    def sandbox_metrics(self, user: str, id: str) -> dict:
        """``Sandbox.metrics()``: the sandbox's cgroup readings as a time series."""
        return self._entry(user, id).sandbox.metrics()

    async def exec_sandbox(self, user: str, id: str, body: Any,
                           on_output: Callable[[Output], None] | None = None) -> dict:
        """Run a command in the sandbox's jail (``Sandbox.exec``): its exit code, stdout and stderr (and each
        output to ``on_output`` as it comes, for a stream)."""
        body = validate("ExecRequest", body, self.maxima)
        shell = bool(body.get("shell", False))
        if isinstance(body["cmd"], str) != shell:
            raise BadRequest("cmd: give a list of arguments, or one command line with shell=true.")
        entry = self._entry(user, id)
        timeout = self._run_timeout(body.get("timeout"), None)
        try:
            result = await _on_burstlab_loop(entry.sandbox.aexec(body["cmd"], shell=shell, timeout=timeout,
                                                                 on_output=on_output))
        except SandboxError as exc:
            if entry.state != "running":
                raise NotFound(f"Sandbox {id!r} was closed during the command.") from None
            raise
        return result.to_dict()

    # -- sandbox files ----------------------------------------------------------------------------

    @staticmethod
    def _files_error(exc: SandboxError) -> Exception:
        """A refused file request: a missing file (404) or a limit (413) as burstlab.errors.HTTP_STATUS
        says; any other refusal of a path is the caller's (400)."""
        if isinstance(exc, (SandboxLimitError, NotFoundError)):
            return exc
        return BadRequest(str(exc))

    async def _files(self, user: str, id: str, op: str, *args: Any) -> Any:
        entry = self._entry(user, id)
        files = entry.sandbox.files
        try:
            return await self._blocking(getattr(files, op), *args)
        except SandboxError as exc:
            raise self._files_error(exc) from None

    async def read_file(self, user: str, id: str, path: str) -> bytes | dict:
        """A file's bytes, or ``{"entries": [...]}`` for a directory (or the work dir, path "")."""
        entry = self._entry(user, id)
        if path.strip("/") in ("", "."):
            return {"entries": await self._files(user, id, "list", ".")}
        try:
            listing = await self._blocking(entry.sandbox.files.list, path)
        except SandboxError:
            listing = None  # not a directory: read it as a file
        if listing is not None:
            return {"entries": listing}
        return await self._files(user, id, "read", path)

    def upload_limit(self, user: str, id: str) -> int:
        return self._entry(user, id).sandbox.limits.max_upload

    async def write_file(self, user: str, id: str, path: str, data: bytes) -> dict:
        size = await self._files(user, id, "write", path, data)
        return {"path": path, "size": size}

    async def remove_file(self, user: str, id: str, path: str) -> dict:
        await self._files(user, id, "remove", path)
        return {"path": path, "removed": True}

    # -- maps -------------------------------------------------------------------------------------

    async def list_maps(self, user: str) -> dict:
        if not self._cluster_up():
            return {"maps": []}
        return {"maps": [m.to_json() for m in await self._blocking(self.ws.list_maps, user)]}

    async def cancel_map(self, user: str, id: str, via: str = "") -> dict:
        maps = (await self.list_maps(user))["maps"]
        record = next((m for m in maps if m["id"] == id), None)
        if record is None:
            raise NotFound(f"No map {id!r} of yours; GET maps lists them.")
        if record["state"] == "running":
            reason = "cancelled from the burstlab panel" if via == "panel" else f"cancelled through the REST API by {user}"
            await self._blocking(self.ws.cancel_map, id, reason)
        return record

    # -- money ------------------------------------------------------------------------------------

    async def usage(self, user: str, notebook: str | None = None, kind: str | None = None,
                    since: float | None = None, until: float | None = None) -> dict:
        filters: dict[str, Any] = {"user": user, "notebook": notebook, "kind": kind}
        if since is not None:
            filters["since_ns"] = int(since * 1e9)
        if until is not None:
            filters["until_ns"] = int(until * 1e9)
        records = await self._blocking(self.ws.usage, pool=self._ledger_pool, **filters)
        by_kind: dict[str, int] = {}
        by_notebook: dict[str, int] = {}
        by_day: dict[str, int] = {}
        for r in records:
            by_kind[r.kind] = by_kind.get(r.kind, 0) + r.cost_microusd
            by_notebook[r.notebook] = by_notebook.get(r.notebook, 0) + r.cost_microusd
            day = time.strftime("%Y-%m-%d", time.gmtime(r.start_ns / 1e9))
            by_day[day] = by_day.get(day, 0) + r.cost_microusd
        return {"records": [r.to_json() for r in records],
                "totals": {"billed_s": sum(r.billed_s for r in records),
                           "cost_microusd": sum(r.cost_microusd for r in records),
                           "by_kind": by_kind, "by_notebook": by_notebook, "by_day": by_day}}

    def _budget_api(self, name: str):
        method = getattr(self.ws, name, None)
        if method is None:
            raise NotFound("Budgets are not available in this version of burstlab.")
        return method

    @staticmethod
    def _check_budget_owner(user: str, scope: str, name: str) -> None:
        if scope not in ("user", "notebook"):
            raise NotFound(f"No budget scope {scope!r}: use budgets/user/{user} or budgets/notebook/NOTEBOOK.")
        if scope == "user" and name != user:
            raise NotFound(f"No budget of yours for user {name!r}; your user name is {user!r}.")

    async def budgets(self, user: str) -> dict:
        budgets = await self._blocking(self._budget_api("budgets"), user, pool=self._ledger_pool)
        return {"budgets": [b.to_json() for b in budgets]}

    async def set_budget(self, user: str, scope: str, name: str, body: Any) -> dict:
        body = validate("BudgetSet", body, self.maxima)
        self._check_budget_owner(user, scope, name)
        set_budget = self._budget_api("set_budget")

        def set_and_say() -> tuple[Any, list[str]]:  # what a budget set below spending stopped, in the same call
            status = set_budget(scope, name, float(body["limit_usd"]), float(body.get("soft_fraction", 0.8)),
                                user=user, period=body.get("period", ""))
            return status, list(self.ws.watcher.last_stops)

        budget, stopped = await self._blocking(set_and_say, pool=self._ledger_pool)
        return {**budget.to_json(), "stopped": stopped}

    async def remove_budget(self, user: str, scope: str, name: str) -> dict:
        self._check_budget_owner(user, scope, name)
        mine = {(b["scope"], b["name"]): b for b in (await self.budgets(user))["budgets"]}
        if (scope, name) not in mine:
            raise NotFound(f"No {scope} budget named {name!r} of yours; GET budgets lists them.")
        await self._blocking(self._budget_api("remove_budget"), scope, name, user=user, pool=self._ledger_pool)
        return mine[(scope, name)]

    # -- plumbing ---------------------------------------------------------------------------------

    async def _blocking(self, fn: Callable[..., T], *args: Any, pool: ThreadPoolExecutor | None = None,
                        **kwargs: Any) -> T:
        """A blocking Workspace call, on the manager's own threads. Its burstlab errors pass through: the
        handlers answer them by burstlab.errors.HTTP_STATUS."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(pool or self._api_pool, call)

    async def close(self) -> None:
        """Close every sandbox, then the workspace (its sessions, meter intervals, cluster)."""
        self._closing = True
        entries = list(self._sandboxes.values())
        # Each close has a deadline: one stuck behind a run that never ends is left to the sandbox's fork server,
        # which ends every sandbox of this process when it exits (the service must stop on SIGTERM, whatever runs).
        results = await asyncio.gather(*(asyncio.wait_for(self._close_entry(e), CLOSE_DEADLINE_S) for e in entries),
                                       return_exceptions=True)
        for e, r in zip(entries, results):
            if isinstance(r, BaseException):
                import logging

                logging.getLogger("burstlab").warning("closing sandbox %s failed: %r", e.id, r)
        await self._close_templates()
        await asyncio.to_thread(self.ws.close)
        for pool in (self._api_pool, self._wait_pool, self._ledger_pool):
            pool.shutdown(wait=False, cancel_futures=True)


__all__ = ["Manager", "Maxima"]
