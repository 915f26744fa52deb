"""A sandbox's env= and secrets=: in the kernel's environment in the jail (after a restart too), redacted in
everything a run returns or streams, refused for the jail's and burstlab's own names and for bad values."""

from __future__ import annotations

import pytest

import burstlab
from burstlab.errors import ConfigError
from burstlab.sandbox import Sandbox

SECRET = "sbx-secret-value-7d1e"


def test_values_reach_the_kernel_and_secrets_come_back_redacted(monkeypatch):
    monkeypatch.setenv("SBX_TOKEN", SECRET)
    streamed = []
    with Sandbox(timeout=20, meter=None, env={"WANDB_MODE": "offline"}, secrets=["SBX_TOKEN"]) as sb:
        assert sb.env_names == ["SBX_TOKEN", "WANDB_MODE"] and SECRET not in repr(vars(sb).get("env_names"))
        ex = sb.run("import os\nv = os.environ['SBX_TOKEN']\nprint('token', v)\n"
                    "assert v == " + repr(SECRET[:4]) + " + " + repr(SECRET[4:]) + "\n"  # the real value is there
                    "os.environ['WANDB_MODE'], v", on_output=streamed.append)
        assert ex.error is None, ex.error
        assert ex.stdout == "token [redacted]\n" and ex.text == "('offline', '[redacted]')"
        assert SECRET not in repr(streamed) and any("[redacted]" in o.text for o in streamed)
        err = sb.run("raise KeyError(os.environ['SBX_TOKEN'])")
        assert err.error.ename == "KeyError" and SECRET not in repr(err.error) and "[redacted]" in err.error.evalue
        shown = []
        r = sb.exec(["sh", "-c", "echo $SBX_TOKEN $WANDB_MODE; cat /proc/[0-9]*/environ | tr '\\0' '\\n' | grep -c SBX"],
                    on_output=shown.append)
        assert r.stdout.startswith("[redacted] offline\n") and int(r.stdout.split()[-1]) >= 1, r
        assert SECRET not in repr(r) + repr(shown)  # a command reads the kernel's environment: redacted too
        sb.restart()
        assert sb.run("import os; os.environ['WANDB_MODE']").text == "'offline'"  # a new kernel gets them too
        assert sb.run("import os; 'HOME=' + os.environ['HOME']").text == "'HOME=/home/user'"


def test_values_the_caller_holds_are_secrets_too():
    with Sandbox(timeout=20, meter=None, secrets={"API_KEY": SECRET}, env={"PYTHONHASHSEED": "7"}) as sb:
        assert sb.run("import os; os.environ['API_KEY']").text == "'[redacted]'"
        assert sb.run("import os; os.environ['PYTHONHASHSEED']").text == "'7'"  # one of the few allowed PYTHON*


@pytest.mark.parametrize("kwargs, needle", [
    ({"env": {"HOME": "/root"}}, "set by the sandbox itself"),
    ({"env": {"PATH": "/x"}}, "set by the sandbox itself"),
    ({"env": {"BURSTLAB_SANDBOX": "0"}}, "set by burstlab itself"),
    ({"env": {"PYTHONHOME": "/nowhere"}}, "could stop it from starting"),
    ({"secrets": {"LD_PRELOAD": "/tmp/x.so"}}, "could stop it from starting"),
    ({"env": {"A": "x\0y"}}, "NUL"),
    ({"env": {"A": "x" * 40000}}, "at most 32768"),
    ({"env": {"A": None}}, "must be a string"),
    ({"env": {"bad name": "x"}}, "not an environment variable name"),
    ({"secrets": {"K": 3}}, "must be a string"),
    ({"secrets": ["NOT_SET_ANYWHERE_42"]}, "is not set"),
    ({"env": {"K": "1"}, "secrets": {"K": "2222"}}, "both in env= and secrets="),
])
def test_bad_names_and_values_are_refused_before_anything_starts(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        Sandbox(meter=None, **kwargs)


def test_the_workspace_never_hands_out_a_warm_kernel_for_env(tmp_path):
    ws = burstlab.Workspace(home=str(tmp_path), notebook="env.ipynb", sandbox_pool_size=1)
    try:
        with ws.sandbox(timeout=20, env={"SBX_MODE": "on"}) as sb:
            assert sb.run("import os; os.environ.get('SBX_MODE')").text == "'on'"
    finally:
        ws.close()
