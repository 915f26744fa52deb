"""Secrets come from the notebook's environment or a 0600 file, and are redacted wherever text would show them."""

import os

import pytest

from burstlab.errors import ConfigError
from burstlab.remote_kernel import secrets


def test_environment_first_then_the_file(tmp_path):
    path = secrets.secrets_file(str(tmp_path))
    path.write_text("# keys\nOPENAI_API_KEY='sk-from-file'\nexport HF_TOKEN=hf_abc123\n")
    os.chmod(path, 0o600)
    got = secrets.resolve(["OPENAI_API_KEY", "HF_TOKEN"], home=str(tmp_path), environ={"OPENAI_API_KEY": "sk-env"})
    assert got == {"OPENAI_API_KEY": "sk-env", "HF_TOKEN": "hf_abc123"}


def test_a_missing_secret_names_both_places(tmp_path):
    with pytest.raises(ConfigError) as info:
        secrets.resolve(["WANDB_API_KEY"], home=str(tmp_path), environ={})
    assert str(info.value) == (f"The secret WANDB_API_KEY is not set: export WANDB_API_KEY=... in the notebook's "
                               f"environment, or add a line WANDB_API_KEY=... to {tmp_path}/secrets.env (mode 600).")


def test_a_file_others_can_read_is_refused(tmp_path):
    path = secrets.secrets_file(str(tmp_path))
    path.write_text("K=v\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"readable by others \(mode 644\): `chmod 600"):
        secrets.resolve(["K"], home=str(tmp_path), environ={})


@pytest.mark.parametrize("env, needle", [
    ({"CUDA_VISIBLE_DEVICES": "0"}, "set by burstlab itself"),
    ({"BURSTLAB_TOKEN": "x"}, "set by burstlab itself"),
    ({"1BAD": "x"}, "not an environment variable name"),
    ({"OK": ["list"]}, "must be a string"),
])
def test_env_is_checked(env, needle):
    with pytest.raises(ConfigError, match=needle):
        secrets.check_env(env)


def test_env_values_become_strings():
    assert secrets.check_env({"WANDB_MODE": "offline", "SEED": 7}) == {"WANDB_MODE": "offline", "SEED": "7"}


def test_redactor():
    r = secrets.Redactor(["sk-secret-123", "abc", "sk-secret-123-long"])
    text = "KeyError: 'sk-secret-123-long' and sk-secret-123, abc stays"
    assert r.redact(text) == "KeyError: '[redacted]' and [redacted], abc stays"
    assert not secrets.Redactor([]) and secrets.Redactor([]).redact("x") == "x"


def test_outputs_and_errors_are_redacted():
    from burstlab.wire import Execution, ExecutionError, Output

    r = secrets.Redactor(["hunter2-secret"])
    ex = Execution(outputs=(Output(kind="stream", name="stdout", text="key=hunter2-secret\n"),
                            Output(kind="execute_result", data={"text/plain": "'hunter2-secret'"})),
                   error=ExecutionError("KeyError", "'hunter2-secret'", ("KeyError: 'hunter2-secret'",)))
    clean = r.execution(ex)
    assert "hunter2-secret" not in repr(clean)
    assert clean.outputs[0].text == "key=[redacted]\n" and clean.error.traceback == ("KeyError: '[redacted]'",)
