# JupyterLab for the browser tests (started by playwright.config.js): loopback only, a token, a fresh root,
# workspace and settings per run, declared GPUs and a temporary BURSTLAB_HOME (ledger) set by the config's env.
import os
from pathlib import Path
from tempfile import mkdtemp

c = get_config()  # noqa: F821

c.ServerApp.ip = "127.0.0.1"
c.ServerApp.port = int(os.environ.get("LAB_PORT", "8899"))
c.ServerApp.port_retries = 0
c.ServerApp.open_browser = False
c.Application.log_level = os.environ.get("LAB_LOG_LEVEL", "WARN")
c.ServerApp.allow_root = True  # CI runs as root
c.IdentityProvider.token = os.environ.get("LAB_TOKEN", "burstlab-ui-test-token")
# burstlab's server extension is enabled by the installed etc/jupyter config; name it here too.
c.ServerApp.jpserver_extensions = {"burstlab.jupyter_ext": True}
root = Path(os.environ.get("LAB_ROOT") or mkdtemp(prefix="burstlab-lab-root-"))
root.mkdir(parents=True, exist_ok=True)
c.ServerApp.root_dir = str(root)
c.LabApp.workspaces_dir = mkdtemp(prefix="burstlab-lab-ws-")
c.JupyterNotebookApp.workspaces_dir = c.LabApp.workspaces_dir  # Notebook 7 (`python -m notebook`), same settings
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
settings = Path(mkdtemp(prefix="burstlab-lab-settings-"))
(settings / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
(settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
    '{"fetchNews": "false", "checkForUpdates": false}'
)
# A quick refresh so the tests do not wait on the default 3 s poll.
(settings / "burstlab-lab").mkdir(parents=True)
(settings / "burstlab-lab" / "plugin.jupyterlab-settings").write_text('{"refreshInterval": 1}')
c.LabApp.user_settings_dir = str(settings)
c.JupyterNotebookApp.user_settings_dir = str(settings)
# The burstlab kernels ("Python 3 (burstlab · H100)", …) for the declared GPU types, installed for this server
# alone (docs/kernels.md; kernels.spec.ts opens one from the launcher).
from burstlab.remote_kernel._kernelspecs import install  # noqa: E402
from burstlab.remote_kernel.kernelspecs import inventory_types  # noqa: E402

kernels = Path(mkdtemp(prefix="burstlab-lab-kernels-"))
install(inventory_types(), prefix=str(kernels))
os.environ["JUPYTER_PATH"] = os.pathsep.join(p for p in (str(kernels / "share" / "jupyter"), os.environ.get("JUPYTER_PATH")) if p)
