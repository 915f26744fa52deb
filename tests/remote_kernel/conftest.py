"""Fixtures shared by the remote-kernel tests."""

import subprocess
import sys
import zipfile

import pytest


def make_wheel(path, name, version, body):
    """A real wheel file (what a build backend would produce) for pip to install."""
    dist_info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": body,
             f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n",
             f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    whl = path / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for arcname, text in files.items():
            z.writestr(arcname, text)
        z.writestr(f"{dist_info}/RECORD", "".join(f"{a},,\n" for a in [*files, f"{dist_info}/RECORD"]))
    return whl


@pytest.fixture(scope="session")
def notebook_side(tmp_path_factory):
    """blx-demo 1.2 installed by pip (pure) into a folder only the notebook side puts on its path."""
    root = tmp_path_factory.mktemp("nb")
    whl = make_wheel(root, "blx_demo", "1.2", "VALUE = 'one point two'\n")
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(whl)], check=True, capture_output=True, timeout=300)
    return site
