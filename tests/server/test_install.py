"""Installing the package enables the server extension (no `jupyter server extension enable`), and
`jupyter burstlab` exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_installing_enables_the_extension():
    out = subprocess.run([sys.executable, "-m", "jupyter", "server", "extension", "list"], capture_output=True,
                         text=True, timeout=60)
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout + out.stderr)
    assert re.search(r"burstlab\.jupyter_ext\s+enabled", text), text
    assert re.search(r"burstlab\.jupyter_ext\s+OK", text), text
    config = Path(sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d" / "burstlab.json"
    assert config.exists(), f"{config} is missing: reinstall with pip install -e ."


def test_jupyter_burstlab_command():
    script = Path(sys.executable).with_name("jupyter-burstlab")
    assert script.exists()
    out = subprocess.run([sys.executable, "-m", "jupyter", "burstlab", "--help-all"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and "Failed" not in out.stderr, out.stderr
    for option in ("--port", "--scheduler", "--tokens-file", "--BurstLabApp.tokens=", "--BurstLabApp.max_sandbox_memory"):
        assert option in out.stdout, option
