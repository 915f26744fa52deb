"""``%%sandbox``: run a cell in this notebook's sandbox (one per notebook kernel, reused).

A thin front door over a sandbox: the cell's stdout and stderr are written to this kernel's
streams, rich results are re-published as display data, and an error (the user's own, or a
limit's) is raised as :class:`~burstlab.errors.RemoteError`, whose traceback shows the sandbox's
frames, like a local cell's.

Which sandbox: in a kernel started by a Jupyter server with burstlab, the server's workspace tells
the kernel where it is (``BURSTLAB_URL`` and ``BURSTLAB_TOKEN``), and the notebook's sandbox is
created on the server through :mod:`burstlab.client`, so the lab and agents see it. Elsewhere
(plain IPython, a script) it is an in-process :class:`burstlab.sandbox.Sandbox`, as before.
Rendering and errors are the same either way.
"""

from __future__ import annotations

import os
import sys

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from burstlab.errors import RemoteError, SandboxError
from burstlab.wire import Execution

from .render import Publisher


def _say(text: str) -> None:
    sys.stderr.write(f"[burstlab: {text}]\n")


@magics_class
class SandboxMagics(Magics):
    """``%%sandbox [--timeout S] [--memory SIZE] [--network]`` and ``%sandbox_close``."""

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self.sandbox_obj = None  # the notebook's sandbox (local Sandbox or RemoteSandbox), created on first use
        self._client = None      # burstlab.client.RemoteWorkspace, when the kernel's server hosts the workspace
        self._client_for: tuple[str, str] = ("", "")  # the (BURSTLAB_URL, BURSTLAB_TOKEN) it was made for

    # -- where the sandbox lives ----------------------------------------------------------------
    def _remote_workspace(self):
        """The server's workspace (``BURSTLAB_URL`` set by the server for its kernels), or None."""
        url, token = os.environ.get("BURSTLAB_URL", ""), os.environ.get("BURSTLAB_TOKEN", "")
        if not url:
            return None
        if self._client is None or self._client_for != (url, token):
            from burstlab.client import RemoteWorkspace

            self._client, self._client_for = RemoteWorkspace(url, token), (url, token)
        return self._client

    def _sandbox_for(self, memory: str | None, network: bool):
        remote = self._remote_workspace()
        sb = self.sandbox_obj
        if sb is not None and (remote is None) != (getattr(sb, "workspace", None) is None):
            sb.close()  # BURSTLAB_URL appeared or went away: the old sandbox is in the other place
            sb = self.sandbox_obj = None
        if sb is not None and sb.network != network:
            _say(f"network={'on' if network else 'off'} needs a new sandbox; the old one's state is lost")
            sb.close()
            sb = self.sandbox_obj = None
        if remote is not None:
            return self._remote_sandbox(remote, sb, memory, network)
        if sb is None:  # the notebook's sandbox: from the workspace's pool, metered as this notebook
            from burstlab.workspace import get_workspace

            ws = get_workspace(self.shell.config if self.shell is not None else None)
            sb = self.sandbox_obj = ws.sandbox(memory=memory or None, network=network)
        elif memory:
            sb.reconfigure(memory=memory)
        return sb

    def _remote_sandbox(self, remote, sb, memory: str | None, network: bool):
        from burstlab.workspace import default_notebook, parse_size

        if sb is not None and memory and parse_size(memory, "memory") != sb.limits.get("memory"):
            # The service has no way to change a running sandbox's memory: a new one it is.
            _say(f"--memory {memory} needs a new sandbox on the server; the old one's state is lost")
            sb.close()
            sb = self.sandbox_obj = None
        if sb is None:
            sb = self.sandbox_obj = remote.sandbox(memory=memory, network=network, notebook=default_notebook())
        return sb

    def _run(self, sb, cell: str, timeout: float | None) -> Execution:
        try:
            return sb.run(cell, timeout=timeout)
        except SandboxError as exc:
            if getattr(exc, "status", None) != 404 or getattr(sb, "workspace", None) is None:
                raise
        # The server no longer has the notebook's sandbox (closed from the lab or by an agent): start over.
        old = sb.id
        self.sandbox_obj = None
        sb = self._remote_sandbox(sb.workspace, None, None, sb.network)
        _say(f"the notebook's sandbox {old} was closed on the server; this cell runs in a new one "
             f"({sb.id}), so earlier state is lost")
        return sb.run(cell, timeout=timeout)

    # -- magics ---------------------------------------------------------------------------------
    @magic_arguments()
    @argument("--timeout", type=float, default=None, help="wall-clock seconds for this cell (default: the sandbox's, 30)")
    @argument("--memory", default=None, help='memory limit, e.g. "512MiB" or "2GiB"')
    @argument("--network", action="store_true", help="give the sandbox the network (off by default)")
    @cell_magic
    def sandbox(self, line: str, cell: str):
        """Run this cell in the notebook's sandbox: an isolated kernel whose state persists between cells."""
        args = parse_argstring(self.sandbox, line)
        try:
            sb = self._sandbox_for(args.memory, args.network)
            ex = self._run(sb, cell, args.timeout)
        except SandboxError as exc:
            raise RemoteError("SandboxError", str(exc)) from None
        render(ex)

    @line_magic
    def sandbox_close(self, line: str = ""):
        """Close this notebook's sandbox (its state and files are gone)."""
        if self.sandbox_obj is not None:
            self.sandbox_obj.close()
            self.sandbox_obj = None


def render(ex: Execution) -> None:
    """Show an Execution as a local cell would, in order, with the one renderer ``%%gpu`` cells use
    (:class:`~burstlab.magics.render.Publisher`: streams, displays and their updates, clear_output);
    the sandbox's value is shown as a display, then the error is raised."""
    from IPython.display import publish_display_data

    publish = Publisher()
    for out in ex.outputs:
        if out.kind == "execute_result":  # a %%sandbox cell shows its value; it does not return it
            sys.stdout.flush()
            publish_display_data(data=dict(out.data), metadata=dict(out.metadata))
        else:
            publish(out)
    publish.finish()
    sys.stdout.flush()
    sys.stderr.flush()
    if ex.error is not None:
        err = ex.error
        tb = list(err.traceback)
        if err.ename.startswith("Sandbox") and tb:
            # A limit's traceback is the interrupted code's (KeyboardInterrupt); end it with what happened and the fix.
            tb.append(f"\x1b[0;31m{err.ename}\x1b[0m: {err.evalue}")
        raise RemoteError(err.ename, err.evalue, tb)


__all__ = ["SandboxMagics", "render"]
