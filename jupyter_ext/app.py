"""``BurstLabApp``: the jupyter_server extension, and the standalone ``jupyter burstlab`` service.

Loaded into any Jupyter server (enabled by installing the package, through
``etc/jupyter/jupyter_server_config.d/burstlab.json``), it hosts the server's one Workspace and serves
the REST API under ``{base_url}burstlab/api/``. It sets ``BURSTLAB_URL`` and ``BURSTLAB_TOKEN`` in the
server's environment, so the kernels the server starts find this workspace.

``jupyter burstlab [--port 8890] [--scheduler tcp://...]`` runs the same API headless, for agents and
CI: no other extension, several API tokens each mapped to a user (``c.BurstLabApp.tokens``,
``c.BurstLabApp.tokens_file``), each user confined to the burstlab API and to their own objects.
Subcommands (``jupyter burstlab mcp``) are looked up in :data:`SUBCOMMANDS`.
"""

from __future__ import annotations

import json
import os
import sys

from jupyter_server.extension.application import ExtensionApp
from traitlets import Bool, Dict, Float, Int, Unicode

from burstlab.config import BurstLab
from burstlab.errors import ConfigError

from .auth import BurstLabAuthorizer, BurstLabIdentityProvider, TokenTable
from .handlers import routes
from .manager import Manager
from .maxima import Maxima

# Subcommands of `jupyter burstlab`: name -> ("package.module.AppClass", help), imported when run.
# The MCP server (jupyter_ext/mcp.py) is `jupyter burstlab mcp`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "mcp": ("burstlab.jupyter_ext.mcp.McpApp", "Serve the burstlab API to coding agents as an MCP server (stdio)."),
    "kernelspecs": ("burstlab.remote_kernel.kernelspecs.KernelspecsApp",
                    "Install, list or remove the 'Python 3 (burstlab · TYPE)' kernelspecs (a notebook's kernel on a GPU)."),
}


def _size(value: str, name: str) -> int:
    from burstlab.errors import SandboxError
    from burstlab.workspace import parse_size

    try:
        return parse_size(value, name)
    except SandboxError as exc:
        raise ConfigError(f"c.BurstLabApp.{name}: {exc}") from None


def _private_home(home: str) -> None:
    """BURSTLAB_HOME 0700: it holds the ledger (every user's usage), certificates and journals."""
    if not home:
        return
    try:
        os.makedirs(home, mode=0o700, exist_ok=True)
        st = os.stat(home)
        if st.st_uid == os.geteuid() and st.st_mode & 0o077:
            os.chmod(home, 0o700)
    except OSError as exc:
        raise ConfigError(f"Cannot make BURSTLAB_HOME {home!r} private ({exc.strerror}); point BURSTLAB_HOME "
                          "(c.BurstLab.home) at a folder this user owns.") from None


def _check_maxima(m: Maxima) -> None:
    import math

    for name, value in (("max_sandbox_timeout", m.timeout), ("max_sandbox_cpus", m.cpus), ("max_wait", m.wait)):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"c.BurstLabApp.{name} = {value!r} must be a finite number of at least 0.")
    for name, value in (("max_sandboxes_per_user", m.sandboxes_per_user), ("max_sandboxes", m.sandboxes),
                        ("max_sessions_per_user", m.sessions_per_user), ("max_waiting", m.waiters),
                        ("max_waiting_per_user", m.waiters_per_user), ("max_request_body", m.body),
                        ("max_output", m.output)):
        if value < 1:
            raise ConfigError(f"c.BurstLabApp.{name} = {value!r} must be at least 1.")


class BurstLabApp(ExtensionApp):
    """The burstlab REST API inside a Jupyter server, or on its own (``jupyter burstlab``)."""

    name = "burstlab"
    description = "The burstlab workspace as a service: GPU sessions, sandboxes, maps and usage over REST."
    load_other_extensions = False  # standalone: only the API (the extension loads beside others as usual)
    open_browser = False

    classes = [*ExtensionApp.classes, BurstLab]

    aliases = {
        "port": "ServerApp.port",
        "ip": "ServerApp.ip",
        "scheduler": "BurstLab.scheduler",
        "tokens-file": "BurstLabApp.tokens_file",
    }

    tokens = Dict(
        key_trait=Unicode(), value_trait=Unicode(),
        help="API tokens and the user each one is: {'TOKEN': 'alice'}. Each user sees only their own sessions, "
        "sandboxes and maps, and an API token opens the burstlab API only (not contents, kernels or terminals).",
    ).tag(config=True)
    tokens_file = Unicode(
        "", help="A JSON file {\"TOKEN\": \"USER\", ...} of more API tokens (read at start)."
    ).tag(config=True)

    max_sandbox_timeout = Float(600.0, help="Largest per-run timeout (seconds) an API caller may ask of a sandbox.").tag(config=True)
    max_sandbox_memory = Unicode("4GiB", help="Largest memory limit an API caller may give a sandbox.").tag(config=True)
    max_sandbox_pids = Int(1024, help="Largest pids limit an API caller may give a sandbox.").tag(config=True)
    max_sandbox_cpus = Float(4.0, help="Largest CPU quota (cores) an API caller may give a sandbox.").tag(config=True)
    max_sandboxes_per_user = Int(16, help="Sandboxes one user may hold at once (409 past it).").tag(config=True)
    max_sandboxes = Int(64, help="Sandboxes of all users together (409 past it).").tag(config=True)
    max_sandbox_memory_total = Unicode(
        "", help="Sum of the memory limits of all users' sandboxes (409 past it); empty: half the host's memory."
    ).tag(config=True)
    max_sessions_per_user = Int(4, help="GPU sessions one user may hold through the API at once (409 past it).").tag(config=True)
    max_wait = Float(300.0, help="Largest `wait` (seconds) a POST sessions may queue for a GPU.").tag(config=True)
    max_waiting = Int(
        8, help="POST sessions queueing or starting at once, all users together (each holds one of the API's own "
        "threads, never the server's); 409 past it."
    ).tag(config=True)
    max_waiting_per_user = Int(2, help="POST sessions one user may have queueing or starting at once.").tag(config=True)
    max_request_body = Unicode(
        "16MiB", help="Largest JSON request body; larger is a 413 before it is read (standalone: every route's "
        "limit, c.ServerApp.max_body_size)."
    ).tag(config=True)
    max_output = Unicode(
        "8MiB", help="Most output (as JSON) one execute response, stream or MCP tool result carries; the rest is "
        "dropped with a marker."
    ).tag(config=True)
    allow_sandbox_network = Bool(
        False, help="Whether API callers may create sandboxes with network=true (they share the host's network)."
    ).tag(config=True)
    default_notebook = Unicode("api", help="What API usage is attributed to when a request names no notebook.").tag(config=True)

    # Applied only when launched as `jupyter burstlab` (jupyter_server applies the starter app's config).
    serverapp_config = {
        "identity_provider_class": BurstLabIdentityProvider,
        "authorizer_class": BurstLabAuthorizer,
        "allow_root": True,  # sandboxes need root; the service is headless
        "reraise_server_extension_failures": True,  # a bad setting (a readable tokens file) stops it, not half of it
        "ip": "127.0.0.1",
        "open_browser": False,
        "jpserver_extensions": {"burstlab.jupyter_ext": True},
    }

    subcommands = dict(SUBCOMMANDS)

    @classmethod
    def get_extension_package(cls):
        return "burstlab.jupyter_ext"

    # -- extension hooks ------------------------------------------------------------------------

    def initialize_settings(self):
        from burstlab.workspace import Workspace

        maxima = Maxima(
            timeout=self.max_sandbox_timeout, memory=_size(self.max_sandbox_memory, "max_sandbox_memory"),
            pids=self.max_sandbox_pids, cpus=self.max_sandbox_cpus, network=self.allow_sandbox_network,
            sandboxes_per_user=self.max_sandboxes_per_user, sandboxes=self.max_sandboxes,
            sandbox_memory_total=(_size(self.max_sandbox_memory_total, "max_sandbox_memory_total")
                                  if self.max_sandbox_memory_total else 0),
            sessions_per_user=self.max_sessions_per_user, wait=self.max_wait, waiters=self.max_waiting,
            waiters_per_user=self.max_waiting_per_user, body=_size(self.max_request_body, "max_request_body"),
            output=_size(self.max_output, "max_output"),
        )
        _check_maxima(maxima)
        if isinstance(self.serverapp.identity_provider, BurstLabIdentityProvider):
            # Standalone: no route of this server reads a body past the maximum (uploads raise it after the token).
            self.serverapp.max_body_size = min(self.serverapp.max_body_size, maxima.body)
        table = TokenTable()
        table.add_many(self.tokens, "c.BurstLabApp.tokens")
        if self.tokens_file:
            table.load_file(self.tokens_file)
        workspace = Workspace(config=self.serverapp.config, notebook="jupyter-server", serve=True)
        # Several users: `jupyter burstlab` (its identity provider), or API tokens (c.BurstLab.isolate_sessions "auto")
        workspace.multi_user = isinstance(self.serverapp.identity_provider, BurstLabIdentityProvider) or bool(
            self.tokens or self.tokens_file)
        _private_home(workspace.config.home)
        self.manager = Manager(workspace, maxima, self.default_notebook)
        self.kernel_token = table.new_token(self.manager.owner)
        self.settings.update(burstlab_manager=self.manager, burstlab_tokens=table, burstlab_owner=self.manager.owner)
        self._publish_environment()

    def _publish_environment(self) -> None:
        """Tell the kernels this server starts where this workspace is, and a token for it."""
        server = self.serverapp
        os.environ["BURSTLAB_URL"] = f"http://127.0.0.1:{server.port}{server.base_url}"
        os.environ["BURSTLAB_TOKEN"] = self.kernel_token
        # The kernels' own workspaces join this one's cluster (through BURSTLAB_URL) and must bill into
        # the same ledger, as the same user, at the same prices: settings given as c.BurstLab.* in
        # jupyter_server_config.py reach IPython kernels only this way.
        config = self.manager.ws.config
        if not hasattr(self, "_saved_environment"):  # put back at stop (an in-process server in tests)
            self._saved_environment = {k: os.environ.get(k) for k in KERNEL_ENVIRONMENT}
        os.environ.update(BURSTLAB_HOME=config.home, BURSTLAB_USER=config.user, BURSTLAB_RATES=json.dumps(config.rates),
                          BURSTLAB_IDLE_TIMEOUT=repr(float(config.idle_timeout)))
        if config.ledger_url:
            os.environ["BURSTLAB_LEDGER_URL"] = config.ledger_url

    def initialize_handlers(self):
        self.serverapp.web_app.add_handlers(".*$", routes(self.serverapp.web_app.settings["base_url"]))

    async def _start_jupyter_server_extension(self, serverapp):
        """Once the server listens (its port is final now): publish the environment again."""
        self._publish_environment()
        self.log.info("burstlab: REST API at %sburstlab/api/", serverapp.connection_url)

    async def stop_extension(self):
        """Server shutdown: close every sandbox, release every GPU session, close every ledger interval."""
        manager = getattr(self, "manager", None)
        if manager is not None:
            await manager.close()
        if os.environ.get("BURSTLAB_TOKEN") == getattr(self, "kernel_token", None):
            os.environ.pop("BURSTLAB_TOKEN", None)
            os.environ.pop("BURSTLAB_URL", None)
            for key, value in getattr(self, "_saved_environment", {}).items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


KERNEL_ENVIRONMENT = ("BURSTLAB_HOME", "BURSTLAB_USER", "BURSTLAB_RATES", "BURSTLAB_IDLE_TIMEOUT", "BURSTLAB_LEDGER_URL")


def main(argv=None):
    """``jupyter burstlab`` / ``jupyter-burstlab``."""
    args = sys.argv[1:] if argv is None else argv
    BurstLabApp.launch_instance(args)


__all__ = ["BurstLabApp", "SUBCOMMANDS", "main"]
