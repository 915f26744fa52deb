"""%%sandbox in an IPython shell: streams, rich results and errors shown like a local cell's."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

from burstlab.errors import RemoteError
from burstlab.magics._sandbox import SandboxMagics


@pytest.fixture(scope="module")
def shell():
    sh = InteractiveShell.instance()
    magics = SandboxMagics(sh)
    sh.register_magics(magics)
    yield sh, magics
    sh.run_line_magic("sandbox_close", "")
    InteractiveShell.clear_instance()


def test_cell_runs_in_the_sandbox_and_state_persists(shell, capsys):
    sh, magics = shell
    sh.run_cell_magic("sandbox", "--timeout 10 --memory 256MiB", "import os\nx = 21\nprint('uid', os.getuid())")
    assert "uid 1000" in capsys.readouterr().out
    sh.run_cell_magic("sandbox", "", "print(x * 2)")
    assert capsys.readouterr().out == "42\n"
    assert "x" not in sh.user_ns  # it ran over there, not here
    assert magics.sandbox_obj.limits.memory == 256 * 1024**2


def test_rich_results_are_published(shell, monkeypatch):
    sh, _ = shell
    shown = []
    monkeypatch.setattr("IPython.display.publish_display_data", lambda data, metadata=None, **kw: shown.append(data))
    sh.run_cell_magic("sandbox", "", "from IPython.display import HTML\nHTML('<i>x</i>')")
    assert shown and shown[-1]["text/html"] == "<i>x</i>"


def test_errors_raise_with_the_sandbox_traceback(shell):
    sh, _ = shell
    with pytest.raises(RemoteError) as info:
        sh.run_cell_magic("sandbox", "", "1 / 0")
    assert info.value.ename == "ZeroDivisionError"
    assert any("ZeroDivisionError" in line for line in info.value._render_traceback_())
    with pytest.raises(RemoteError) as info:
        sh.run_cell_magic("sandbox", "--timeout 0.5", "import time\ntime.sleep(5)")
    assert info.value.ename == "SandboxTimeout"


def test_network_flag_gives_a_new_sandbox(shell, capsys):
    sh, magics = shell
    old = magics.sandbox_obj
    sh.run_cell_magic("sandbox", "--network", "import os\nprint(sorted(os.listdir('/sys/class/net')) if os.path.exists('/sys/class/net') else 'n/a')")
    assert magics.sandbox_obj is not old and magics.sandbox_obj.network
    assert "state is lost" in capsys.readouterr().err
