"""``jupyter burstlab mcp``: burstlab's sandboxes as MCP tools, over stdio, for coding agents.

::

    BURSTLAB_URL=http://127.0.0.1:8888/ BURSTLAB_TOKEN=... jupyter burstlab mcp    # a running service
    jupyter burstlab mcp                                                           # in-process sandboxes
    python -m burstlab.jupyter_ext.mcp [--url URL] [--token-file PATH]             # the same, without jupyter

Tools: ``create_template``, ``create_sandbox``, ``run_cell``, ``sandbox_exec``, ``snapshot_sandbox``, ``restore_snapshot``,
``read_file``, ``write_file``, ``list_files``, ``list_sandboxes``, ``close_sandbox``. Each answers a short text summary for the model to read, and
the same facts as structured JSON (``run_cell``: the :class:`~burstlab.wire.Execution` JSON, as the
REST API returns it). A refused request (unknown sandbox, bad path, limit above the maximum, service
down) is a tool error whose text names the fix.

With a URL (``--url`` or ``$BURSTLAB_URL``) the tools go through :mod:`burstlab.client` to that
service, as the token's user, so the lab and other agents see the same sandboxes and one bill.
Without one they run :class:`burstlab.sandbox.Sandbox` in this process (root needed, as for any
sandbox), metered into the local workspace's ledger, under the same maxima as the REST service's
defaults (:class:`~burstlab.jupyter_ext.maxima.Maxima`: timeout, memory, sandboxes per user) and with
no network unless ``--allow-network`` is given. Either way a tool result carries at most
``Maxima.output`` bytes of output (the rest is dropped with a marker). Either way, sandboxes created through this
server are closed when it exits (its stdin closes). Prefer ``$BURSTLAB_TOKEN`` or ``--token-file``
to ``--token``: a command line is visible to every user of the machine.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import sys
from typing import Any, Literal

from traitlets import Bool, Unicode
from traitlets.config import Application

try:
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import CallToolResult, TextContent
except ImportError as exc:  # an optional extra: say how to get it when the command runs
    _MCP_MISSING: ImportError | None = exc
else:
    _MCP_MISSING = None

from burstlab.errors import BurstlabError
from burstlab.wire import Execution

from .bounds import bound_execution
from .maxima import Maxima

_USAGE = __doc__
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_MAX_TEXT = 20_000  # characters of any one stream in the text summary (the structured JSON has it all)
_MAX_SUMMARY = 100_000  # characters of the whole text summary

INSTRUCTIONS = (
    "burstlab sandboxes are isolated, stateful Python kernels (IPython): variables and imports persist between "
    "run_cell calls on the same sandbox. Call create_sandbox once, then run_cell as often as needed, and "
    "close_sandbox when done. The network is off unless create_sandbox(network=true). Files live in the "
    "sandbox's work dir (relative paths only). A run that hits a limit (timeout, memory) returns an error "
    "named SandboxTimeout / SandboxMemoryLimit inside the result; the sandbox keeps running."
)


# -- backends: the same five verbs over a service or in this process ---------------------------------

class RemoteBackend:
    """Sandboxes on a burstlab service, through :mod:`burstlab.client`."""

    def __init__(self, url: str, token: str) -> None:
        from burstlab.client import RemoteWorkspace

        self.ws = RemoteWorkspace(url, token)
        self.where = f"the burstlab service at {self.ws.url}"

    def create(self, timeout: float | None, memory: str | None, network: bool, template: str | None = None,
               env: dict | None = None, secrets: dict | None = None):
        if template is not None:
            sb = self.ws.sandbox(template=template, notebook="mcp")
        else:
            sb = self.ws.sandbox(timeout=timeout, memory=memory, network=network, notebook="mcp", env=env,
                                 secrets=secrets)
        return sb.id, sb

    def template(self, files: dict, packages: list, setup: str, timeout: float | None, memory: str | None) -> dict:
        return self.ws.template(files=files, packages=packages, setup=setup, timeout=timeout, memory=memory)

    def get(self, sandbox_id: str):
        return self.ws.get_sandbox(sandbox_id)

    def describe(self, sb) -> dict:
        return dict(sb.info)

    def list(self) -> list[dict]:
        return [dict(sb.info) for sb in self.ws.sandboxes()]

    def forget(self, sandbox_id: str) -> None:
        pass  # the workspace owns these sandboxes (and closes them): this backend keeps no table to forget from

    def snapshot(self, sb) -> dict:
        return sb.snapshot("namespace")

    def restore(self, snapshot_id: str):
        sb = self.ws.restore(snapshot_id, notebook="mcp")
        return sb.id, sb

    def close_all(self) -> None:
        self.ws.close()  # closes the sandboxes this server created


class LocalBackend:
    """Sandboxes in this process (:class:`burstlab.sandbox.Sandbox`), metered into the local ledger."""

    def __init__(self, maxima: Maxima | None = None) -> None:
        self.sandboxes: dict[str, Any] = {}
        self.templates: dict[str, Any] = {}  # id -> SandboxTemplate (built, with a warm pool of 1)
        self.maxima = maxima or Maxima()
        self.where = "this process (no BURSTLAB_URL: in-process sandboxes)"

    def _timeout(self, timeout: float | None) -> float | None:
        import math

        if timeout is None:
            return None
        if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
            raise BurstlabError(f"timeout={timeout!r} must be a positive number of seconds.")
        if timeout > self.maxima.timeout:
            raise BurstlabError(f"timeout={timeout:g} s is above this server's maximum of {self.maxima.timeout:g} s; "
                                "ask for less.")
        return float(timeout)

    def template(self, files: dict, packages: list, setup: str, timeout: float | None, memory: str | None) -> dict:
        from burstlab.workspace import SandboxTemplate, format_size, parse_size

        m = self.maxima
        size = parse_size(memory or min(1024**3, m.memory), "memory")
        if size > m.memory:
            raise BurstlabError(f"memory: {format_size(size)} is above this server's maximum of "
                                f"{format_size(m.memory)}; ask for less.")
        t = SandboxTemplate(files=files, packages=packages, setup=setup, memory=size,
                            timeout=self._timeout(timeout) or min(300.0, m.timeout))
        if t.id not in self.templates:
            if len(self.templates) >= 8:
                raise BurstlabError("8 templates are built here, this server's maximum; reuse one.")
            t.build()
            t.pool(1)
            self.templates[t.id] = t
        return {**self.templates[t.id].to_dict(), "warm": 1}

    def create(self, timeout: float | None, memory: str | None, network: bool, template: str | None = None,
               env: dict | None = None, secrets: dict | None = None):
        from burstlab.workspace import Limits, format_size, get_workspace, parse_size

        m = self.maxima
        if template is not None:
            return self._from_template(template)
        if network and not m.network:
            raise BurstlabError("network: this MCP server gives sandboxes no network; leave it false (the person "
                                "who starts it may pass --allow-network).")
        if len(self.sandboxes) >= m.sandboxes_per_user:
            raise BurstlabError(f"{len(self.sandboxes)} sandboxes are open, this server's maximum; close one with "
                                "close_sandbox first.")
        base = Limits()
        kwargs: dict[str, Any] = {"timeout": min(base.timeout, m.timeout), "memory": min(base.memory, m.memory),
                                  "pids": min(base.pids, m.pids), "cpus": min(base.cpus, m.cpus)}
        if timeout is not None:
            kwargs["timeout"] = self._timeout(timeout)
        if memory is not None:
            size = parse_size(memory, "memory")
            if size > m.memory:
                raise BurstlabError(f"memory: {format_size(size)} is above this server's maximum of "
                                    f"{format_size(m.memory)}; ask for less.")
            kwargs["memory"] = size
        # From the process workspace's warm pool (a new one when it has none ready), metered to its user.
        ws = get_workspace()
        if env or secrets:  # a sandbox of its own (a warm one has not got them)
            kwargs.update(env=env or {}, secrets=secrets or {})
        sb = _Bounded(ws.sandbox(**kwargs, network=bool(network), notebook="mcp"), self)
        sandbox_id = ws.sandbox_id(sb.sandbox)  # the workspace's one id for it (the one the panel and REST show)
        self.sandboxes[sandbox_id] = sb
        return sandbox_id, sb

    def _from_template(self, template_id: str):
        from burstlab.workspace import get_workspace

        t = self.templates.get(template_id)
        if t is None:
            raise BurstlabError(f"No template {template_id!r} here; create_template makes one.")
        if len(self.sandboxes) >= self.maxima.sandboxes_per_user:
            raise BurstlabError(f"{len(self.sandboxes)} sandboxes are open, this server's maximum; close one with "
                                "close_sandbox first.")
        ws = get_workspace()
        ws.admit_sandbox(ws.user, "mcp")
        raw = t.sandbox(meter=ws.meter, user=ws.user, notebook="mcp")  # from the template's warm pool when ready
        sb = _Bounded(raw, self)
        sandbox_id = ws.sandbox_id(raw)  # registered: budgets and the workspace's close reach it
        self.sandboxes[sandbox_id] = sb
        return sandbox_id, sb

    def get(self, sandbox_id: str):
        sb = self.sandboxes.get(sandbox_id)
        if sb is None:
            known = ", ".join(self.sandboxes) or "none"
            raise BurstlabError(f"No sandbox {sandbox_id!r} here (open: {known}); create one with create_sandbox.")
        return sb

    def describe(self, sb) -> dict:
        sandbox_id = next((k for k, v in self.sandboxes.items() if v is sb), "")
        sb = getattr(sb, "sandbox", sb)
        lim = sb.limits
        return {"id": sandbox_id, "state": "running" if sb.started else "closed", "network": sb.network,
                "limits": {"timeout": lim.timeout, "memory": lim.memory, "pids": lim.pids, "cpus": lim.cpus}}

    def list(self) -> list[dict]:
        return [self.describe(sb) for sb in self.sandboxes.values()]

    def forget(self, sandbox_id: str) -> None:
        self.sandboxes.pop(sandbox_id, None)

    def snapshot(self, sb) -> dict:
        return getattr(sb, "sandbox", sb).snapshot(mode="namespace").to_dict()

    def restore(self, snapshot_id: str):
        from burstlab.workspace import get_workspace

        m, ws = self.maxima, get_workspace()
        if len(self.sandboxes) >= m.sandboxes_per_user:
            raise BurstlabError(f"{len(self.sandboxes)} sandboxes are open, this server's maximum; close one with "
                                "close_sandbox first.")
        found = [s for s in ws.snapshots() if s.id == snapshot_id]
        if not found:
            raise BurstlabError(f"No snapshot {snapshot_id!r} here; snapshot_sandbox makes one.")
        lim = found[0].limits
        if lim["memory"] > m.memory or lim["timeout"] > m.timeout:
            raise BurstlabError(f"Snapshot {snapshot_id}'s limits are above this server's maxima.")
        sb = _Bounded(ws.restore_sandbox(snapshot_id, notebook="mcp"), self)
        sandbox_id = ws.sandbox_id(sb.sandbox)
        self.sandboxes[sandbox_id] = sb
        return sandbox_id, sb

    def close_all(self) -> None:
        for sb in list(self.sandboxes.values()):
            try:
                sb.close()
            except BurstlabError:
                pass
        self.sandboxes.clear()
        for t in self.templates.values():
            t.close()  # their warm pools (the builds stay cached)
        self.templates.clear()


class _Bounded:
    """A local sandbox whose ``run`` takes only timeouts within the maxima."""

    def __init__(self, sandbox, backend: LocalBackend) -> None:
        self.sandbox, self._backend = sandbox, backend

    def run(self, code: str, timeout: float | None = None):
        return self.sandbox.run(code, self._backend._timeout(timeout))

    def exec(self, cmd, *, shell: bool = False, timeout: float | None = None):
        return self.sandbox.exec(cmd, shell=shell, timeout=self._backend._timeout(timeout))

    def __getattr__(self, name: str):
        return getattr(self.sandbox, name)


# -- text summaries ---------------------------------------------------------------------------------

def _clip(text: str) -> str:
    if len(text) <= _MAX_TEXT:
        return text
    return text[:_MAX_TEXT] + f"\n[... {len(text) - _MAX_TEXT} more characters in the structured result]"


def summarise(ex: Execution) -> str:
    """What a model should read first: stdout, stderr, the value, rich outputs by type, the error."""
    parts = []
    if ex.stdout:
        parts.append("stdout:\n" + _clip(ex.stdout))
    if ex.stderr:
        parts.append("stderr:\n" + _clip(ex.stderr))
    rich = [o for o in ex.outputs if o.kind in ("display_data", "update_display_data")]  # an update is shown too
    for o in rich:
        kinds = ", ".join(sorted(o.data))
        parts.append(f"display ({kinds}):\n" + _clip(str(o.data.get("text/plain", ""))))
    if ex.text is not None:
        parts.append("result:\n" + _clip(ex.text))
    if ex.error is not None:
        tb = _ANSI.sub("", "\n".join(ex.error.traceback)).strip()
        parts.append(f"error: {ex.error.ename}: {ex.error.evalue}" + (f"\n{_clip(tb)}" if tb else ""))
    if not parts:
        parts.append("(no output)")
    text = "\n\n".join(parts)
    if len(text) > _MAX_SUMMARY:
        text = text[:_MAX_SUMMARY] + f"\n[... {len(text) - _MAX_SUMMARY} more characters]"
    return text + f"\n\n[{ex.duration_s:.3f} s, execution count {ex.execution_count}]"


def _secrets_from_file(names: list[str]) -> dict[str, str]:
    """Secrets an agent names come only from the person's secrets file, never from this process's environment
    (which holds their other credentials)."""
    from burstlab.secrets import resolve

    return resolve(names, environ={})


def _result(text: str, data: dict, is_error: bool = False) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data, is_error=is_error)


def _limits_text(info: dict) -> str:
    lim = info.get("limits") or {}
    mem = lim.get("memory")
    mem_text = f"{mem / 2**20:g} MiB" if isinstance(mem, (int, float)) else "?"
    return f"timeout {lim.get('timeout', '?')} s, memory {mem_text}, network {'on' if info.get('network') else 'off'}"


# -- the server -------------------------------------------------------------------------------------

def build_server(backend, maxima: Maxima | None = None) -> "MCPServer":
    """An MCPServer whose tools act through ``backend`` (RemoteBackend or LocalBackend); no result
    carries more than ``maxima.output`` bytes of output or file content."""
    server = MCPServer("burstlab", instructions=INSTRUCTIONS)
    limit = (maxima or getattr(backend, "maxima", None) or Maxima()).output

    def call(fn, *args):
        try:
            return fn(*args)
        except BurstlabError as exc:  # the platform refused: a tool error whose text names the fix
            raise ToolError(str(exc)) from exc

    @server.tool()
    def create_template(setup: str = "", files: dict[str, str] | None = None, packages: list[str] | None = None,
                        timeout: float | None = None, memory: str | None = None) -> CallToolResult:
        """Build a sandbox template once and return its id: files (text, by path in the work dir), packages that
        must import, and a setup cell run once whose variables every sandbox from it starts with. Building the
        same content again is instant. Then create_sandbox(template_id=...) starts sandboxes in that state, fast."""
        info = call(backend.template, dict(files or {}), list(packages or []), setup, timeout, memory)
        return _result(f"Template {info['id']} is built ({len(info['files'])} files, packages {info['packages']}); "
                       f"start sandboxes from it with create_sandbox(template_id={info['id']!r}).",
                       {"template_id": info["id"], "template": info})

    @server.tool()
    def create_sandbox(timeout: float | None = None, memory: str | None = None, network: bool = False,
                       template_id: str | None = None, env: dict[str, str] | None = None,
                       secrets: list[str] | None = None) -> CallToolResult:
        """Create an isolated, stateful Python sandbox and return its id.

        timeout: default seconds per run_cell (30 if not given); memory: e.g. "512MiB" or "2GiB";
        network: give it network access (off by default); template_id: start in a template's state (from
        create_template), with its limits; env: environment variables, e.g. {"WANDB_MODE": "offline"};
        secrets: names of secrets the person put in their BURSTLAB_HOME/secrets.env, set in the sandbox's
        environment (their values are never shown: outputs say [redacted])."""
        secret_values = call(_secrets_from_file, secrets) if secrets else None
        sandbox_id, sb = call(backend.create, timeout, memory, network, template_id, env, secret_values)
        info = backend.describe(sb)
        info["id"] = sandbox_id
        return _result(f"Created sandbox {sandbox_id} ({_limits_text(info)}) in {backend.where}.",
                       {"sandbox_id": sandbox_id, "sandbox": info})

    @server.tool()
    def run_cell(sandbox_id: str, code: str, timeout: float | None = None) -> CallToolResult:
        """Run Python code in the sandbox (like a notebook cell: state persists between calls).

        Returns stdout, stderr, the value of the last expression and any error, as text and as
        structured JSON (outputs, error, execution_count, duration_s). timeout: seconds for this run."""
        sb = call(backend.get, sandbox_id)
        ex: Execution = call(sb.run, code, timeout)
        data = bound_execution(ex.to_json(), limit)
        ex = Execution.from_json(data)
        data["sandbox_id"] = sandbox_id
        return _result(summarise(ex), data, is_error=False)

    @server.tool()
    def sandbox_exec(sandbox_id: str, command: str | list[str], timeout: float | None = None) -> CallToolResult:
        """Run a shell command in the sandbox (same files, limits and network as run_cell), e.g. "pip list" or
        ["ls", "-la"]. A string runs with /bin/sh -c. Returns the exit code, stdout and stderr."""
        sb = call(backend.get, sandbox_id)
        r = call(lambda: sb.exec(command, shell=isinstance(command, str), timeout=timeout))
        data = r.to_dict()
        data["stdout"], data["stderr"] = data["stdout"][:limit], data["stderr"][:limit]
        data["sandbox_id"] = sandbox_id
        parts = [f"exit code {r.exit_code}" + (f" ({r.error})" if r.error else "")]
        if r.stdout:
            parts.append("stdout:\n" + _clip(r.stdout))
        if r.stderr:
            parts.append("stderr:\n" + _clip(r.stderr))
        return _result("\n\n".join(parts) + f"\n\n[{r.duration_s:.3f} s]", data, is_error=False)

    @server.tool()
    def snapshot_sandbox(sandbox_id: str) -> CallToolResult:
        """Save the sandbox's state: its variables that can be pickled (the others are listed), its files and
        limits. restore_snapshot(snapshot_id) starts a new sandbox in that state (e.g. to try several plans)."""
        sb = call(backend.get, sandbox_id)
        snap = call(backend.snapshot, sb)
        missed = ", ".join(f"{k} ({v})" for k, v in snap["not_captured"].items()) or "none"
        return _result(_clip(f"snapshot {snap['id']} of {sandbox_id}: variables {', '.join(snap['captured']) or 'none'}; "
                             f"not captured: {missed}; {snap['size_bytes']} bytes"),
                       {"snapshot_id": snap["id"], "snapshot": snap})

    @server.tool()
    def restore_snapshot(snapshot_id: str) -> CallToolResult:
        """Start a new sandbox in the state a snapshot_sandbox call saved; returns the new sandbox's id."""
        sandbox_id, sb = call(backend.restore, snapshot_id)
        info = backend.describe(sb)
        return _result(f"sandbox {sandbox_id} restored from {snapshot_id} ({_limits_text(info)})",
                       {"sandbox_id": sandbox_id, "sandbox": info})

    @server.tool()
    def write_file(sandbox_id: str, path: str, content: str,
                   encoding: Literal["utf-8", "base64"] = "utf-8") -> CallToolResult:
        """Write a file into the sandbox's work dir (relative path; parent dirs are created).

        content is text (encoding "utf-8") or base64 of the bytes (encoding "base64")."""
        sb = call(backend.get, sandbox_id)
        if encoding == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except ValueError as exc:
                raise ToolError(f"content is not valid base64 ({exc}); send text with encoding=\"utf-8\".") from exc
        else:
            data = content.encode("utf-8")
        size = call(sb.files.write, path, data)
        return _result(f"Wrote {size} bytes to {path} in sandbox {sandbox_id}.",
                       {"sandbox_id": sandbox_id, "path": path, "size": size})

    @server.tool()
    def read_file(sandbox_id: str, path: str) -> CallToolResult:
        """Read a file from the sandbox's work dir. Text comes back as is; other bytes as base64."""
        sb = call(backend.get, sandbox_id)
        raw: bytes = call(sb.files.read, path)
        size, truncated = len(raw), len(raw) > limit * 3 // 4  # base64 grows it by a third
        if truncated:
            raw = raw[: limit * 3 // 4]
        try:
            text, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(raw).decode("ascii"), "base64"
        shown = _clip(text) if encoding == "utf-8" else f"[{len(raw)} bytes of binary data, base64 in the structured result]"
        if truncated:
            shown += (f"\n[burstlab: the file is {size:,} bytes; only the first {len(raw):,} are in this result "
                      "(read the rest with run_cell)]")
        return _result(shown, {"sandbox_id": sandbox_id, "path": path, "size": size, "encoding": encoding,
                               "content": text, "truncated": truncated})

    @server.tool()
    def list_files(sandbox_id: str, path: str = ".") -> CallToolResult:
        """List a directory of the sandbox's work dir: name, type (file/dir) and size of each entry."""
        sb = call(backend.get, sandbox_id)
        entries = call(sb.files.list, path)
        lines = [f"{e['name']}{'/' if e.get('type') == 'dir' else ''}\t{e.get('size', '')}" for e in entries]
        return _result("\n".join(lines) if lines else f"({path} is empty)",
                       {"sandbox_id": sandbox_id, "path": path, "entries": entries})

    @server.tool()
    def list_sandboxes() -> CallToolResult:
        """The sandboxes this user has open (ids, limits, state)."""
        infos = call(backend.list)
        lines = [f"{i.get('id')}: {i.get('state', '?')}, {_limits_text(i)}" for i in infos]
        return _result("\n".join(lines) if lines else "No sandboxes are open.", {"sandboxes": infos})

    @server.tool()
    def close_sandbox(sandbox_id: str) -> CallToolResult:
        """Close the sandbox: its processes, variables and files are gone."""
        sb = call(backend.get, sandbox_id)
        call(sb.close)
        backend.forget(sandbox_id)
        return _result(f"Closed sandbox {sandbox_id}.", {"sandbox_id": sandbox_id, "state": "closed"})

    return server


def make_backend(url: str | None, token: str | None, allow_network: bool = False):
    url = url if url is not None else os.environ.get("BURSTLAB_URL", "")
    if url:
        return RemoteBackend(url, token if token is not None else os.environ.get("BURSTLAB_TOKEN", ""))
    return LocalBackend(Maxima(network=allow_network))


def serve(url: str | None = None, token: str | None = None, token_file: str | None = None,
          allow_network: bool = False) -> int:
    """Serve the tools over stdio until the client closes stdin; close this server's sandboxes then."""
    if _MCP_MISSING is not None:
        print(f"burstlab mcp needs the `mcp` package ({_MCP_MISSING}); install it with pip install 'burstlab[mcp]'.",
              file=sys.stderr)
        return 2
    if token_file:
        with open(token_file) as f:
            token = f.read().strip()
    try:
        backend = make_backend(url, token, allow_network)
    except BurstlabError as exc:
        print(f"burstlab mcp: {exc}", file=sys.stderr)
        return 2
    server = build_server(backend)
    try:
        server.run("stdio")
    finally:
        backend.close_all()
    return 0


class McpApp(Application):
    """``jupyter burstlab mcp``: the subcommand the standalone app dispatches to (jupyter_ext/app.py)."""

    name = "jupyter-burstlab-mcp"
    description = _USAGE
    url = Unicode(None, allow_none=True, help="The service's base URL (default: $BURSTLAB_URL; none: in-process sandboxes).").tag(config=True)
    token = Unicode(None, allow_none=True, help="API token (default: $BURSTLAB_TOKEN; prefer it, or token_file, to a command line).").tag(config=True)
    token_file = Unicode("", help="Read the API token from this file.").tag(config=True)
    allow_network = Bool(False, help="In-process sandboxes only: let the model create sandboxes with network=true.").tag(config=True)
    aliases = {"url": "McpApp.url", "token": "McpApp.token", "token-file": "McpApp.token_file"}
    flags = {"allow-network": ({"McpApp": {"allow_network": True}}, "Let in-process sandboxes have network access.")}

    def start(self) -> None:
        code = serve(self.url, self.token, self.token_file or None, self.allow_network)
        if code:
            self.exit(code)


def main(argv: list[str] | None = None) -> int:
    """``python -m burstlab.jupyter_ext.mcp [--url URL] [--token-file PATH]``."""
    p = argparse.ArgumentParser(prog="python -m burstlab.jupyter_ext.mcp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=None, help="the service's base URL (default: $BURSTLAB_URL; none: in-process)")
    p.add_argument("--token", default=None, help="API token (default: $BURSTLAB_TOKEN; prefer it or --token-file)")
    p.add_argument("--token-file", default=None, help="read the API token from this file")
    p.add_argument("--allow-network", action="store_true", help="in-process sandboxes only: allow network=true")
    args = p.parse_args(argv)
    return serve(args.url, args.token, args.token_file, args.allow_network)


if __name__ == "__main__":
    sys.exit(main())
