"""Maps from plain scripts with no main guard (``python evals.py``, ``ipython evals.py``), as real processes,
and a worker that cannot start failing the map at once with the worker's own error."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """\
import burstlab
out = burstlab.map(lambda x: x + 1, range(100), gpu="H100")
print("RESULT", sum(out), len(out))
"""


def _run(argv, tmp_path, extra_env=None, timeout=90):
    env = {**os.environ, "BURSTLAB_DECLARED_GPUS": "H100:1", "BURSTLAB_HOME": str(tmp_path / "home"),
           **(extra_env or {})}
    env.pop("BURSTLAB_URL", None)
    env.pop("BURSTLAB_SCHEDULER", None)
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("runner", ["python", "ipython"])
def test_a_script_without_a_main_guard_runs_a_map(tmp_path, runner):
    (tmp_path / "evals.py").write_text(SCRIPT)
    exe = sys.executable if runner == "python" else str(Path(sys.executable).with_name("ipython"))
    proc = _run([exe, "evals.py"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RESULT 5050 100" in proc.stdout
    assert "bootstrapping phase" not in proc.stderr


def test_a_worker_that_cannot_start_fails_the_map_at_once_with_its_own_error(tmp_path):
    (tmp_path / "evals.py").write_text(SCRIPT)
    (tmp_path / "crash.py").write_text('raise RuntimeError("the model file is missing")\n')
    proc = _run([sys.executable, "evals.py"], tmp_path,
                {"DASK_DISTRIBUTED__WORKER__PRELOAD": f'["{tmp_path / "crash.py"}"]'}, timeout=60)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("burstlab.errors.FanoutError") and "failed to start" in last
    assert "RuntimeError: the model file is missing" in last
    assert "RESULT" not in proc.stdout
