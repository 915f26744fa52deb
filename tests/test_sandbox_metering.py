"""%%sandbox cells are metered into the same ledger as %%gpu sessions."""

from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import burstlab


def test_sandbox_cell_writes_a_ledger_interval():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "burstlab")
    ws = burstlab.get_workspace()
    before = len(ws.usage(kind="sandbox"))
    with capture_output() as out:
        result = shell.run_cell("%%sandbox\nprint(6 * 7)")
    try:
        assert result.success, result.error_in_exec
        assert "42" in out.stdout
        rows = ws.usage(kind="sandbox")[before:]
        assert len(rows) == 1
        assert rows[0].resource == "CPU" and rows[0].user == ws.user and rows[0].notebook == ws.notebook
    finally:
        shell.run_line_magic("sandbox_close", "")
    closed = ws.usage(kind="sandbox")[-1]
    assert closed.stop_ns is not None
    usage = closed.detail["usage"]  # CPU and wall seconds are recorded with the interval
    assert usage["cpu_s"] > 0 and usage["wall_s"] > 0
