"""A lifetime end that pauses instead of closing (``lifetime_action="pause"``, issue 18): the sandbox frees its
processes, says why (``paused_why``, and a notice ahead of the next run's output), resumes in its state on the
next use, and counts a new lifetime from there."""

from __future__ import annotations

import pytest

from burstlab.errors import SandboxError
from burstlab.sandbox import Sandbox
from waiting import wait_for


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BURSTLAB_HOME", str(tmp_path))
    return tmp_path


def test_lifetime_pauses_says_why_and_resumes(home):
    with Sandbox(timeout=10, memory="256MiB", meter=None, user="carol", lifetime=1.5, lifetime_action="pause") as sb:
        sb.run("state = {'n': 41}")
        wait_for(lambda: sb.paused_why, 20, "the lifetime pause")
        assert sb.paused and not sb.started and "reached its lifetime of 1.5 s" in sb.paused_why
        ex = sb.run("state['n'] + 1")
        assert ex.text == "42" and "this sandbox was paused (it reached its lifetime of 1.5 s" in ex.stderr
        assert not sb.paused and sb.paused_why == "" and 0 < sb.expires_in <= 1.5  # a new lifetime, from the resume
        assert "paused" not in sb.run("1").stderr  # said once
        wait_for(lambda: sb.paused_why, 20, "the second lifetime pause")  # and it pauses again at its end
    with pytest.raises(SandboxError, match="lifetime_action"):
        Sandbox(lifetime_action="sleep")


def test_lifetime_close_is_still_the_default(home):
    with Sandbox(timeout=10, memory="256MiB", meter=None, lifetime=0.5) as sb:
        sb.run("1")
        wait_for(lambda: sb._closed, 20, "the lifetime close")
        with pytest.raises(SandboxError, match="reached its lifetime of 0.5 s"):
            sb.run("1")
