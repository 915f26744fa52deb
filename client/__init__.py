"""``burstlab.client``: the workspace of a running burstlab service, over its REST API.

::

    from burstlab.client import RemoteWorkspace

    with RemoteWorkspace("http://127.0.0.1:8888/", token="...") as ws:  # or BURSTLAB_URL / BURSTLAB_TOKEN
        with ws.sandbox(timeout=30, memory="512MiB") as sb:
            ex = sb.run("x = 21\\nx * 2")                               # a burstlab.wire.Execution
            ex.text                                                    # '42'
            sb.run("for i in range(3): print(i)", on_output=print)      # streamed as it is produced
            sb.files.write("data.csv", b"a,b\\n1,2\\n"); sb.files.read("data.csv"); sb.files.list()
        with ws.session("H100") as s:                                  # POST sessions: holds a GPU
            s.execute_sync("import torch; torch.cuda.is_available()").text
        ws.hosts(), ws.list_sessions(), ws.list_maps(), ws.usage(), ws.budgets()

The surface is the in-process one: :class:`RemoteWorkspace` has :class:`burstlab.Workspace`'s verbs
(``session``, ``list_sessions``, ``get_session``, ``stop_session``, ``list_maps``, ``cancel_map``,
``hosts``, ``usage``, ``budgets``), a :class:`RemoteSession` :class:`~burstlab.remote_kernel.session.GpuSession`'s
(``execute``/``execute_sync``, ``stop``), and :class:`RemoteSandbox` :class:`burstlab.Sandbox`'s: ``run()`` returns an
:class:`~burstlab.wire.Execution` whose ``error`` holds the user's exception or the limit it hit
(``SandboxTimeout``, ``SandboxMemoryLimit``...), and failures of the platform raise
:class:`~burstlab.errors.BurstlabError` subclasses. Async core (``arun``, ``asandbox``...) on any
asyncio loop; the blocking twins run it on burstlab's private loop (:mod:`burstlab._sync`).

HTTP is tornado's client (already a dependency of Jupyter). Its errors, and the service's 4xx/5xx
answers, are translated into burstlab's errors in one place, :func:`_http_error` and
:func:`_transport_error`, with the service's own message; each translated error carries the HTTP
status as ``.status`` (0 when the service was not reached).
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import json
import os
import queue
import weakref
from typing import Any, Callable
from urllib.parse import quote, urlencode, urlsplit

from burstlab._sync import run_interruptible, run_sync, submit
from burstlab.errors import BurstlabError, NotFoundError, SandboxError, error_for_status
from burstlab.wire import (
    BudgetStatus,
    Execution,
    GpuInventoryEntry,
    GpuSpec,
    MapRecord,
    Output,
    SessionRecord,
    UsageRecord,
)

API_PATH = "burstlab/api/"
START_HINT = ("Start one with `jupyter burstlab` (it prints its URL and a token), or point url= / BURSTLAB_URL "
              "at a running Jupyter server that has burstlab installed.")
_CONNECT_TIMEOUT = 10.0
_SLACK = 60.0  # request timeout beyond a run's own timeout: kill grace, a kernel restart, queueing
_MAX_ERROR_BODY = 64 * 1024
_UNBOUNDED = 30 * 86_400.0  # a session's execute with no timeout: the request waits as long as the cell runs


# -- the one boundary where HTTP becomes burstlab errors --------------------------------------------

def _message_of(body: bytes) -> str | None:
    """The ``message`` of a jupyter_server error body, or None when the body is not one."""
    try:
        data = json.loads(body[:_MAX_ERROR_BODY].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("message"), str) and data["message"]:
        return data["message"]
    if isinstance(data, dict) and isinstance(data.get("reason"), str) and data["reason"]:
        return data["reason"]
    return None


def _http_error(base: str, method: str, path: str, status: int, body: bytes, token_given: bool) -> BurstlabError:
    """The burstlab error for a 4xx/5xx answer to ``method path`` (path relative to the API root)."""
    message = _message_of(body)
    where = f"{method} {base}{API_PATH}{path}"
    exc: BurstlabError
    if status in (401, 403):
        why = (f"the service said: {message}. " if message and message not in ("Forbidden", "Unauthorized") else "")
        fix = ("no token was given: pass token= or set BURSTLAB_TOKEN (the service prints its token when it starts)"
               if not token_given else "pass token= or set BURSTLAB_TOKEN to a token the service accepts")
        exc = BurstlabError(f"The burstlab service at {base} rejected the request ({status}, token rejected): {why}{fix}.")
    elif message is None and status == 404:
        exc = BurstlabError(
            f"{where} answered 404 without burstlab's JSON error: {base} does not serve the burstlab API. "
            "Check the URL (it is the Jupyter server's base URL, e.g. http://127.0.0.1:8888/) and that burstlab is "
            "installed in that server's environment.")
    elif status >= 500:
        exc = BurstlabError(f"The burstlab service failed on {where} ({status}): {message or 'no message'}. "
                            "This is a bug in the service; its log has the traceback.")
    else:  # the one table of the HTTP boundary, read the client's way
        parts = path.split("?", 1)[0].split("/")
        return error_for_status(status, message or f"{where} answered {status} with no message",
                                resource=parts[0], action=parts[2] if len(parts) > 2 else "")
    exc.status = status  # type: ignore[attr-defined]
    return exc


def _transport_error(base: str, method: str, path: str, exc: BaseException, timeout: float) -> BurstlabError:
    """The burstlab error for a request that got no HTTP answer (refused, timed out, cut off)."""
    from tornado.simple_httpclient import HTTPTimeoutError

    if isinstance(exc, ConnectionRefusedError):
        out = BurstlabError(f"Cannot reach the burstlab service at {base}: connection refused. {START_HINT}")
    elif isinstance(exc, HTTPTimeoutError):
        out = BurstlabError(f"The burstlab service at {base} did not answer {method} {API_PATH}{path} within "
                            f"{timeout:g} s ({exc}). Is it overloaded or stuck? Its log says more.")
    elif isinstance(exc, OSError) and not isinstance(exc, ConnectionError):
        out = BurstlabError(f"Cannot reach the burstlab service at {base}: {exc}. {START_HINT}")
    else:
        out = BurstlabError(f"The connection to the burstlab service at {base} failed during {method} "
                            f"{API_PATH}{path}: {type(exc).__name__}: {exc}. Is the service still running?")
    out.status = 0  # type: ignore[attr-defined]
    return out


def _normalise_url(url: str) -> str:
    """The server's base URL, ending in ``/`` (a URL that already ends in ``burstlab/api/`` is accepted too)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BurstlabError(f"url={url!r} is not an http(s) URL; give the service's base URL, e.g. "
                            "'http://127.0.0.1:8888/' (what `jupyter burstlab` prints).")
    if not url.endswith("/"):
        url += "/"
    if url.endswith(API_PATH):
        url = url[: -len(API_PATH)]
    return url


def _resolver():
    """A tornado resolver that never needs a thread pool for an IP literal (``127.0.0.1``, the usual
    service address), and falls back to a blocking lookup once the pools are shut down: at interpreter
    exit, when :meth:`RemoteWorkspace.close` still has sandboxes to close."""
    import ipaddress
    import socket

    from tornado.netutil import DefaultLoopResolver, Resolver

    def blocking(host: str, port: int, family: int) -> list:
        return [(fam, addr) for fam, _, _, _, addr in socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)]

    class _Resolver(Resolver):
        async def resolve(self, host: str, port: int, family: int = socket.AF_UNSPEC) -> list:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                try:
                    return await DefaultLoopResolver().resolve(host, port, family)
                except RuntimeError:  # "cannot schedule new futures after shutdown"
                    pass
            return blocking(host, port, family)

    return _Resolver()


class _Response:
    __slots__ = ("status", "content_type", "body")

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        self.status, self.content_type, self.body = status, content_type, body

    def json(self) -> Any:
        try:
            return json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise BurstlabError(f"The burstlab service answered {self.status} with a body that is not JSON "
                                f"({self.body[:200]!r}); client and service versions may differ.") from exc


# -- the workspace ----------------------------------------------------------------------------------

class RemoteWorkspace:
    """A burstlab service's workspace, seen through its REST API as the token's user.

    ``url`` is the server's base URL (default ``$BURSTLAB_URL``); ``token`` an API token it accepts
    (default ``$BURSTLAB_TOKEN``). Sandboxes created through this object are closed by
    ``close()`` (and at interpreter exit); ones found with :meth:`sandboxes` or
    :meth:`get_sandbox` are left as they are.
    """

    def __init__(self, url: str | None = None, token: str | None = None, *, request_timeout: float = 60.0,
                 max_clients: int = 256) -> None:
        url = url if url is not None else os.environ.get("BURSTLAB_URL", "")
        if not url:
            raise BurstlabError(f"No burstlab service URL: pass url= or set BURSTLAB_URL. {START_HINT}")
        self.url = _normalise_url(url)
        self.token = token if token is not None else os.environ.get("BURSTLAB_TOKEN", "")
        self.request_timeout = float(request_timeout)
        self._max_clients = max_clients
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._owned: dict[str, RemoteSandbox] = {}
        self._closed = False
        atexit.register(self.close)

    def __repr__(self) -> str:
        return f"<burstlab.client.RemoteWorkspace {self.url}>"

    # -- HTTP ---------------------------------------------------------------------------------------
    def _client(self):
        from tornado.httpclient import AsyncHTTPClient

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            # Our own instance (not tornado's per-loop singleton), so settings do not leak into other users of it.
            client = AsyncHTTPClient(force_instance=True, max_clients=self._max_clients, resolver=_resolver())
            self._clients[loop] = client
        return client

    async def _request(self, method: str, path: str, *, body: Any = None, raw: bytes | None = None,
                       params: dict[str, Any] | None = None, timeout: float | None = None,
                       on_chunk: Callable[[bytes], None] | None = None) -> _Response:
        """One request to ``{url}burstlab/api/{path}``; any failure comes out as a burstlab error.

        With ``on_chunk``, a 2xx body is handed over chunk by chunk as it arrives (not kept).
        """
        from tornado.httpclient import HTTPRequest

        if self._closed:
            raise BurstlabError("This client workspace is closed; make a new burstlab.client.RemoteWorkspace().")
        timeout = self.request_timeout if timeout is None else timeout
        url = self.url + API_PATH + path
        if params:
            url += "?" + urlencode({k: v for k, v in params.items() if v is not None})
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif raw is not None:
            data = raw
            headers["Content-Type"] = "application/octet-stream"
        elif method in ("POST", "PUT"):
            data = b""
        state = {"status": 0}
        error_body: list[bytes] = []

        def header_line(line: str) -> None:
            if line.startswith("HTTP/"):
                try:
                    state["status"] = int(line.split(" ", 2)[1])
                except (IndexError, ValueError):
                    pass

        def chunk(data: bytes) -> None:
            if 200 <= state["status"] < 300:
                assert on_chunk is not None
                on_chunk(data)
            elif sum(map(len, error_body)) < _MAX_ERROR_BODY:
                error_body.append(data)

        request = HTTPRequest(
            url, method=method, headers=headers, body=data, connect_timeout=min(_CONNECT_TIMEOUT, timeout),
            request_timeout=timeout, follow_redirects=False, decompress_response=True,
            header_callback=header_line if on_chunk else None, streaming_callback=chunk if on_chunk else None,
        )
        try:
            response = await self._client().fetch(request, raise_error=False)
        except BurstlabError:
            raise
        except Exception as exc:  # tornado's and the socket's: translated here, and only here
            raise _transport_error(self.url, method, path, exc, timeout) from exc
        if response.code == 599:  # tornado's "no HTTP answer" (some versions return it instead of raising)
            raise _transport_error(self.url, method, path, response.error or OSError("no answer"), timeout)
        body_bytes = b"".join(error_body) if on_chunk else (response.body or b"")
        if response.code >= 400 or response.code < 200:
            raise _http_error(self.url, method, path, response.code, body_bytes, bool(self.token))
        return _Response(response.code, response.headers.get("Content-Type", ""), body_bytes)

    async def _json(self, method: str, path: str, key: str | None = None, *, whole: bool = False, **kwargs: Any) -> Any:
        """The JSON answer; with ``key``, the answer must be an object holding it, and its value is
        returned (the whole object with ``whole=True``)."""
        data = (await self._request(method, path, **kwargs)).json()
        if key is None:
            return data
        if not isinstance(data, dict) or key not in data:
            raise BurstlabError(f"{method} {self.url}{API_PATH}{path} answered without {key!r} ({str(data)[:200]}); "
                                "the client and the service may be different burstlab versions.")
        return data if whole else data[key]

    # -- async core ---------------------------------------------------------------------------------
    async def ainfo(self) -> dict:
        return await self._json("GET", "workspace")

    async def ahosts(self) -> list[GpuInventoryEntry]:
        return [GpuInventoryEntry.from_json(h) for h in await self._json("GET", "hosts", "hosts")]

    async def alist_sessions(self) -> list[SessionRecord]:
        return [SessionRecord.from_json(r) for r in await self._json("GET", "sessions", "sessions")]

    async def asession(self, spec: str | list[str] | GpuSpec, wait: float = 0.0, *,
                       notebook: str | None = None) -> "RemoteSession":
        """Start a GPU session on the service (``POST sessions``): it holds fresh GPUs until stopped."""
        gpu: Any = str(spec) if isinstance(spec, GpuSpec) else spec
        body: dict[str, Any] = {"gpu": gpu, "wait": float(wait)}
        if notebook is not None:
            body["notebook"] = notebook
        record = SessionRecord.from_json(await self._json("POST", "sessions", "id", body=body, whole=True,
                                                          timeout=self.request_timeout + float(wait)))
        return RemoteSession(self, record)

    async def aget_session(self, id: str) -> "RemoteSession":
        """A running session by id (an unknown one, or another user's, raises NotFoundError)."""
        return RemoteSession(self, SessionRecord.from_json(
            await self._json("GET", f"sessions/{quote(id, safe='')}", "id", whole=True)))

    async def astop_session(self, id: str) -> bool:
        """Stop session ``id`` (its GPUs are free when this returns); False if no such running session."""
        try:
            await self._json("DELETE", f"sessions/{quote(id, safe='')}", "id", whole=True)
        except NotFoundError:
            return False
        return True

    async def alist_maps(self) -> list[MapRecord]:
        return [MapRecord.from_json(m) for m in await self._json("GET", "maps", "maps")]

    async def acancel_map(self, id: str) -> bool:
        """Ask the map ``id`` to stop; False if there is no such map of yours."""
        try:
            await self._json("DELETE", f"maps/{quote(id, safe='')}", "id", whole=True)
        except NotFoundError:
            return False
        return True

    async def abudgets(self) -> list[BudgetStatus]:
        return [BudgetStatus.from_json(b) for b in await self._json("GET", "budgets", "budgets")]

    async def ausage_report(self, **filters: Any) -> dict:
        """``GET usage``: ``{"records": [UsageRecord...], "totals": {...}}``; filters user, notebook, kind, since, until."""
        data = await self._json("GET", "usage", params=filters)
        if not isinstance(data, dict) or "records" not in data:
            raise BurstlabError(f"GET {self.url}{API_PATH}usage answered without 'records' ({str(data)[:200]}); "
                                "the client and the service may be different burstlab versions.")
        return {"records": [UsageRecord.from_json(r) for r in data["records"]], "totals": data.get("totals", {})}

    async def ausage(self, **filters: Any) -> list[UsageRecord]:
        return (await self.ausage_report(**filters))["records"]

    async def asandbox(self, timeout: float | None = None, memory: int | str | None = None, network: bool = False, *,
                       pids: int | None = None, cpus: float | None = None, notebook: str | None = None,
                       template: str | None = None, env: dict | None = None, secrets: Any = None) -> "RemoteSandbox":
        """Create a sandbox on the service (running when this returns); closed with this workspace. ``template``:
        the id of one of your templates (``template()``): it starts in that state, with the template's limits.
        ``env`` and ``secrets`` (names read here, from this process's environment or ``BURSTLAB_HOME/secrets.env``,
        or ``{name: value}``) are its kernel's environment; the service redacts secrets in everything it answers."""
        body: dict[str, Any] = {"network": bool(network)} if template is None else {"template": template}
        if env or secrets:
            from burstlab.secrets import split

            values, secret_values = split(env, secrets)  # checked here: a bad name never leaves this process
            body.update({"env": values} if values else {}, **({"secrets": secret_values} if secret_values else {}))
        for key, value in (("timeout", timeout), ("memory", memory), ("pids", pids), ("cpus", cpus),
                           ("notebook", notebook)):
            if value is not None:
                body[key] = value
        sb = RemoteSandbox(self, await self._json("POST", "sandboxes", "id", body=body, whole=True))
        self._owned[sb.id] = sb
        return sb

    async def arestore(self, snapshot_id: str, notebook: str | None = None) -> "RemoteSandbox":
        """A new sandbox on the service in the state of one of your snapshots (``POST sandboxes?from=``)."""
        body = {"notebook": notebook} if notebook is not None else {}
        sb = RemoteSandbox(self, await self._json("POST", "sandboxes", "id", body=body, whole=True,
                                                  params={"from": snapshot_id}))
        self._owned[sb.id] = sb
        return sb

    def restore(self, snapshot_id: str, notebook: str | None = None) -> "RemoteSandbox":
        return run_sync(self.arestore(snapshot_id, notebook))

    async def atemplate(self, *, files: dict[str, str] | None = None, packages: list[str] | tuple = (),
                        setup: str = "", timeout: float | None = None, memory: int | str | None = None,
                        warm: int | None = None) -> dict:
        """Build a template on the service (``POST templates``; instant when built before): its record, whose
        ``id`` ``sandbox(template=id)`` starts from."""
        body: dict[str, Any] = {"files": dict(files or {}), "packages": list(packages), "setup": setup}
        for key, value in (("timeout", timeout), ("memory", memory), ("warm", warm)):
            if value is not None:
                body[key] = value
        return await self._json("POST", "templates", "id", whole=True, body=body, timeout=max(self.request_timeout,
                                                                                             (timeout or 300) + 60))

    def template(self, **kwargs: Any) -> dict:
        return run_sync(self.atemplate(**kwargs))

    async def atemplates(self) -> list[dict]:
        return await self._json("GET", "templates", "templates")

    def templates(self) -> list[dict]:
        """Your templates on the service."""
        return run_sync(self.atemplates())

    async def asandboxes(self) -> list["RemoteSandbox"]:
        return [RemoteSandbox(self, s) for s in await self._json("GET", "sandboxes", "sandboxes")]

    async def aget_sandbox(self, sandbox_id: str) -> "RemoteSandbox":
        owned = self._owned.get(sandbox_id)
        if owned is not None and not owned.closed:
            return owned
        return RemoteSandbox(self, await self._json("GET", f"sandboxes/{quote(sandbox_id, safe='')}", "id", whole=True))

    async def aclose(self) -> None:
        """Close the sandboxes this object created, then its HTTP clients (idempotent)."""
        if self._closed:
            return
        owned, self._owned = list(self._owned.values()), {}
        for sb in owned:
            try:
                await sb.aclose()
            except BurstlabError:
                pass  # already gone on the service, or the service is gone: nothing left to close
        self._closed = True
        for client in list(self._clients.values()):
            client.close()
        self._clients.clear()
        atexit.unregister(self.close)

    # -- blocking twins -----------------------------------------------------------------------------
    def info(self) -> dict:
        """``GET workspace``: user, version, scheduler address, ledger kind, idle timeout."""
        return run_sync(self.ainfo())

    def hosts(self) -> list[GpuInventoryEntry]:
        """GPU inventory: type, host, count, free, and whether found through NVML or declared."""
        return run_sync(self.ahosts())

    def list_sessions(self) -> list[SessionRecord]:
        """The user's running GPU sessions on the service (started through the API or in notebooks)."""
        return run_sync(self.alist_sessions())

    def session(self, spec: str | list[str] | GpuSpec, wait: float = 0.0, *,
                notebook: str | None = None) -> "RemoteSession":
        """Start a GPU session on the service; ``with ws.session("H100") as s:`` stops it at the end.
        ``wait``: seconds to queue for a free GPU (else CapacityError at once)."""
        return run_sync(self.asession(spec, wait, notebook=notebook))

    def get_session(self, id: str) -> "RemoteSession":
        return run_sync(self.aget_session(id))

    def stop_session(self, id: str) -> bool:
        return run_sync(self.astop_session(id))

    def list_maps(self) -> list[MapRecord]:
        """The user's maps running (or ended within the hour) on the service's cluster."""
        return run_sync(self.alist_maps())

    def cancel_map(self, id: str) -> bool:
        return run_sync(self.acancel_map(id))

    def budgets(self) -> list[BudgetStatus]:
        """The user's budgets, with what is spent against each."""
        return run_sync(self.abudgets())

    def usage(self, **filters: Any) -> list[UsageRecord]:
        """Ledger records (open intervals priced up to now), filtered by user, notebook, kind, since, until."""
        return run_sync(self.ausage(**filters))

    def usage_report(self, **filters: Any) -> dict:
        """Records and the service's totals (``billed_s``, ``cost_microusd``, ``by_kind``, ...)."""
        return run_sync(self.ausage_report(**filters))

    def sandbox(self, timeout: float | None = None, memory: int | str | None = None, network: bool = False, *,
                pids: int | None = None, cpus: float | None = None, notebook: str | None = None,
                template: str | None = None, env: dict | None = None, secrets: Any = None) -> "RemoteSandbox":
        """Create a sandbox on the service; ``with ws.sandbox(...) as sb:`` closes it at the end."""
        return run_sync(self.asandbox(timeout, memory, network, pids=pids, cpus=cpus, notebook=notebook,
                                      template=template, env=env, secrets=secrets))

    def sandboxes(self) -> list["RemoteSandbox"]:
        """The user's sandboxes on the service (including ones other clients created)."""
        return run_sync(self.asandboxes())

    def get_sandbox(self, sandbox_id: str) -> "RemoteSandbox":
        """A sandbox by id (another user's, or an unknown one, raises SandboxError)."""
        return run_sync(self.aget_sandbox(sandbox_id))

    def close(self) -> None:
        if not self._closed:
            run_sync(self.aclose())

    def __enter__(self) -> "RemoteWorkspace":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "RemoteWorkspace":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


# -- sessions ---------------------------------------------------------------------------------------

class RemoteSession:
    """A GPU session on the service: ``execute``/``execute_sync``, ``stop()``; a context manager that stops it.

    ``record`` is its :class:`~burstlab.wire.SessionRecord` as last read (``refresh()`` reads it again).
    """

    def __init__(self, workspace: RemoteWorkspace, record: SessionRecord) -> None:
        self.workspace = workspace
        self.record = record
        self.id = record.id
        self._path = f"sessions/{quote(self.id, safe='')}"

    def __repr__(self) -> str:
        return f"<RemoteSession {self.id} {self.record.spec} {self.record.state} on {self.workspace.url}>"

    @property
    def key(self) -> str:
        return self.record.spec

    @property
    def state(self) -> str:
        return self.record.state

    async def execute(self, code: str, timeout: float | None = None) -> Execution:
        """Run ``code`` on the session's kernel (``POST sessions/{id}/execute``); the user's error is in
        ``.error``. ``timeout``: seconds, after which the cell is interrupted (None: as long as it runs)."""
        if not isinstance(code, str):
            raise BurstlabError(f"execute() takes the cell's source as a str, not {type(code).__name__}.")
        data = await self.workspace._json("POST", f"{self._path}/execute", "outputs", whole=True,
                                          body={"code": code, "timeout": timeout},
                                          timeout=(float(timeout) + _SLACK) if timeout else _UNBOUNDED)
        return Execution.from_json(data)

    async def arefresh(self) -> SessionRecord:
        self.record = SessionRecord.from_json(await self.workspace._json("GET", self._path, "id", whole=True))
        return self.record

    async def astop(self) -> None:
        """Stop the session (its GPUs are free when this returns); idempotent."""
        if self.record.state != "running":
            return
        try:
            self.record = SessionRecord.from_json(
                await self.workspace._json("DELETE", self._path, "id", whole=True))
        except NotFoundError:  # stopped from elsewhere already
            self.record = dataclasses.replace(self.record, state="stopped")

    def execute_sync(self, code: str, timeout: float | None = None) -> Execution:
        """Blocking twin of :meth:`execute`."""
        return run_sync(self.execute(code, timeout))

    def refresh(self) -> SessionRecord:
        return run_sync(self.arefresh())

    def stop(self) -> None:
        run_sync(self.astop())

    def __enter__(self) -> "RemoteSession":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    async def __aenter__(self) -> "RemoteSession":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.astop()


# -- sandboxes --------------------------------------------------------------------------------------

class _NDJSON:
    """Splits a streamed body into JSON lines and dispatches the execute stream's events."""

    def __init__(self, on_output: Callable[[Output], Any] | None,
                 on_event: Callable[[dict], Any] | None = None) -> None:
        self.buffer = b""
        self.on_output = on_output
        self.on_event = on_event  # a watch's FileEvents (dicts), "end" included
        self.execution: Execution | None = None
        self.result: dict | None = None  # an exec's ExecResult JSON
        self.end: dict | None = None
        self.failure: str | None = None

    def feed(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self.event(line)

    def finish(self) -> None:
        if self.buffer.strip():
            self.event(self.buffer)
        self.buffer = b""

    def event(self, line: bytes) -> None:
        try:
            ev = json.loads(line)
        except ValueError:
            self.failure = f"the stream carried a line that is not JSON: {line[:200]!r}"
            return
        kind = ev.get("event") if isinstance(ev, dict) else None
        if kind == "output":
            if self.on_output is not None:
                self.on_output(Output.from_json(ev["output"]))
        elif kind == "done" and "result" in ev:
            self.result = ev["result"]
        elif kind == "done":
            self.execution = Execution.from_json(ev["execution"])
        elif self.on_event is not None and "path" in ev:  # a watch's events
            if kind == "end":
                self.end = ev
            self.on_event(ev)
        elif kind == "error":  # the service failed mid-stream (its status line had already gone out)
            self.failure = str(ev.get("message") or ev)


class RemoteSandbox:
    """A sandbox on the service: ``run()``, ``files``, ``usage()``, ``close()``; a context manager."""

    def __init__(self, workspace: RemoteWorkspace, info: dict) -> None:
        self.workspace = workspace
        self.info = info
        self.id: str = info["id"]
        self._path = f"sandboxes/{quote(self.id, safe='')}"
        self.files = RemoteFiles(self)

    def __repr__(self) -> str:
        return f"<RemoteSandbox {self.id} {self.state} on {self.workspace.url}>"

    @property
    def state(self) -> str:
        return self.info.get("state", "running")

    @property
    def closed(self) -> bool:
        return self.state == "closed"

    @property
    def network(self) -> bool:
        return bool(self.info.get("network", False))

    @property
    def limits(self) -> dict:
        return dict(self.info.get("limits") or {})

    # -- async core ---------------------------------------------------------------------------------
    def _run_timeout(self, timeout: float | None) -> float:
        own = timeout if timeout is not None else (self.limits.get("timeout") or 30)
        return float(own) + _SLACK

    async def arun(self, code: str, timeout: float | None = None,
                   on_output: Callable[[Output], Any] | None = None) -> Execution:
        """Run one cell; the user's errors and the limits it hits are in ``.error``.

        ``on_output(output)`` is called for each :class:`~burstlab.wire.Output` as the sandbox
        produces it (``?stream=1``); the returned Execution holds them all as well.
        """
        if not isinstance(code, str):
            raise SandboxError(f"run() takes the cell's source as a str, not {type(code).__name__}.")
        body = {"code": code, "timeout": timeout}
        req_timeout = self._run_timeout(timeout)
        if on_output is None:
            data = await self.workspace._json("POST", f"{self._path}/execute", "outputs", whole=True, body=body,
                                              timeout=req_timeout)
            return Execution.from_json(data)
        stream = _NDJSON(on_output)
        await self.workspace._request("POST", f"{self._path}/execute", body=body, params={"stream": 1},
                                      timeout=req_timeout, on_chunk=stream.feed)
        stream.finish()
        if stream.execution is None:
            raise SandboxError(f"The execute stream of sandbox {self.id} ended without its result"
                               f"{': ' + stream.failure if stream.failure else ''}. Run the cell again; if it "
                               "keeps happening, the service's log says why.")
        return stream.execution

    async def aexec(self, cmd, *, shell: bool = False, timeout: float | None = None,
                    on_output: Callable[[Output], Any] | None = None):
        """A command in the sandbox's jail (``POST sandboxes/{id}/exec``): a ``burstlab.sandbox.ExecResult``.
        ``on_output(output)`` is called with its stdout and stderr as they come (the NDJSON stream)."""
        from burstlab.wire import ExecResult

        body = {"cmd": cmd, "shell": shell, "timeout": timeout}
        if on_output is None:
            data = await self.workspace._json("POST", f"{self._path}/exec", "exit_code", whole=True, body=body,
                                              timeout=self._run_timeout(timeout))
        else:
            stream = _NDJSON(on_output)
            await self.workspace._request("POST", f"{self._path}/exec", body={**body, "stream": True},
                                          timeout=self._run_timeout(timeout), on_chunk=stream.feed)
            stream.finish()
            if stream.result is None:
                raise SandboxError(f"The exec stream of sandbox {self.id} ended without its result"
                                   f"{': ' + stream.failure if stream.failure else ''}. Run the command again.")
            data = stream.result
        return ExecResult(**{**data, "argv": tuple(data["argv"])})

    def exec(self, cmd, *, shell: bool = False, timeout: float | None = None,
             on_output: Callable[[Output], Any] | None = None):
        """Run a command (``["ls", "-la"]``, or ``"pip list"`` with ``shell=True``) in the sandbox's jail;
        ``on_output`` is called in *this* thread with each output as it comes."""
        if on_output is None:
            return run_sync(self.aexec(cmd, shell=shell, timeout=timeout))
        return _in_this_thread(lambda put: self.aexec(cmd, shell=shell, timeout=timeout, on_output=put), on_output)

    async def asnapshot(self, mode: str | None = "namespace") -> dict:
        """Snapshot the sandbox on the service (``POST sandboxes/{id}/snapshot``): the snapshot's record."""
        return await self.workspace._json("POST", f"{self._path}/snapshot", "id", whole=True,
                                          body={"mode": mode} if mode else {}, timeout=120)

    def snapshot(self, mode: str | None = "namespace") -> dict:
        return run_sync(self.asnapshot(mode))

    async def ainterrupt(self) -> None:
        """Interrupt the running cell: its run answers with the KeyboardInterrupt in ``.error``."""
        self.info = await self.workspace._json("POST", f"{self._path}/interrupt", "id", whole=True)

    async def arefresh(self) -> dict:
        self.info = await self.workspace._json("GET", self._path, "id", whole=True)
        return self.info

    async def ausage(self) -> dict:
        return dict((await self.arefresh()).get("usage") or {})

    async def aclose(self) -> None:
        if self.closed:
            return
        try:
            self.info = await self.workspace._json("DELETE", self._path, "id", whole=True)
        except SandboxError as exc:
            if getattr(exc, "status", None) != 404:
                raise
            self.info = {**self.info, "state": "closed"}  # closed from elsewhere already
        self.info.setdefault("state", "closed")
        self.workspace._owned.pop(self.id, None)

    # -- blocking twins -----------------------------------------------------------------------------
    def run(self, code: str, timeout: float | None = None,
            on_output: Callable[[Output], Any] | None = None) -> Execution:
        """Run one cell and return its Execution. ``on_output`` is called in *this* thread for each output
        as it is produced (so a notebook routes it to the calling cell). Ctrl-C in this thread interrupts
        the sandboxed cell, whose KeyboardInterrupt comes back in ``.error``."""
        if on_output is None:
            return run_interruptible(self.arun(code, timeout), self.ainterrupt)
        outputs: queue.SimpleQueue = queue.SimpleQueue()
        done = object()
        future = submit(self.arun(code, timeout, on_output=outputs.put))
        future.add_done_callback(lambda _f: outputs.put(done))
        try:
            while True:
                try:
                    item = outputs.get()
                except KeyboardInterrupt:
                    submit(self.ainterrupt())
                    continue
                if item is done:
                    return future.result()
                on_output(item)
        except BaseException:
            future.cancel()
            raise

    def interrupt(self) -> None:
        """Interrupt the running cell (from another thread than the one waiting on ``run``)."""
        run_sync(self.ainterrupt())

    def refresh(self) -> dict:
        """Fetch the sandbox's current state, limits and usage from the service."""
        return run_sync(self.arefresh())

    def usage(self) -> dict:
        """CPU seconds, wall seconds and peak memory, as the service measures them."""
        return run_sync(self.ausage())

    def close(self) -> None:
        """Close the sandbox on the service (its state and files are gone); idempotent."""
        if not self.closed:
            run_sync(self.aclose())

    def __enter__(self) -> "RemoteSandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    async def __aenter__(self) -> "RemoteSandbox":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


def _in_this_thread(start: Callable[[Callable[[Any], None]], Any], callback: Callable[[Any], Any]) -> Any:
    """Run ``start(put)`` on burstlab's loop and call ``callback`` in this thread with each item it puts."""
    items: queue.SimpleQueue = queue.SimpleQueue()
    done = object()
    future = submit(start(items.put))
    future.add_done_callback(lambda _f: items.put(done))
    while (item := items.get()) is not done:
        callback(item)
    return future.result()


class RemoteFiles:
    """``sb.files``: read, write, list and remove files in the sandbox's work dir, over HTTP."""

    def __init__(self, sandbox: RemoteSandbox) -> None:
        self._sb = sandbox

    def _path(self, path: str) -> str:
        if not isinstance(path, str):
            raise SandboxError(f"path={path!r}: give a relative path inside the work dir, e.g. \"data.csv\".")
        if path in (".", "./"):
            path = ""
        return f"{self._sb._path}/files/{quote(path, safe='/')}"

    async def aread(self, path: str) -> bytes:
        r = await self._sb.workspace._request("GET", self._path(path))
        if r.content_type.startswith("application/json"):
            raise SandboxError(f"{path!r} is a directory in the sandbox's work dir; use files.list({path!r}).")
        return r.body

    async def awrite(self, path: str, data: bytes | str) -> int:
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SandboxError(f"files.write takes bytes or str, not {type(data).__name__}.")
        answer = (await self._sb.workspace._request("PUT", self._path(path), raw=bytes(data))).json()
        return int(answer.get("size", len(data)))

    async def alist(self, path: str = ".") -> list[dict]:
        r = await self._sb.workspace._request("GET", self._path(path))
        if not r.content_type.startswith("application/json"):
            raise SandboxError(f"{path!r} is a file in the sandbox's work dir, not a directory; use files.read({path!r}).")
        return r.json()["entries"]

    async def aremove(self, path: str) -> None:
        await self._sb.workspace._request("DELETE", self._path(path))

    async def awatch(self, path: str, on_event: Callable[[dict], Any], timeout: float | None = None) -> str:
        """Watch a directory of the work dir (``GET sandboxes/{id}/files/watch``): ``on_event`` gets each
        ``FileEvent`` as a dict (``ready`` first, ``end`` last) until ``timeout`` seconds (default and most: the
        service's max_wait) pass; returns why the watch ended."""
        stream = _NDJSON(None, on_event)
        params = {"path": path, "timeout": timeout}
        await self._sb.workspace._request("GET", f"{self._sb._path}/files/watch", params=params,
                                          timeout=(timeout or 3600) + _SLACK, on_chunk=stream.feed)
        stream.finish()
        if stream.end is None:
            raise SandboxError(f"The watch of {path!r} in sandbox {self._sb.id} ended without its end event"
                               f"{': ' + stream.failure if stream.failure else ''}; watch again.")
        return str(stream.end.get("reason") or "")

    def watch(self, path: str, on_event: Callable[[dict], Any], timeout: float | None = None) -> str:
        """``awatch``, with ``on_event`` called in *this* thread."""
        return _in_this_thread(lambda put: self.awatch(path, put, timeout), on_event)

    def read(self, path: str) -> bytes:
        return run_sync(self.aread(path))

    def write(self, path: str, data: bytes | str) -> int:
        """Write ``data`` (str is UTF-8 encoded) to ``path``, creating parent dirs; returns the bytes written."""
        return run_sync(self.awrite(path, data))

    def list(self, path: str = ".") -> list[dict]:
        """Entries of a directory: name, type and size."""
        return run_sync(self.alist(path))

    def remove(self, path: str) -> None:
        run_sync(self.aremove(path))


__all__ = ["RemoteFiles", "RemoteSandbox", "RemoteSession", "RemoteWorkspace"]
