"""Waiting for a condition with a deadline, instead of sleeping (tests import it as ``waiting``: pytest puts
``tests/`` on ``sys.path`` for its conftest)."""

import time


def wait_for(condition, timeout: float = 20.0, what: str = "condition"):
    """``condition()``'s first truthy value, polled every 50 ms; AssertionError naming ``what`` past ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
