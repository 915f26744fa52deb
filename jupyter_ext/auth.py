"""API tokens mapped to user names, and how jupyter_server learns of them.

- :class:`TokenTable`: token -> user, from ``c.BurstLabApp.tokens`` and/or ``c.BurstLabApp.tokens_file``
  (a JSON object ``{"TOKEN": "USER"}``), plus the token the server hands its kernels
  (``BURSTLAB_TOKEN``, mapped to the server's own user). Tokens are kept only as SHA-256 digests.
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
import re
import secrets
from pathlib import Path

from jupyter_server.auth import Authorizer, IdentityProvider, User

from burstlab.errors import ConfigError

USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")
MIN_TOKEN_LEN = 16
_AUTH_HEADER = re.compile(r"(token|bearer)\s+(.+)", re.IGNORECASE)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class TokenTable:
    """Which user a token is. Lookups compare digests, never the tokens themselves."""

    def __init__(self) -> None:
        self._users: dict[bytes, tuple[str, bool]] = {}  # digest -> (user, agent: confined to the burstlab API)

    def add(self, token: str, user: str, agent: bool = True) -> None:
        if not isinstance(token, str) or len(token) < MIN_TOKEN_LEN:
            raise ConfigError(f"An API token for {user!r} is shorter than {MIN_TOKEN_LEN} characters; use a random "
                              "one, e.g. python -c 'import secrets; print(secrets.token_hex(24))'.")
        if not isinstance(user, str) or not USER_RE.match(user):
            raise ConfigError(f"User name {user!r} for an API token is not valid: use 1-64 letters, digits and . _ @ + - "
                              "(starting with a letter or digit).")
        self._users[_digest(token)] = (user, agent)

    def add_many(self, tokens: dict, source: str) -> None:
        if not isinstance(tokens, dict):
            raise ConfigError(f"{source} must map each token to a user name, e.g. {{\"TOKEN\": \"alice\"}}.")
        for token, user in tokens.items():
            self.add(token, user)

    def load_file(self, path: str) -> None:
        try:
            data = json.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"Cannot read the tokens file {path!r} ({exc.strerror}); fix c.BurstLabApp.tokens_file.") from None
        except ValueError as exc:
            raise ConfigError(f"The tokens file {path!r} is not JSON ({exc}); write an object {{\"TOKEN\": \"USER\"}}.") from None
        self.add_many(data, f"The tokens file {path!r}")

    def new_token(self, user: str) -> str:
        """A fresh random token for ``user`` (the server's own, for its kernels)."""
        token = secrets.token_hex(24)
        self.add(token, user, agent=False)
        return token

    def lookup(self, token: str | None) -> tuple[str, bool] | None:
        """``(user, agent)`` for a known token, else None."""
        return self._users.get(_digest(token)) if token else None


def request_token(handler) -> str:
    """The token a request carries: ``Authorization: token|Bearer TOKEN``, else ``?token=``."""
    m = _AUTH_HEADER.match(handler.request.headers.get("Authorization", ""))
    if m:
        return m.group(2).strip()
    return handler.get_argument("token", "")


def table_of(handler) -> TokenTable | None:
    return handler.settings.get("burstlab_tokens")


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
            found = (handler.settings.get("burstlab_owner") or "owner", False)
        name, handler._burstlab_agent = found
        handler._burstlab_user = name
        return User(username=name, name=name, display_name=name)


class BurstLabAuthorizer(Authorizer):
    """Agents (users with an API token) may use the burstlab API only; the server's user anything."""

    def is_authorized(self, handler, user: User, action: str, resource: str) -> bool:
        if getattr(handler, "_burstlab_agent", False):
            return resource == "burstlab"
        return True


__all__ = ["BurstLabAuthorizer", "BurstLabIdentityProvider", "TokenTable", "request_token"]
