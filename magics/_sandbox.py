"""``%%sandbox``: run a cell in this notebook's sandbox (one per notebook kernel, reused).

A thin front door over :class:`burstlab.sandbox.Sandbox`: the cell's stdout and stderr are written
to this kernel's streams, rich results are re-published as display data, and an error (the user's
own, or a limit's) is raised as :class:`~burstlab.errors.RemoteError`, whose traceback shows the
sandbox's frames, like a local cell's.
"""

from __future__ import annotations

import sys

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from burstlab.errors import RemoteError, SandboxError
from burstlab.wire import Execution


@magics_class
class SandboxMagics(Magics):
    """``%%sandbox [--timeout S] [--memory SIZE] [--network]`` and ``%sandbox_close``."""

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self.sandbox_obj = None  # the notebook's sandbox, created on first use

    def _sandbox_for(self, memory: str | None, network: bool):
        from burstlab.sandbox import Sandbox

        sb = self.sandbox_obj
        if sb is not None and sb.network != network:
            sys.stderr.write(
                f"[burstlab: network={'on' if network else 'off'} needs a new sandbox; the old one's state is lost]\n")
            sb.close()
            sb = self.sandbox_obj = None
        if sb is None:
            from burstlab.workspace import get_workspace

            ws = get_workspace(self.shell.config if self.shell is not None else None)
            kwargs = {"network": network, "meter": ws.meter, "user": ws.user, "notebook": ws.notebook}
            if memory:
                kwargs["memory"] = memory
            sb = self.sandbox_obj = Sandbox(**kwargs)
        elif memory:
            sb.reconfigure(memory=memory)
        return sb

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
            ex = sb.run(cell, timeout=args.timeout)
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
    """Show an Execution as a local cell would: streams, then rich outputs, then the error."""
    from IPython.display import publish_display_data

    for out in ex.outputs:
        if out.kind == "stream":
            (sys.stderr if out.name == "stderr" else sys.stdout).write(out.text)
        else:
            sys.stdout.flush()
            publish_display_data(data=dict(out.data), metadata=dict(out.metadata))
    sys.stdout.flush()
    sys.stderr.flush()
    if ex.error is not None:
        raise RemoteError(ex.error.ename, ex.error.evalue, ex.error.traceback)


__all__ = ["SandboxMagics", "render"]
