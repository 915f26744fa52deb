"""Sandboxes over REST: create, run, stream, files, limits, close, and the errors."""

import json

import pytest

import os

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")


async def test_sandbox_lifecycle(api):
    code, sb = await api("POST", "sandboxes", body={"timeout": 20, "memory": "256MiB", "notebook": "nb-1"})
    assert code == 201, sb
    assert sb["state"] == "running" and sb["notebook"] == "nb-1" and sb["limits"]["memory"] == 256 * 1024**2
    code, ex = await api("POST", "sandboxes", sb["id"], "execute", body={"code": "x = 21\nprint('hi')\nx * 2"})
    assert code == 200, ex
    assert ex["error"] is None
    assert ex["outputs"][0] == {"kind": "stream", "name": "stdout", "text": "hi\n", "data": {}, "metadata": {}}
    assert ex["outputs"][-1]["data"]["text/plain"] == "42"
    code, listing = await api("GET", "sandboxes")
    assert [s["id"] for s in listing["sandboxes"]] == [sb["id"]]
    code, closed = await api("DELETE", "sandboxes", sb["id"])
    assert code == 200 and closed["state"] == "closed"
    code, err = await api("GET", "sandboxes", sb["id"])
    assert code == 404 and sb["id"] in err["message"]
