"""Suite-wide set-up: declared GPUs and a throw-away BURSTLAB_HOME, before anything imports burstlab."""

import os
import tempfile

_home = tempfile.mkdtemp(prefix="burstlab-test-home-")
os.environ["BURSTLAB_HOME"] = _home
os.environ.setdefault("BURSTLAB_DECLARED_GPUS", "H100:2,A100:1")
os.environ.pop("BURSTLAB_SCHEDULER", None)
os.environ["BURSTLAB_NOTEBOOK"] = "tests.ipynb"


def pytest_unconfigure(config):
    """The throw-away home goes with the run (what a test left mounted in it, if anything, stays)."""
    import shutil

    shutil.rmtree(_home, ignore_errors=True)
