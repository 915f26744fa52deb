"""%%gpu's environment flags end to end: --env, --secret (redacted), --sync of the modules beside the notebook,
--sync-dir, and %gpu upload/download, in a real IPython shell with real kernels on declared GPUs."""

import sys

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import burstlab


@pytest.fixture(scope="module")
def shell():
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "burstlab")
    yield sh
    burstlab.get_workspace().close()
    InteractiveShell.clear_instance()


def run(shell, cell):
    with capture_output() as out:
        result = shell.run_cell(cell)
    return result, out


def test_env_and_a_secret_reach_the_cell_and_the_secret_is_never_shown(shell, monkeypatch):
    monkeypatch.setenv("BLX_MAGIC_TOKEN", "tok-0123456789abcdef")
    result, out = run(shell, "%%gpu A100 --env WANDB_MODE=offline --secret BLX_MAGIC_TOKEN --quiet\n"
                             "import os\nprint(os.environ['WANDB_MODE'], os.environ['BLX_MAGIC_TOKEN'])")
    assert result.error_in_exec is None, out.stderr
    assert out.stdout == "offline [redacted]\n"
    result, out = run(shell, "%%gpu A100 --quiet\nraise ValueError(os.environ['BLX_MAGIC_TOKEN'])")
    assert "tok-0123456789abcdef" not in out.stdout + out.stderr + str(result.error_in_exec)
    run(shell, "%gpu stop A100")


def test_sync_ships_the_modules_beside_the_notebook(shell, tmp_path, monkeypatch):
    (tmp_path / "helpers_mag.py").write_text("ANSWER = 42\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import helpers_mag  # noqa: F401

    try:
        result, out = run(shell, "%%gpu H100 --sync --quiet\nimport helpers_mag\nhelpers_mag.ANSWER")
        assert result.error_in_exec is None, out.stderr
        assert repr(result.result) == "42"  # the remote value, displayed as it was there
    finally:
        sys.modules.pop("helpers_mag", None)
        run(shell, "%gpu stop H100")


def test_sync_dir_upload_and_download(shell, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("a,b\n1,2\n")
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    result, out = run(shell, f"%%gpu H100 --quiet\nimport os\nos.chdir({str(host_dir)!r})")  # its work dir
    result, out = run(shell, f"%%gpu H100 --sync-dir {data} --quiet\nopen('out.txt', 'w').write('done')")
    assert "--sync-dir" in out.stderr and result.error_in_exec is None, out.stderr
    assert (host_dir / "data" / "train.csv").read_text() == "a,b\n1,2\n"
    result, out = run(shell, f"%gpu upload {data} --to inputs/")
    assert "Uploaded 1 file" in out.stdout, out.stdout
    result, out = run(shell, "%%gpu H100 --quiet\nopen('inputs/data/train.csv').read()")
    assert repr(result.result) == repr("a,b\n1,2\n")
    monkeypatch.chdir(tmp_path)
    result, out = run(shell, "%gpu download out.txt H100")
    assert "Downloaded 1 file" in out.stdout and (tmp_path / "out.txt").read_text() == "done"
    run(shell, "%gpu stop H100")
