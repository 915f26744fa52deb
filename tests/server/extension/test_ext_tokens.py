"""The token the server hands its kernels (BURSTLAB_TOKEN) opens burstlab's routes only, as the server's
user, and is the operator's (it sees the scheduler kernels join); an API token is confined and never
sees the cluster. Checked with the standalone service's identity provider (as `jupyter burstlab` runs)
and with the Jupyter server's own (the extension in a lab)."""

import json
import os

import pytest

from burstlab.jupyter_ext.auth import BurstLabAuthorizer, BurstLabIdentityProvider

ALICE = "alice-token-" + "a" * 24


@pytest.fixture(params=["standalone", "lab"])
def jp_server_config(request):
    config = {
        "ServerApp": {"jpserver_extensions": {"burstlab.jupyter_ext": True}},
        "BurstLabApp": {"tokens": {ALICE: "alice"}},
        "BurstLab": {"heartbeat_interval": 0.5},
    }
    if request.param == "standalone":
        config["ServerApp"].update(identity_provider_class=BurstLabIdentityProvider, authorizer_class=BurstLabAuthorizer)
    return config


async def test_kernel_and_api_tokens_are_scoped(jp_fetch, jp_server_config):
    kernel = os.environ["BURSTLAB_TOKEN"]

    async def get(token, *parts):
        r = await jp_fetch(*parts, headers={"Authorization": f"token {token}"}, raise_error=False)
        return r.code, r.body

    for token in (kernel, ALICE):
        for parts in (("api", "contents"), ("api", "kernels"), ("api", "sessions"), ("api", "terminals")):
            code, _ = await get(token, *parts)
            assert code == 403, (token == kernel, parts, code)
    code, body = await get(kernel, "burstlab", "api", "workspace")
    ws = json.loads(body)
    assert code == 200 and ws["scheduler"], ws  # the kernels join the server's cluster through it
    owner = ws["user"]
    code, body = await get(kernel, "burstlab", "api", "sandboxes")
    assert code == 200
    code, body = await get(ALICE, "burstlab", "api", "workspace")
    ws = json.loads(body)
    assert code == 200 and ws["user"] == "alice" != owner and ws["scheduler"] is None, ws
    # The server's own token (the operator) still opens everything.
    r = await jp_fetch("api", "contents", raise_error=False)
    assert r.code == 200
