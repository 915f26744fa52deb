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
}


def _size(value: str, name: str) -> int:
    from burstlab.errors import SandboxError
    from burstlab.sandbox import parse_size

    try:
        return parse_size(value, name)
    except SandboxError as exc:
        raise ConfigError(f"c.BurstLabApp.{name}: {exc}") from None


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
    allow_sandbox_network = Bool(
        False, help="Whether API callers may create sandboxes with network=true (they share the host's network)."
    ).tag(config=True)
    default_notebook = Unicode("api", help="What API usage is attributed to when a request names no notebook.").tag(config=True)

    # Applied only when launched as `jupyter burstlab` (jupyter_server applies the starter app's config).
    serverapp_config = {
        "identity_provider_class": BurstLabIdentityProvider,
        "authorizer_class": BurstLabAuthorizer,
        "allow_root": True,  # sandboxes need root; the service is headless
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
            sandboxes_per_user=self.max_sandboxes_per_user,
        )
        table = TokenTable()
        table.add_many(self.tokens, "c.BurstLabApp.tokens")
        if self.tokens_file:
            table.load_file(self.tokens_file)
        workspace = Workspace(config=self.serverapp.config, notebook="jupyter-server", serve=True)
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
