"""PEP 517 build backend for burstlab: setuptools, plus the JupyterLab extension's npm build.

`pip install .` (build_wheel) and `pip install -e .` (build_editable) first build labextension/ with jlpm
(yarn 3, shipped by the Python package jupyter-builder, a build requirement) and then hand over to
setuptools.build_meta; setup.py ships labextension/prebuilt/ as data files under
share/jupyter/labextensions/burstlab-lab, where JupyterLab finds prebuilt extensions.

The npm build lives here, not in a setuptools command, because setuptools' editable_wheel turns an exception
raised in a customised build_py into a warning: a failed build must fail the install.

Environment:
  BURSTLAB_SKIP_LABEXTENSION=1  install without building the extension (ships labextension/prebuilt/ if present)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (every other hook is setuptools' own)

LAB = Path(__file__).resolve().parent
PREBUILT = LAB / "prebuilt"
# What the prebuilt extension is made from: a newer file here means it is rebuilt.
INPUTS = ("src", "style", "schema", "package.json", "yarn.lock", "tsconfig.json", "install.json", ".yarnrc.yml")


def _newest(paths) -> float:
    newest = 0.0
    for name in paths:
        p = LAB / name
        if p.is_dir():
            for f in p.rglob("*"):
                if f.is_file():
                    newest = max(newest, f.stat().st_mtime)
        elif p.exists():
            newest = max(newest, p.stat().st_mtime)
    return newest


def _run(cmd: list[str], env: dict[str, str], what: str) -> None:
    print(f"burstlab: {what}: {' '.join(cmd)} (in {LAB})", flush=True)
    result = subprocess.run(cmd, cwd=LAB, env=env)
    if result.returncode != 0:
        raise RuntimeError(
            f"burstlab: building the JupyterLab extension failed at `{' '.join(cmd)}` (exit {result.returncode}; "
            f"its output is above). Fix it in {LAB}, or install without the extension with "
            "BURSTLAB_SKIP_LABEXTENSION=1."
        )


def build_labextension(development: bool = False) -> None:
    """Build labextension/ into labextension/prebuilt/ unless it is already newer than its sources."""
    if os.environ.get("BURSTLAB_SKIP_LABEXTENSION", "").strip() not in ("", "0"):
        print("burstlab: BURSTLAB_SKIP_LABEXTENSION is set; the JupyterLab extension is not built", flush=True)
        return
    if not (LAB / "package.json").exists():
        return
    stamp = PREBUILT / "package.json"
    if stamp.exists() and (PREBUILT / "install.json").exists() and stamp.stat().st_mtime >= _newest(INPUTS):
        print("burstlab: the JupyterLab extension in labextension/prebuilt is up to date", flush=True)
        return
    env = dict(os.environ)
    if not shutil.which("jupyter-builder", path=env.get("PATH")):
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if not (shutil.which("node", path=env["PATH"]) or shutil.which("nodejs", path=env["PATH"])):
        message = ("burstlab: building the JupyterLab extension needs Node.js (>= 20), and `node` is not on PATH. "
                   "Install it (Debian: apt-get install nodejs; or conda install nodejs) and reinstall burstlab")
        if os.environ.get("CI"):  # CI must ship the extension: fail loudly
            raise RuntimeError(message + ", or install without the extension with BURSTLAB_SKIP_LABEXTENSION=1.")
        # Everything but the lab's panel works without it (magics, fan-out, sandboxes, the REST API): warn, go on.
        print(f"\n*** {message} to get the lab's status bar and panel. Installing without it. ***\n",
              file=sys.stderr, flush=True)
        return
    jlpm_path = shutil.which("jlpm", path=env["PATH"])
    jlpm = [jlpm_path] if jlpm_path else [sys.executable, "-c", "from jupyter_builder.jlpm import main; main()"]
    state = LAB / "node_modules" / ".yarn-state.yml"
    if not state.exists() or state.stat().st_mtime < _newest(("package.json", "yarn.lock")):
        _run([*jlpm, "install", "--immutable"], env, "installing the extension's npm dependencies")
    _run([*jlpm, "build" if development else "build:prod"], env, "building the JupyterLab extension")
    stamp.touch()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    build_labextension(development=False)
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    build_labextension(development=True)
    return _setuptools.build_editable(wheel_directory, config_settings, metadata_directory)
