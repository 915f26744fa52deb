"""Environment variables and secrets (``env=``, ``secrets=``, the :class:`Redactor`): the core's
``burstlab.secrets``, under the name this layer has always used (``applied`` is the same dict object)."""

from burstlab.secrets import (MAX_TOTAL, MAX_VALUE, REDACTED, RESERVED, Redactor, applied, base_environ, check_env,
                              given, resolve, secrets_file, split)

__all__ = ["MAX_TOTAL", "MAX_VALUE", "REDACTED", "RESERVED", "Redactor", "applied", "base_environ", "check_env", "given",
           "resolve", "secrets_file", "split"]
