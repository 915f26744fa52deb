"""What a new user trips over, one test per item (messages asserted word for word where they are the point)."""

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

import burstlab
from burstlab.errors import CapacityError, GpuSpecError

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def ws(tmp_path_factory):  # declared H100:2, A100:1 (tests/conftest.py)
    w = burstlab.Workspace(home=str(tmp_path_factory.mktemp("home")), notebook="newcomer.ipynb")
    yield w
    w.close()


def test_an_impossible_count_is_refused_at_once_with_one_message(ws):
    ws.hosts()  # the embedded cluster is up
    started = time.monotonic()
    with pytest.raises(GpuSpecError) as info:
        ws.session("H100:99", wait=3)
    assert time.monotonic() - started < 2.5  # waiting cannot help, so it does not wait
    assert str(info.value) == (
        "H100:99 can never be held here: no host has more than 2 H100, and a session holds its GPUs on one host, "
        "so waiting cannot help. Ask for `%%gpu H100:2` or fewer, or add a host that has more.")


def test_capacity_message_names_only_types_that_exist(ws):
    held = ws.session("H100:2")
    try:
        with pytest.raises(CapacityError) as info:
            ws.session("H200,H100")
        assert "release one with `%gpu stop H100`" in str(info.value)
        assert "H200`" not in str(info.value)
    finally:
        held.stop()


def _clean(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(r"WARNING|Traceback|ERROR", line)]


def test_exit_with_a_session_held_prints_nothing(tmp_path):
    script = tmp_path / "held.py"
    script.write_text(textwrap.dedent("""
        import burstlab
        if __name__ == "__main__":
            s = burstlab.get_workspace().session("H100")
            print(s.execute_sync("6 * 7").text)
    """))
    env = {**os.environ, "BURSTLAB_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "42\n"
    assert out.stderr == "", out.stderr


def test_import_beside_a_checkout_named_burstlab_says_so(tmp_path):
    (tmp_path / "burstlab").mkdir()
    shutil.copy(ROOT / "__init__.py", tmp_path / "burstlab" / "__init__.py")
    out = subprocess.run([sys.executable, "-c", "import burstlab"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        f"ImportError: `import burstlab` found the source checkout {tmp_path / 'burstlab'} instead of the installed "
        "package, because Python looks in the current folder first. Run Python from another folder (for example "
        "inside the checkout: `cd burstlab`), after installing it there with `pip install -e .`.")


def test_nbconvert_bills_the_notebook_by_its_name(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from burstlab.workspace import default_notebook\nprint(default_notebook())")])
    nbformat.write(nb, tmp_path / "evals-7.ipynb")
    env = {k: v for k, v in os.environ.items() if k not in ("BURSTLAB_NOTEBOOK", "JPY_SESSION_NAME")}
    out = subprocess.run([str(VENV_BIN / "jupyter"), "nbconvert", "--to", "notebook", "--execute", "--stdout",
                          "evals-7.ipynb"], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    executed = nbformat.reads(out.stdout, as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "evals-7.ipynb\n"


def test_readme_first_command_from_a_fresh_clone_prints_no_warning(tmp_path):
    """The README's first command in a fresh clone: a new venv, `pip install -e .`, `burstlab quickstart`.

    The lab extension's npm build is skipped here (BURSTLAB_SKIP_LABEXTENSION=1): the test command's own install
    builds and browser-tests it, and the quickstart does not use it. pip's own lines about this machine's
    package-index configuration are not ours, so only the quickstart's output is held to "no WARNING,
    Traceback or ERROR line" (its one intended traceback, the remote ZeroDivisionError it demonstrates, aside)."""
    clone = tmp_path / "burstlab-clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("BURSTLAB_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["BURSTLAB_SKIP_LABEXTENSION"] = "1"
    env["BURSTLAB_HOME"] = str(tmp_path / "home")
    install = subprocess.run("python3 -m venv .venv && .venv/bin/pip install -q -e .", shell=True, cwd=clone,
                             env=env, capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    assert not [l for l in install.stderr.splitlines() if "ERROR" in l or "Traceback" in l], install.stderr[-3000:]
    run = subprocess.run([".venv/bin/burstlab", "quickstart"], cwd=clone, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    flagged = _clean(run.stdout + run.stderr)
    assert flagged == ["ZeroDivisionError                         Traceback (most recent call last)"], flagged
    assert "ZeroDivisionError: division by zero" in run.stdout
    assert "[text/html]" not in run.stdout and "Out: sum on the GPU host: 499,999,500,000  (text/html)" in run.stdout


def test_an_open_file_as_a_map_input_is_named(ws):
    with open("/etc/hostname") as handle:
        with pytest.raises(burstlab.FanoutError) as info:
            burstlab.map(lambda x: x, [1, handle], workspace=ws, progress=False)
    assert str(info.value) == ("Input #1 is an open file (/etc/hostname): a file handle cannot travel to the "
                               "workers. Pass its path (and open it inside the function), or its contents.")


def test_docs_stand_alone():
    """The project's docs link nothing outside the repository."""
    outside = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if re.search(r"(?<![\w.])shared/|\]\(\.\./", line):
                outside.append(f"{doc.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not outside, outside
