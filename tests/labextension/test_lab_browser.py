"""The JupyterLab extension, end to end in a real headless Chromium (labextension/ui-tests, @playwright/test).

Runs the Playwright suite against `jupyter lab` with declared GPUs (H100:2, A100:1) and a throw-away
BURSTLAB_HOME: a `%%gpu H100` cell appears in the status bar and ticks, the side panel stops its session and
the next run starts a new one, "Run on GPU ▸ A100" runs a cell without editing it, an agent-marked cell lands
in the sandbox, and server errors are shown (burstlab.spec.ts); the panel at 200/250/400 px in light, dark and
high-contrast themes with axe-core, the money in the status bar, notifications for stops made elsewhere
(layout.spec.ts); the "ran on" label (the cell's own time and cost) and who ended a session (cell_label.spec.ts);
the burstlab kernels in the launcher and a budget's refusal of one (kernels.spec.ts); Notebook 7's top-bar meter and
sidebar panel when `notebook` is installed (notebook7.spec.ts), all against one server and one browser. Needs Debian's `chromium` and Node.js (.ci/run installs them).
Outside CI a missing browser or node skips with the command that installs it; under CI it fails.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UI_TESTS = ROOT / "labextension" / "ui-tests"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
INSTALLED = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "burstlab-lab" / "package.json"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _missing(what: str, fix: str) -> None:
    message = f"{what}; {fix}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _env() -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)  # `jupyter lab`, `jlpm` from this environment
    env = {k: v for k, v in os.environ.items() if not k.startswith("BURSTLAB_")}
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    env["CHROMIUM_PATH"] = CHROMIUM
    for name in ("LAB_PORT",):
        if name not in env:
            with socket.socket() as s:  # a free loopback port, so parallel runs do not collide
                s.bind(("127.0.0.1", 0))
                env[name] = str(s.getsockname()[1])
    # Notebook 7's spec (tests/notebook7.spec.ts) runs, against the same server, when the package is there.
    if importlib.util.find_spec("notebook") is not None and importlib.util.find_spec("notebook.app") is not None:
        env.setdefault("NOTEBOOK7", "1")
    return env


def test_lab_extension_is_installed():
    """`pip install` put the prebuilt extension where JupyterLab looks, with its settings schema."""
    assert INSTALLED.exists(), (
        f"{INSTALLED} is missing: the JupyterLab extension was not installed. Reinstall with `pip install -e .` "
        "(Node.js must be on PATH; see docs/labextension.md)."
    )
    meta = json.loads(INSTALLED.read_text())
    assert meta["name"] == "burstlab-lab"
    assert "@jupyterlab/notebook-extension:cell-executor" in meta["jupyterlab"]["disabledExtensions"]
    schema = INSTALLED.parent / "schemas" / "burstlab-lab" / "plugin.json"
    props = json.loads(schema.read_text())["properties"]
    assert {"defaultGpuType", "refreshInterval", "agentCells"} <= set(props)
    jupyter = Path(sys.executable).parent / "jupyter"
    listed = subprocess.run(
        [str(jupyter), "labextension", "list"], capture_output=True, text=True, timeout=60, env=_env()
    )
    assert "burstlab-lab" in listed.stdout + listed.stderr, listed.stdout + listed.stderr


def test_browser_suite():
    if not Path(CHROMIUM).exists():
        _missing(f"no Chromium at {CHROMIUM}", "install it with `apt-get install chromium` or set CHROMIUM_PATH")
    if not shutil.which("node"):
        _missing("Node.js is not on PATH", "install it (`apt-get install nodejs`)")
    if not INSTALLED.exists():
        pytest.fail(f"{INSTALLED} is missing: reinstall with `pip install -e .` (see docs/labextension.md)")
    env = _env()
    jlpm = shutil.which("jlpm", path=env["PATH"])
    assert jlpm, "jlpm is missing: it comes with jupyterlab (`pip install -e '.[test]'`)"
    install = subprocess.run(
        [jlpm, "install", "--immutable"], cwd=UI_TESTS, env=env, capture_output=True, text=True, timeout=240
    )
    assert install.returncode == 0, f"jlpm install in {UI_TESTS} failed:\n{install.stdout[-4000:]}{install.stderr[-2000:]}"
    run = subprocess.run(
        [str(UI_TESTS / "node_modules" / ".bin" / "playwright"), "test"],
        cwd=UI_TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    out = run.stdout + run.stderr
    print("\n".join(line for line in out.splitlines() if not line.startswith("[WebServer]")))
    print("Notebook 7 spec:", "ran" if env.get("NOTEBOOK7") == "1" else "not run (the `notebook` package is not installed)")
    assert run.returncode == 0, f"the browser tests failed (labextension/ui-tests):\n{out[-12000:]}"
    assert re.search(r"\b\d+ passed", out) and not re.search(r"\b\d+ (failed|flaky|skipped|did not run)", out), out[-4000:]
