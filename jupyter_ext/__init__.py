"""burstlab's jupyter_server extension: the workspace as a service (REST API under ``{base_url}burstlab/api/``).

Installing the package enables it in every Jupyter server (``etc/jupyter/jupyter_server_config.d/
burstlab.json``); ``jupyter burstlab`` runs it standalone. See docs/api.md and docs/architecture.md.
"""

from .app import BurstLabApp, main


def _jupyter_server_extension_points():
    return [{"module": "burstlab.jupyter_ext", "app": BurstLabApp}]


__all__ = ["BurstLabApp", "main"]
