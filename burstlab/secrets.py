"""Environment variables and secrets for a session's kernel, a map's tasks or a sandbox (the core: every layer
that hands them on uses this one module; ``burstlab.remote_kernel.secrets`` is the same module's public name).

``env={"WANDB_MODE": "offline"}`` is passed as given; ``secrets=["OPENAI_API_KEY"]`` are read from the
notebook's environment or else from ``BURSTLAB_HOME/secrets.env`` (``NAME=value`` lines, mode 0600). Values reach
only the kernel or task they are for: they travel over the kernel's own channel (never in a cell's source, so
never in its history), and are never written to the ledger, logs, REST responses or the panel.
:class:`Redactor` replaces them in any text that would show them (a traceback, a stream).
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from pathlib import Path
from typing import Iterable, Mapping

from burstlab.errors import ConfigError
from burstlab.wire import Execution, Output

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Variables that belong to burstlab or to the GPU pinning: a user's env= must not move them.
RESERVED = ("CUDA_VISIBLE_DEVICES", "BURSTLAB_", "JPY_", "DASK_")
REDACTED = "[redacted]"
# Names a map's running chunk set in this process's os.environ -> the value they had before (None: unset).
# Written only by burstlab.fanout's gate; read by base_environ().
applied: dict[str, str | None] = {}


def base_environ() -> dict[str, str]:
    """``os.environ`` as it is without what a running map's chunk set: what a process started now (a session's
    kernel on a worker that also runs map tasks) inherits, so no map's secret reaches it."""
    env = dict(os.environ)
    for name, before in list(applied.items()):
        if before is None:
            env.pop(name, None)
        else:
            env[name] = before
    return env


def secrets_file(home: str | None = None) -> Path:
    return Path(home or os.environ.get("BURSTLAB_HOME") or Path.home() / ".burstlab") / "secrets.env"


MAX_VALUE = 32 * 1024  # bytes of one value (Linux refuses a single variable past 128 KiB)
MAX_TOTAL = 256 * 1024  # bytes of all of env= and secrets= together
MAX_NAME = 256


def check_env(env: Mapping[str, object] | None) -> dict[str, str]:
    """``env`` as ``{str: str}``, refusing names that are not variable names or that burstlab owns, and values
    that no environment can hold (a NUL character, more than ``MAX_VALUE`` bytes)."""
    if env is not None and not isinstance(env, Mapping):
        raise ConfigError(f"env= takes a mapping of names to values ({{'WANDB_MODE': 'offline'}}), "
                          f"not {type(env).__name__}.")
    out: dict[str, str] = {}
    for name, value in (env or {}).items():
        if not isinstance(name, str) or len(name) > MAX_NAME or not _NAME.match(name):
            raise ConfigError(f"env: {_short(name)} is not an environment variable name (letters, digits, _; "
                              "not starting with a digit).")
        check_name(name, "env")
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"env: the value of {name} must be a string (or a number), not {type(value).__name__}.")
        out[name] = str(value)
        check_value(name, out[name], "env")
    check_total(out)
    return out


def check_name(name: str, what: str) -> None:
    if any(name == r or (r.endswith("_") and name.startswith(r)) for r in RESERVED):
        raise ConfigError(f"{what}: {name} is set by burstlab itself and cannot be overridden.")


def check_value(name: str, value: str, what: str) -> None:
    """Refuse a value an environment cannot hold (never quoting it: it may be a secret)."""
    if "\0" in value:
        raise ConfigError(f"{what}: the value of {name} contains a NUL character, which no environment variable "
                          "can hold.")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_VALUE:
        raise ConfigError(f"{what}: the value of {name} is {size} bytes; at most {MAX_VALUE} fit in one variable. "
                          "Put large values in a file (upload it) and pass its path.")


def check_total(values: Mapping[str, str]) -> None:
    size = sum(len(k) + len(v.encode("utf-8", "surrogatepass")) + 2 for k, v in values.items())
    if size > MAX_TOTAL:
        raise ConfigError(f"env and secrets come to {size} bytes; at most {MAX_TOTAL} are passed. Put large values "
                          "in a file and pass its path.")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _read_file(path: Path) -> dict[str, str]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                          f"`chmod 600 {path}`, then try again.")
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip().removeprefix("export ").strip()
        if not sep or not _NAME.match(name):
            raise ConfigError(f"{path}, line {number}: expected NAME=value.")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def resolve(names: Iterable[str] | None, *, home: str | None = None,
            environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The values of the secrets ``names``: the notebook's environment first, then the secrets file."""
    if isinstance(names, (str, bytes)):
        raise ConfigError(f"secrets= takes a list of names (['OPENAI_API_KEY']), not one {type(names).__name__}.")
    if isinstance(names, Mapping):  # values the caller holds (a REST client sends them): checked, read nowhere
        return given(names)
    names = list(names or [])
    if not names:
        return {}
    environ = os.environ if environ is None else environ
    from_file: dict[str, str] | None = None
    out: dict[str, str] = {}
    for name in names:
        if not isinstance(name, str) or len(name) > MAX_NAME or not _NAME.match(name):
            raise ConfigError(f"secrets: {_short(name)} is not an environment variable name.")
        check_name(name, "secrets")
        if name in environ:
            out[name] = environ[name]
            check_value(name, out[name], "secrets")
            continue
        if from_file is None:
            from_file = _read_file(secrets_file(home))
        if name not in from_file:
            raise ConfigError(f"The secret {name} is not set: export {name}=... in the notebook's environment, "
                              f"or add a line {name}=... to {secrets_file(home)} (mode 600).")
        out[name] = from_file[name]
        check_value(name, out[name], "secrets")
    check_total(out)
    return out


def given(values: Mapping[str, object]) -> dict[str, str]:
    """Secrets whose values the caller gave (``{"NAME": "value"}``): names and values checked like env's, and
    only strings accepted (a secret is text)."""
    out: dict[str, str] = {}
    for name, value in values.items():
        if not isinstance(name, str) or len(name) > MAX_NAME or not _NAME.match(name):
            raise ConfigError(f"secrets: {_short(name)} is not an environment variable name.")
        check_name(name, "secrets")
        if not isinstance(value, str):
            raise ConfigError(f"secrets: the value of {name} must be a string, not {type(value).__name__}.")
        check_value(name, value, "secrets")
        out[name] = value
    check_total(out)
    return out


def split(env: Mapping[str, object] | None, secrets: object) -> tuple[dict[str, str], dict[str, str]]:
    """``(env values, secret values)`` checked together: a name in both is refused, so is their total size."""
    values = check_env(env)
    secret_values = resolve(secrets)  # type: ignore[arg-type]
    overlap = set(values) & set(secret_values)
    if overlap:
        raise ConfigError(f"{', '.join(sorted(overlap))} is both in env= and secrets=: name it once.")
    check_total({**values, **secret_values})
    return values, secret_values


class Redactor:
    """Replaces the values of secrets in text. Values shorter than 4 characters are left alone (they would
    redact ordinary words and numbers); a secret that short protects nothing anyway."""

    def __init__(self, values: Iterable[str] = ()):
        kept = sorted({v for v in values if isinstance(v, str) and len(v) >= 4}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, kept))) if kept else None
        self._encoded = tuple(v.encode("utf-8", "surrogatepass") for v in kept)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def redact(self, text: str) -> str:
        if self._pattern is None or not isinstance(text, str):
            return text
        return self._pattern.sub(REDACTED, text)

    def found_in(self, data: bytes) -> bool:
        """Whether any value appears in ``data`` (a pickle holds a string as its UTF-8 bytes)."""
        return any(v in data for v in self._encoded)

    def output(self, output: Output) -> Output:
        """``output`` with the secrets replaced in its text and its string mime values."""
        if self._pattern is None:
            return output
        data = {k: self.redact(v) for k, v in output.data.items()}
        return dataclasses.replace(output, text=self.redact(output.text), data=data)

    def execution(self, execution: Execution) -> Execution:
        """``execution`` with every output and the error's value and traceback redacted."""
        if self._pattern is None:
            return execution
        error = execution.error
        if error is not None:
            error = dataclasses.replace(error, evalue=self.redact(error.evalue),
                                        traceback=tuple(self.redact(line) for line in error.traceback))
        return dataclasses.replace(execution, outputs=tuple(self.output(o) for o in execution.outputs), error=error)


__all__ = ["MAX_TOTAL", "MAX_VALUE", "REDACTED", "RESERVED", "Redactor", "applied", "base_environ", "check_env", "given",
           "resolve", "secrets_file", "split"]
