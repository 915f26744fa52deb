"""The notebook's environment, files and secrets follow its code across a real link to the fleet's hosts.

The notebook (root namespace) imports a small package the test installs only on its own side, and a module
beside the notebook; the hosts (`gpuA`, `gpuB`, their own namespaces and BURSTLAB_HOMEs) have neither.
"""

from __future__ import annotations

import ast
import hashlib
import os
import sqlite3
import subprocess
import sys
import zipfile

import pytest

from burstlab import fanout
from burstlab.remote_kernel import files
from burstlab.remote_kernel.prepare import _checked

SECRET = "fleet-secret-value-4e8a"


def _wheel(root, name: str, version: str, body: str):
    dist_info = f"{name}-{version}.dist-info"
    parts = {f"{name}/__init__.py": body,
             f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n",
             f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    whl = root / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        for arcname, text in parts.items():
            z.writestr(arcname, text)
        z.writestr(f"{dist_info}/RECORD", "".join(f"{a},,\n" for a in [*parts, f"{dist_info}/RECORD"]))
    return whl


@pytest.fixture(scope="module")
def beside(tmp_path_factory):
    """A package only the notebook has (pip-installed into a folder only it puts on its path), and the
    notebook's folder with a module of its own."""
    root = tmp_path_factory.mktemp("fleet-nb")
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site),
                    str(_wheel(root, "flt_env_pkg", "0.3", "VALUE = 'from the notebook'\n"))],
                   check=True, capture_output=True, timeout=300)
    folder = root / "notebooks"
    folder.mkdir()
    (folder / "fleet_local_mod.py").write_text(
        "import os\n\ndef shout(x):\n    import flt_env_pkg\n"
        "    return f'{x}:{flt_env_pkg.VALUE}:{os.environ.get(\"FLEET_SECRET\")}'\n")
    sys.path[:0] = [str(site), str(folder)]
    import fleet_local_mod  # noqa: F401
    import flt_env_pkg  # noqa: F401

    yield folder
    for p in (str(site), str(folder)):
        sys.path.remove(p)
    for m in ("fleet_local_mod", "flt_env_pkg"):
        sys.modules.pop(m, None)


def test_sync_ships_what_the_host_lacks_once(notebook, beside, monkeypatch):
    monkeypatch.chdir(beside)
    _checked.clear()
    checked = notebook.session("H100", reuse=False, environment="check")
    try:
        assert "flt-env-pkg  0.3   missing" in checked.prepared.report and checked.host == "gpuA"
        assert checked.execute_sync("import flt_env_pkg").error.ename == "ModuleNotFoundError"
    finally:
        checked.stop()
    synced = notebook.session("H100", reuse=False, environment="sync")
    try:
        assert {"flt_env_pkg-0.3-py3-none-any.whl"} <= set(synced.prepared.shipped)
        assert any(s.startswith("burstlab_local-") for s in synced.prepared.shipped)
        ex = synced.execute_sync("import socket, flt_env_pkg, fleet_local_mod\n"
                                 "(socket.gethostname(), fleet_local_mod.shout(1), '/envs/overlay-' in flt_env_pkg.__file__)")
        assert ast.literal_eval(ex.text) == ("gpuA", "1:from the notebook:None", True), ex
    finally:
        synced.stop()
    again = notebook.session("H100", reuse=False, environment="sync")  # a new kernel: the host's cache has it
    try:
        assert again.prepared.shipped_bytes == 0
        assert again.execute_sync("import flt_env_pkg; flt_env_pkg.VALUE").text == "'from the notebook'"
    finally:
        again.stop()


def test_files_up_and_down_across_the_link(notebook, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "CHUNK", 1 << 20)  # several windows of chunks in flight
    data = os.urandom(5 * (1 << 20) + 777)
    (tmp_path / "weights.bin").write_bytes(data)
    session = notebook.session("H100", reuse=False, environment="off")
    try:
        host_dir = session.execute_sync("import os, tempfile; os.chdir(tempfile.mkdtemp()); os.getcwd()").text
        up = files.upload(session, str(tmp_path / "weights.bin"), to="in/")
        assert (up.sent, up.bytes) == (1, len(data))
        there = session.execute_sync("import hashlib, socket; (socket.gethostname(), "
                                     "hashlib.sha256(open('in/weights.bin', 'rb').read()).hexdigest())").text
        assert ast.literal_eval(there) == ("gpuA", hashlib.sha256(data).hexdigest())
        assert files.upload(session, str(tmp_path / "weights.bin"), to="in/").sent == 0  # unchanged: not resent
        down = files.download(session, "in", to=str(tmp_path / "back"))
        assert down.bytes == len(data) and (tmp_path / "back" / "weights.bin").read_bytes() == data
        assert host_dir.strip("'") != str(tmp_path)
    finally:
        session.stop()


def test_secrets_reach_the_host_and_nothing_else(notebook, beside, monkeypatch):
    monkeypatch.setenv("FLEET_SECRET", SECRET)
    monkeypatch.chdir(beside)
    session = notebook.session("H100", reuse=False, environment="off", env={"WANDB_MODE": "offline"},
                               secrets=["FLEET_SECRET"])
    try:
        ex = session.execute_sync("import os, hashlib, socket\nprint(os.environ['FLEET_SECRET'])\n"
                                  "(socket.gethostname(), os.environ['WANDB_MODE'], "
                                  "hashlib.sha256(os.environ['FLEET_SECRET'].encode()).hexdigest())")
        assert ex.outputs[0].text == "[redacted]\n"
        assert ast.literal_eval(ex.text) == ("gpuA", "offline", hashlib.sha256(SECRET.encode()).hexdigest())
        assert SECRET not in session.execute_sync("'\\n'.join(_ih)").text
    finally:
        session.stop()
    # a map on the other host: its function comes from the module beside the notebook (synced), the secret is
    # set only around its tasks there, and its results come back redacted
    import fleet_local_mod

    out = fanout.map(fleet_local_mod.shout, range(3), gpu="A100", secrets=["FLEET_SECRET"], sync=True,
                     workspace=notebook, progress=False)
    assert out == [f"{i}:from the notebook:[redacted]" for i in range(3)]
    assert fanout.map(os.getenv, ["FLEET_SECRET"], gpu="A100", workspace=notebook, progress=False) == [None]
    with sqlite3.connect(os.path.join(notebook.config.home, "ledger.sqlite")) as db:
        dump = "\n".join(db.iterdump())
    assert "gpuA" in dump and SECRET not in dump and "FLEET_SECRET" not in dump
    assert SECRET not in repr(notebook.list_sessions()) + repr(notebook.list_maps())
