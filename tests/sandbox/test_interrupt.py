"""Ctrl-C while Sandbox.run() waits interrupts the sandboxed cell; its KeyboardInterrupt comes back as data."""

import os
import signal
import threading
import time

import pytest

from burstlab.sandbox import Sandbox

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")


def test_ctrl_c_in_the_caller_interrupts_the_sandboxed_cell():
    assert threading.current_thread() is threading.main_thread()  # where SIGINT lands
    with Sandbox(timeout=60) as sb:
        sb.run("x = 41")
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        ex = sb.run("import time\ntime.sleep(50)")
        took = time.monotonic() - t0
        timer.join()
        assert ex.error is not None and ex.error.ename == "KeyboardInterrupt", ex
        assert took < 6, took
        assert sb.run("x + 1").text == "42"  # the kernel and its state are kept
