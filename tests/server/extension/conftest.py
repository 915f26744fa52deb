"""pytest-jupyter against the real extension, under a base URL with odd characters (a space, a
percent-escape and a non-ASCII letter: "/a b%20ü/", percent-encoded as a URL path)."""

import json
import os

import pytest

# The plugin's fixtures and hooks, for this directory only (its autouse fixtures would touch every test).
from pytest_jupyter.jupyter_server import *  # noqa: E402,F401,F403

BASE_URL = "/a%20b%2520%C3%BC/"




@pytest.fixture
def jp_base_url():
    return BASE_URL


@pytest.fixture
def jp_server_config():
    return {
        "ServerApp": {"jpserver_extensions": {"burstlab.jupyter_ext": True}},
        "BurstLabApp": {"max_sandbox_memory": "1GiB", "max_sandbox_timeout": 60.0, "max_sandboxes_per_user": 3},
        "BurstLab": {"heartbeat_interval": 0.5},
    }


@pytest.fixture
def api(jp_fetch):
    """``await api("GET", "sandboxes", body=...)`` -> (status, parsed JSON or bytes); never raises on 4xx."""

    async def call(method, *parts, body=None, raw=None, headers=None, params=None):
        kwargs = {"method": method, "raise_error": False, "headers": headers or {}, "params": params}
        if body is not None:
            kwargs["body"] = json.dumps(body)
        elif raw is not None:
            kwargs["body"] = raw
        elif method in ("POST", "PUT"):
            kwargs["body"] = b""
        r = await jp_fetch("burstlab", "api", *parts, **kwargs)
        ctype = r.headers.get("Content-Type", "")
        data = json.loads(r.body) if ctype.startswith("application/json") and r.body else r.body
        return r.code, data

    return call
