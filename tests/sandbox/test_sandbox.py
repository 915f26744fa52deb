"""Ordinary behaviour: runs, state, rich results, errors, files, limits that end in errors, metering, cleanup."""

from __future__ import annotations

import asyncio
import os

import pytest

from burstlab._sync import run_sync
from burstlab.billing import Meter, RateCard, open_ledger
from burstlab.errors import SandboxError, SandboxLimitError
from burstlab.sandbox import Sandbox


def test_the_issue_example(sb):
    ex = sb.run("import numpy as np\nx = np.arange(5)\nprint(x.sum())\nx * 2")
    assert ex.error is None
    assert ex.stdout == "10\n"
    assert ex.text == "array([0, 2, 4, 6, 8])"
    assert sb.run("x.mean()").text == "np.float64(2.0)"  # state persists between runs


def test_user_errors_are_data(sb):
    ex = sb.run("def f():\n    raise ValueError('bad input')\nf()")
    assert ex.error is not None and ex.error.ename == "ValueError" and ex.error.evalue == "bad input"
    assert any("bad input" in line for line in ex.error.traceback)
    assert sb.run("1 + 1").text == "2"


def test_stderr_and_rich_results(sb):
    ex = sb.run("import sys\nprint('oops', file=sys.stderr)\nfrom IPython.display import HTML, display\n"
                "display(HTML('<b>hi</b>'))\n42")
    assert ex.stderr == "oops\n"
    assert ex.results[0]["text/html"] == "<b>hi</b>"
    assert ex.text == "42"


def test_matplotlib_png(sb):
    pytest.importorskip("matplotlib")
    ex = sb.run("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
    assert ex.error is None, ex.error
    assert any("image/png" in r for r in ex.results)


def test_files_round_trip(sb):
    sb.files.write("data.csv", b"a,b\n1,2\n")
    ex = sb.run("print(open('data.csv').read(), end='')\n"
                "import os; os.makedirs('out', exist_ok=True); open('out/res.txt', 'w').write('done')")
    assert ex.stdout == "a,b\n1,2\n"
    assert sb.files.read("out/res.txt") == b"done"
    names = {e["name"]: e for e in sb.files.list(".")}
    assert names["data.csv"]["type"] == "file" and names["data.csv"]["size"] == 8 and names["out"]["type"] == "dir"
    sb.files.write("nested/dir/x.txt", "ü")
    assert sb.files.read("nested/dir/x.txt") == "ü".encode()
    assert sb.run("open('nested/dir/x.txt', encoding='utf-8').read()").text == "'ü'"
    sb.files.remove("nested/dir/x.txt")
    assert sb.files.list("nested/dir") == []
    with pytest.raises(SandboxError, match="does not exist"):
        sb.files.read("nope.txt")


def test_file_size_limits(sb):
    with pytest.raises(SandboxLimitError, match="upload limit"):
        sb.files.write("big.bin", b"x" * (2 * 1024 * 1024))
    sb.run("open('big.bin', 'wb').write(b'x' * (2 * 1024 * 1024))")
    with pytest.raises(SandboxLimitError, match="download limit"):
        sb.files.read("big.bin")
    sb.run("import os; os.remove('big.bin')")


def test_timeout_interrupts_and_keeps_state(sb):
    sb.run("kept = 'yes'")
    ex = sb.run("import time\nwhile True: time.sleep(0.01)", timeout=1)
    assert ex.error.ename == "SandboxTimeout" and "state are kept" in ex.error.evalue
    assert sb.run("kept").text == "'yes'"


def test_output_is_capped_at_the_source_with_a_marker(sb):
    ex = sb.run("print('x' * 1_000_000)\nfor i in range(100): display({'text/plain': 'y' * 10_000}, raw=True)")
    assert len(ex.stdout) <= 256 * 1024
    assert "output limit of 256 KiB per run reached" in ex.stderr and "more bytes were dropped" in ex.stderr
    assert ex.results == []
    assert sb.run("print('small')").stdout == "small\n"  # the budget is per run


def test_usage_reports_cpu_wall_memory(sb):
    sb.run("sum(range(10**6))")
    u = sb.usage()
    assert u["cpu_s"] > 0 and u["wall_s"] > 0 and u["memory_bytes"] > 0 and u["memory_peak_bytes"] >= u["memory_bytes"]


def test_restart_loses_state_keeps_files(sb):
    sb.run("gone = 1")
    sb.files.write("keep.txt", b"k")
    before = sb.restarts
    sb.restart()
    assert sb.restarts == before + 1
    assert sb.run("gone").error.ename == "NameError"
    assert sb.files.read("keep.txt") == b"k"


def test_bad_arguments_name_the_fix():
    with pytest.raises(SandboxError, match="512MiB"):
        Sandbox(memory="lots")
    with pytest.raises(SandboxError, match="str"):
        Sandbox().run(b"1+1")  # type: ignore[arg-type]


def test_metering_records_one_interval_from_create_to_close(tmp_path):
    ledger = open_ledger("", tmp_path)
    meter = Meter(ledger, RateCard.from_config(), heartbeat_s=0)
    with Sandbox(meter=meter, user="ada", notebook="nb.ipynb") as s:
        s.run("1")
        open_ids = [r for r in ledger.usage() if r.stop_ns is None]
        assert len(open_ids) == 1
    recs = ledger.usage()
    assert len(recs) == 1
    r = recs[0]
    assert (r.kind, r.resource, r.user, r.notebook) == ("sandbox", "CPU", "ada", "nb.ipynb")
    assert r.stop_ns is not None and r.stop_ns > r.start_ns
    meter.close()
    ledger.close()


def test_without_a_meter_nothing_is_recorded(tmp_path):
    ledger = open_ledger("", tmp_path)
    with Sandbox() as s:
        s.run("1")
    assert ledger.usage() == []
    ledger.close()


def test_async_api_and_concurrent_sandboxes():
    async def main():
        async with Sandbox() as a, Sandbox() as b:
            ra, rb = await asyncio.gather(a.arun("import os; os.getpid(), 'a'"), b.arun("'b'"))
            return ra.text, rb.text


    ta, tb = run_sync(main())
    assert ta.endswith("'a')") and tb == "'b'"


def test_close_leaves_nothing_behind(leftovers):
    sandbox_processes, _ = leftovers
    s = Sandbox()
    s.start()
    s.run("import subprocess; p = subprocess.Popen(['sleep', '1000'])")
    state, cg = s.state_dir, s._cgroup
    dirs = list(cg.dirs.values())
    s.close()
    assert not os.path.exists(state)
    assert not any(os.path.exists(d) for d in dirs)
    assert not [p for p in sandbox_processes() if _uid_of(p) == s.uid]
    with pytest.raises(SandboxError, match="closed"):
        s.run("1")


def _uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def test_close_does_not_wait_for_the_running_cell(leftovers):
    """A DELETE (or a shutdown) while a long cell runs ends it at once; it used to wait the cell's whole timeout."""
    sandbox_processes, _ = leftovers

    async def main():
        s = Sandbox(timeout=60)
        await s.astart()
        cell = asyncio.ensure_future(s.arun("import time; print('started', flush=True); time.sleep(55)"))
        await asyncio.sleep(0.5)
        t0 = asyncio.get_running_loop().time()
        await s.aclose()
        took = asyncio.get_running_loop().time() - t0
        return s, took, await asyncio.wait_for(cell, 5)

    s, took, ex = run_sync(main())
    assert took < 5, f"close waited {took:.1f} s for the running cell"
    assert ex.error is not None and ex.error.ename == "SandboxClosed", ex
    assert "Create a new Sandbox()" in ex.error.evalue
    assert not [p for p in sandbox_processes() if _uid_of(p) == s.uid]
    with pytest.raises(SandboxError, match="closed"):
        s.run("1")
