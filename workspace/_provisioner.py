"""The kernel provisioner bound to a workspace: the ``jupyter_client.kernel_provisioners`` entry point.

``remote_kernel/provisioner.py`` holds the mechanics (lease, restart within the lease, poll, signals,
release); it sits below the workspace, so the workspace it leases through is chosen here: the Jupyter
server's (its burstlab extension puts its Manager in the server's settings), else this process's.
"""

from __future__ import annotations

from burstlab.remote_kernel.provisioner import GpuKernelProvisioner

from .workspace import get_workspace


class BurstlabProvisioner(GpuKernelProvisioner):
    """A notebook's kernel on a leased GPU, billed and listed by the server's (or this process's) workspace."""

    def _get_workspace(self):
        settings = self.server_settings()
        manager = settings.get("burstlab_manager") if settings is not None else None
        return manager.ws if manager is not None else get_workspace()


__all__ = ["BurstlabProvisioner"]
