"""API tokens mapped to user names, and how jupyter_server learns of them.

- :class:`TokenTable`: token -> user, from ``c.BurstLabApp.tokens`` and/or ``c.BurstLabApp.tokens_file``
  (a JSON object ``{"TOKEN": "USER"}``, or ``{"sha256:HEX": "USER"}`` with the tokens' digests; a file
  with plain tokens must be private to its owner, 0600), plus the token the server hands its kernels
  (``BURSTLAB_TOKEN``, mapped to the server's own user, burstlab's routes only). Tokens are kept only
  as SHA-256 digests.
- Every token is a :class:`Grant`: its user, whether it is confined to the burstlab API (every table
  token and the kernels' token), and whether it is the operator's (the server's own identity and its
  kernels' token: ``GET workspace`` shows them the Dask scheduler's address, and nobody else).
- :class:`BurstLabIdentityProvider`: the standalone ``jupyter burstlab`` service's identity provider.
  A table token is that user; the server's own token is the server's user. No login cookies: every
  request carries its token, so nothing a browser holds can act as an agent.
- :class:`BurstLabAuthorizer`: an agent token opens the burstlab API and nothing else of the server
  (no contents, kernels or terminals, which would run code outside any sandbox).

Inside an ordinary Jupyter server (whose identity provider is its own), burstlab's handlers accept the
kernels' token themselves (``handlers/base.py``); every other request there is the server's user.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
from pathlib import Path
from typing import NamedTuple

from jupyter_server.auth import Authorizer, IdentityProvider, User

from burstlab.errors import ConfigError

USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
MIN_TOKEN_LEN = 16
_AUTH_HEADER = re.compile(r"(token|bearer)\s+(.+)", re.IGNORECASE)


_HASHED = re.compile(r"^sha256:([0-9a-f]{64})$")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def hashed(token: str) -> str:
    """How a token is written in a tokens file that holds no token: ``sha256:HEX``."""
    return "sha256:" + _digest(token).hex()


class Grant(NamedTuple):
    user: str
    agent: bool  # confined to the burstlab API
    operator: bool  # the server's own identity: sees the cluster's address


class TokenTable:
    """Which user a token is. Lookups compare digests, never the tokens themselves."""

    def __init__(self) -> None:
        self._grants: dict[bytes, Grant] = {}

    def add(self, token: str, user: str, agent: bool = True, operator: bool = False) -> None:
        if not isinstance(user, str) or not USER_RE.match(user):
            raise ConfigError(f"User name {user!r} for an API token is not valid: use 1-64 letters, digits and . _ @ + - "
                              "(starting with a letter or digit).")
        m = _HASHED.match(token) if isinstance(token, str) else None
        if m is not None:
            self._grants[bytes.fromhex(m.group(1))] = Grant(user, agent, operator)
            return
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LEN:
            raise ConfigError(f"An API token for {user!r} is shorter than {MIN_TOKEN_LEN} characters; use a random "
                              "one, e.g. python -c 'import secrets; print(secrets.token_hex(24))'.")
        self._grants[_digest(token)] = Grant(user, agent, operator)

    def add_many(self, tokens: dict, source: str) -> None:
        if not isinstance(tokens, dict):
            raise ConfigError(f"{source} must map each token to a user name, e.g. {{\"TOKEN\": \"alice\"}}.")
        for token, user in tokens.items():
            self.add(token, user)

    def load_file(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode
                data = json.loads(f.read())
        except OSError as exc:
            raise ConfigError(f"Cannot read the tokens file {path!r} ({exc.strerror}); fix c.BurstLabApp.tokens_file.") from None
        except ValueError as exc:
            raise ConfigError(f"The tokens file {path!r} is not JSON ({exc}); write an object {{\"TOKEN\": \"USER\"}}.") from None
        plain = isinstance(data, dict) and any(not (isinstance(t, str) and _HASHED.match(t)) for t in data)
        if plain and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"The tokens file {path!r} holds tokens and is readable by other users "
                              f"(mode {stat.S_IMODE(mode):04o}): run chmod 600 {path}, or write each token as its "
                              "digest, \"sha256:HEX\" (python -c 'import hashlib,sys; print(\"sha256:\" + "
                              "hashlib.sha256(sys.argv[1].encode()).hexdigest())' TOKEN).")
        self.add_many(data, f"The tokens file {path!r}")

    def new_token(self, user: str) -> str:
        """A fresh random token for ``user``: the server's kernels' (burstlab's routes only, the operator's)."""
        token = secrets.token_hex(24)
        self.add(token, user, agent=True, operator=True)
        return token

    def lookup(self, token: str | None) -> Grant | None:
        """The grant of a known token, else None."""
        return self._grants.get(_digest(token)) if token else None


def request_token(handler) -> str:
    """The token a request carries: ``Authorization: token|Bearer TOKEN``, else ``?token=``."""
    m = _AUTH_HEADER.match(handler.request.headers.get("Authorization", ""))
    if m:
        return m.group(2).strip()
    return handler.get_argument("token", "")


def table_of(handler) -> TokenTable | None:
    return handler.settings.get("burstlab_tokens")


def grant(handler, found: Grant) -> None:
    """Mark ``handler``'s request as ``found``'s (read by the authorizer and the burstlab handlers)."""
    handler._burstlab_user = found.user
    handler._burstlab_agent = found.agent
    handler._burstlab_operator = found.operator


def is_operator(handler) -> bool:
    """Whether the request is the operator's: the server's own identity, or the kernels' token."""
    return getattr(handler, "_burstlab_operator", getattr(handler, "_burstlab_user", None) is None)


class BurstLabIdentityProvider(IdentityProvider):
    """Tokens from burstlab's table are their users; the server's own token is the server's user."""

    def get_user_cookie(self, handler):  # no cookie ever authenticates the headless service
        return None

    def set_login_cookie(self, handler, user) -> None:
        return None

    async def get_user_token(self, handler) -> User | None:
        table = table_of(handler)
        found = table.lookup(request_token(handler)) if table is not None else None
        if found is None:
            if await super().get_user_token(handler) is None:
                return None
            found = Grant(handler.settings.get("burstlab_owner") or "owner", False, True)
        grant(handler, found)
        return User(username=found.user, name=found.user, display_name=found.user)


class BurstLabAuthorizer(Authorizer):
    """Agents (users with an API token) may use the burstlab API only; the server's user anything."""

    def is_authorized(self, handler, user: User, action: str, resource: str) -> bool:
        if getattr(handler, "_burstlab_agent", False):
            return resource == "burstlab"
        return True


__all__ = ["BurstLabAuthorizer", "BurstLabIdentityProvider", "Grant", "TokenTable", "hashed", "is_operator",
           "request_token"]
