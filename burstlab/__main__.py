"""The ``burstlab`` command.

::

    burstlab quickstart [NOTEBOOK]          run the quickstart notebook headless and print what each cell showed
    burstlab worker tls://HOST:8786 [--declare H100:2] [--nthreads N] [--give-up S]
                                            serve this host's GPUs to an existing Dask cluster
                                            (TLS from Dask's config; reconnects for --give-up s)
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_OBJECT_REPR = re.compile(r"<[\w.]+ object( at 0x[0-9a-f]+)?>")
_TAG = re.compile(r"<[^>]+>")


def _show_output(output) -> str:
    kind = output.get("output_type")
    if kind == "stream":
        return output["text"]
    if kind in ("display_data", "execute_result"):
        data = output.get("data", {})
        text = data.get("text/plain", "")
        if _OBJECT_REPR.fullmatch(text) and "text/html" in data:  # e.g. IPython.display.HTML: show what it shows
            text = _TAG.sub("", data["text/html"]).strip() + "  (text/html)"
        return (f"Out: {text}" if kind == "execute_result" else text) + "\n"
    if kind == "error":
        return _ANSI.sub("", "\n".join(output.get("traceback", []))) + "\n"
    return ""


def quickstart(path: str | None = None) -> int:
    """Execute the quickstart notebook with nbclient and print every cell's source and outputs."""
    import nbformat
    from nbclient import NotebookClient

    from burstlab.gpus import nvml_gpus

    if not nvml_gpus() and not os.environ.get("BURSTLAB_DECLARED_GPUS") and not os.environ.get("BURSTLAB_SCHEDULER"):
        os.environ["BURSTLAB_DECLARED_GPUS"] = "H100:2"
        print("No GPU found through NVML: declaring BURSTLAB_DECLARED_GPUS=H100:2 for this run.\n")
    if path:
        notebook_path = Path(path)
    else:
        from importlib.resources import files

        notebook_path = Path(str(files("burstlab.examples") / "quickstart.ipynb"))
    nb = nbformat.read(notebook_path, as_version=4)
    os.environ.setdefault("BURSTLAB_NOTEBOOK", notebook_path.name)
    # The notebook's own kernel talks to this process over local IPC sockets, not TCP (ipykernel warns about
    # unencrypted TCP); its sockets live in a private temporary folder.
    from jupyter_client.manager import KernelManager

    with tempfile.TemporaryDirectory(prefix="burstlab-quickstart-") as sockets:
        km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
        client = NotebookClient(nb, km=km, timeout=300, resources={"metadata": {"path": str(notebook_path.parent)}})
        try:
            client.execute()
        finally:  # nbclient leaves a kernel it did not make running; one left behind warns as this process exits
            if km.has_kernel:
                km.shutdown_kernel(now=False)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        print("".join(f">>> {line}\n" if i == 0 else f"... {line}\n" for i, line in enumerate(cell.source.splitlines())), end="")
        for output in cell.get("outputs", []):
            print(_show_output(output), end="")
        print()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="burstlab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quickstart", help="run the quickstart notebook headless")
    q.add_argument("notebook", nargs="?", default=None)
    from burstlab.remote_kernel import worker

    worker.main_args(sub.add_parser("worker", help="serve this host's GPUs to an existing Dask scheduler"))
    args = parser.parse_args(argv)
    if args.command == "quickstart":
        return quickstart(args.notebook)
    return worker.main(args)


if __name__ == "__main__":
    sys.exit(main())
