"""%gpu? and %%gpu? show the usage, as IPython's own magics do (no cluster is started for it)."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from burstlab.errors import BurstlabError
from burstlab.magics.gpu import GpuMagics


@pytest.fixture
def shell():
    sh = InteractiveShell.instance()
    sh.register_magics(GpuMagics(sh))
    yield sh
    InteractiveShell.clear_instance()


@pytest.mark.parametrize("query", ["%gpu", "%%gpu"])
def test_question_mark_shows_the_usage_and_every_command(shell, query):
    text = shell.object_inspect_text(query)
    assert "<no docstring>" not in text
    for part in ("usage: %%gpu [--wait S]", "--wait S", "--push a,b", "--pull c,d", "--quiet", "H100:2", "%gpu hosts",
                 "%gpu stop", "%gpu bill", "%gpu budget", "%gpu idle SECONDS", "%gpu push a,b"):
        assert part in text, (part, text)


def test_a_bad_option_names_the_usage(shell):
    with pytest.raises(BurstlabError, match=r"(?s)%%gpu: .*--nope.*usage: %%gpu"):
        shell.run_cell_magic("gpu", "H100 --nope", "1")


def test_bare_gpu_prints_the_commands(shell):
    with capture_output() as out:
        shell.run_line_magic("gpu", "")
    assert "%gpu hosts | status | stop" in out.stdout
