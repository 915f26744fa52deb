"""``jupyter burstlab kernelspecs install|list|remove``: the "Python 3 (burstlab · TYPE)" kernels.

The subcommand is dispatched here by name (``SUBCOMMANDS`` in jupyter_ext/app.py), like the
provisioner's entry point: kernelspecs are the provisioner's files, not workspace state.

``install`` reads the GPU inventory (the external scheduler's, with ``--scheduler`` or
BURSTLAB_SCHEDULER; else this host's, NVML's or declared, which is what the embedded cluster would
run), writes one kernelspec per GPU type and removes burstlab's kernelspecs for types that are gone,
so running it again after the fleet changes refreshes the launcher.
"""

from __future__ import annotations

import sys

from traitlets import Bool, Float, Unicode
from traitlets.config import Application

from burstlab.config import BurstLab

from . import _kernelspecs

_PLACE_FLAGS = {
    "user": ({"PlaceApp": {"user": True}}, "Under the user's Jupyter data folder (~/.local/share/jupyter/kernels)."),
    "sys-prefix": ({"PlaceApp": {"sys_prefix": True}}, f"Under this Python's prefix ({sys.prefix})."),
}


def inventory_types(config=None) -> list[str]:
    """The GPU types there are: the scheduler's when one is configured (``--scheduler``, BURSTLAB_SCHEDULER),
    else this host's, NVML's or declared (what the embedded cluster runs)."""
    settings = BurstLab(config=config)
    if settings.scheduler:
        from distributed import Client

        from ._tls import security_for
        from .cluster import inventory, slots

        with Client(settings.scheduler, timeout="10s", set_as_default=False,
                    security=security_for(settings.scheduler, settings.home)) as client:
            return sorted({entry.type for entry in inventory(slots(client))})
    from burstlab.gpus import discover

    return sorted({gpu.type for gpu in discover(settings.declared_gpus)})


class PlaceApp(Application):
    """Where kernelspecs go: --user, --sys-prefix, --prefix PATH, or (none) the system's Jupyter folder."""

    user = Bool(False, help="Install for this user only.").tag(config=True)
    sys_prefix = Bool(False, help="Install into sys.prefix (a virtual environment's own).").tag(config=True)
    prefix = Unicode("", help="Install under PREFIX/share/jupyter/kernels.").tag(config=True)

    flags = _PLACE_FLAGS
    aliases = {"prefix": "PlaceApp.prefix"}

    def place(self) -> dict:
        return {"user": self.user, "prefix": self.prefix or (sys.prefix if self.sys_prefix else None)}


class InstallApp(PlaceApp):
    name = "jupyter-burstlab-kernelspecs-install"
    description = "Write a 'Python 3 (burstlab · TYPE)' kernelspec per GPU type the workspace has; remove stale ones."
    classes = [BurstLab]
    gpu_wait = Float(0.0, help="Seconds a starting kernel waits for a free GPU (0: fail at once).").tag(config=True)
    aliases = {"prefix": "PlaceApp.prefix", "wait": "InstallApp.gpu_wait", "scheduler": "BurstLab.scheduler",
               "declared-gpus": "BurstLab.declared_gpus"}

    def start(self) -> None:
        types = inventory_types(self.config)
        if not types:
            from .lease import no_gpu_message

            print(no_gpu_message(), file=sys.stderr)
            self.exit(1)
        _, removed = _kernelspecs.install(types, wait=self.gpu_wait, **self.place())
        for gpu in types:
            print(f"Installed {_kernelspecs.spec_name(gpu)}: {_kernelspecs.display_name(gpu)}")
        for name in removed:
            print(f"Removed {name} (no such GPU type now)")


class ListApp(Application):
    name = "jupyter-burstlab-kernelspecs-list"
    description = "List the burstlab kernelspecs Jupyter finds."

    def start(self) -> None:
        found = _kernelspecs.installed()
        if not found:
            print("No burstlab kernelspecs; write them with `jupyter burstlab kernelspecs install --sys-prefix`.")
        for name, (gpu, path) in sorted(found.items()):
            print(f"{name:24} {gpu:10} {path}")


class RemoveApp(PlaceApp):
    name = "jupyter-burstlab-kernelspecs-remove"
    description = "Remove burstlab's kernelspecs from the place the flags name."

    def start(self) -> None:
        for name in _kernelspecs.remove(**self.place()):
            print(f"Removed {name}")


class KernelspecsApp(Application):
    """``jupyter burstlab kernelspecs``: dispatches to install, list or remove."""

    name = "jupyter-burstlab-kernelspecs"
    description = __doc__
    subcommands = {
        "install": (InstallApp, InstallApp.description),
        "list": (ListApp, ListApp.description),
        "remove": (RemoveApp, RemoveApp.description),
    }

    def start(self) -> None:
        if self.subapp is None:
            self.print_subcommands()
            self.exit(1)
        self.subapp.start()


__all__ = ["InstallApp", "KernelspecsApp", "ListApp", "RemoveApp", "inventory_types"]
