"""Suite-wide set-up: declared GPUs and a throw-away BURSTLAB_HOME (jailed sessions' work dirs in it), before
anything imports burstlab."""

import os
import tempfile

_home = tempfile.mkdtemp(prefix="burstlab-test-home-")
os.environ["BURSTLAB_HOME"] = _home
os.environ.setdefault("BURSTLAB_DECLARED_GPUS", "H100:2,A100:1")
os.environ.pop("BURSTLAB_SCHEDULER", None)
os.environ["BURSTLAB_NOTEBOOK"] = "tests.ipynb"
# Jailed GPU sessions' work dirs (isolate_sessions), for every server and worker the suite starts: under the
# throw-away home, never the machine's /var/lib/burstlab/users.
os.environ["BURSTLAB_SESSION_WORK_ROOT"] = os.path.join(_home, "users")


def pytest_unconfigure(config):
    """The throw-away home goes with the run (what a test left mounted in it, if anything, stays)."""
    import shutil

    shutil.rmtree(_home, ignore_errors=True)
