"""A new session's kernel gets the notebook's environment, files and secrets, on a real (declared) GPU session.

The notebook side imports a package that only it has (installed by the test into a folder on this process's
path); the session's kernel runs in the GPU worker's own process tree and does not have it.
"""

import hashlib
import os
import sqlite3

import pytest

import burstlab
from burstlab.errors import ConfigError
from burstlab.remote_kernel.prepare import _checked, prepare


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    w = burstlab.Workspace(home=str(tmp_path_factory.mktemp("home")), notebook="prepare.ipynb")
    yield w
    w.close()


@pytest.fixture
def imported(notebook_side, monkeypatch):
    monkeypatch.syspath_prepend(str(notebook_side))
    import blx_demo  # noqa: F401

    _checked.clear()
    yield
    import sys

    sys.modules.pop("blx_demo", None)


def test_report_strict_and_sync_ship_once(ws, imported, tmp_path):
    session = ws.session("H100", reuse=False)
    try:
        done = prepare(session, notebook_dir=str(tmp_path))
        assert "blx-demo  1.2   missing" in done.report and done.shipped_bytes == 0
        with pytest.raises(ConfigError, match=r"differs from this notebook's(.|\n)*blx-demo"):
            prepare(session, strict=True, notebook_dir=str(tmp_path))
        assert session.execute_sync("import blx_demo").error.ename == "ModuleNotFoundError"
        done = prepare(session, sync=True, notebook_dir=str(tmp_path))
        assert done.shipped == ("blx_demo-1.2-py3-none-any.whl",) and done.shipped_bytes > 0
        assert session.execute_sync("import blx_demo; blx_demo.VALUE").text == "'one point two'"
    finally:
        session.stop()
    again = ws.session("H100", reuse=False)  # a fresh kernel on the same host: the cache has the wheel
    try:
        done = prepare(again, sync=True, notebook_dir=str(tmp_path))
        assert done.shipped_bytes == 0
        assert again.execute_sync("import importlib.metadata as m; m.version('blx-demo')").text == "'1.2'"
    finally:
        again.stop()


def test_env_and_secrets_reach_only_the_kernel(ws, monkeypatch):
    secret = "sk-blx-0123456789"
    monkeypatch.setenv("BLX_API_KEY", secret)
    session = ws.session("A100", reuse=False)
    try:
        prepare(session, env={"WANDB_MODE": "offline"}, secrets=["BLX_API_KEY"], check=False)
        ex = session.execute_sync("import os, hashlib; (os.environ['WANDB_MODE'], "
                                  "hashlib.sha256(os.environ['BLX_API_KEY'].encode()).hexdigest())")
        assert ex.text == "('offline', '%s')" % hashlib.sha256(secret.encode()).hexdigest()
        history = session.execute_sync("'\\n'.join(_ih)").text
        assert secret not in history  # it travelled as a variable, never as source
        shown = []
        ex = session.execute_sync("print(__import__('os').environ['BLX_API_KEY'])\n"
                                  "raise KeyError(__import__('os').environ['BLX_API_KEY'])", on_output=shown.append)
        assert shown[0].text == "[redacted]\n"  # what the kernel printed reaches the notebook redacted
        assert ex.error.evalue == "'[redacted]'" and secret not in "\n".join(ex.error.traceback)
    finally:
        session.stop()
    ledger = os.path.join(ws.config.home, "ledger.sqlite")
    with sqlite3.connect(ledger) as db:
        dump = "\n".join(db.iterdump())
    assert "prepare.ipynb" in dump  # the session's interval is there ...
    assert secret not in dump and "BLX_API_KEY" not in dump  # ... and nothing of its secrets
