"""NDJSON streams of exec and file watches, and templates by id (issue 18), against a real ``jupyter burstlab``:
each streamed line is checked against the schema the OpenAPI document names for it (``x-item-schema``)."""

from __future__ import annotations

import json
import os
import threading
import time

import jsonschema
import pytest
import requests

from burstlab_service import start_service

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")]


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = start_service(tmp_path_factory.mktemp("streams"), "--BurstLabApp.max_output=4096", "--BurstLabApp.max_wait=20")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def doc(svc):
    return requests.get(f"{svc.url}/openapi.json", headers=svc.headers("alice"), timeout=30).json()


def call(svc, user, method, path, **kwargs):
    r = requests.request(method, f"{svc.url}/{path}", headers=svc.headers(user), timeout=120, **kwargs)
    return r.status_code, r.json()


def item_validator(doc, path, method):
    """A validator of one NDJSON line of the 200 answer of ``method path``, as the document describes it."""
    media = doc["paths"][path][method]["responses"]["200"]["content"]["application/x-ndjson"]
    schema = {**media["x-item-schema"], "components": doc["components"]}
    return jsonschema.Draft202012Validator(schema)


def lines(r) -> list[dict]:
    return [json.loads(line) for line in r.iter_lines() if line]


@pytest.fixture
def sandbox(svc):
    code, sb = call(svc, "alice", "POST", "sandboxes", json={})
    assert code == 201, sb
    yield sb["id"]
    call(svc, "alice", "DELETE", f"sandboxes/{sb['id']}")


def test_exec_streams_its_output_as_it_comes(svc, doc, sandbox):
    check = item_validator(doc, "/sandboxes/{id}/exec", "post")
    cmd = "for i in 1 2 3; do echo line$i; sleep 0.3; done; echo oops >&2; exit 4"
    t0 = time.monotonic()
    arrivals = []
    with requests.post(f"{svc.url}/sandboxes/{sandbox}/exec", headers=svc.headers("alice"), stream=True, timeout=60,
                       json={"cmd": cmd, "shell": True, "stream": True}) as r:
        assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/x-ndjson")
        events = []
        for line in r.iter_lines():
            if line:
                events.append(json.loads(line))
                arrivals.append(time.monotonic() - t0)
    for e in events:
        check.validate(e)
    outs = [e["output"] for e in events if e["event"] == "output"]
    assert "".join(o["text"] for o in outs if o["name"] == "stdout") == "line1\nline2\nline3\n"
    assert any(o["name"] == "stderr" and "oops" in o["text"] for o in outs)
    assert events[-1]["event"] == "done" and events[-1]["result"]["exit_code"] == 4
    assert events[-1]["result"]["stdout"] == "line1\nline2\nline3\n"
    assert arrivals[0] < arrivals[-1] - 0.4  # the first line came before the command ended: streamed, not buffered
    # Accept: application/x-ndjson asks for the same; a refused request is an ordinary JSON error
    headers = {**svc.headers("alice"), "Accept": "application/x-ndjson"}
    r = requests.post(f"{svc.url}/sandboxes/{sandbox}/exec", headers=headers, json={"cmd": ["echo", "hi"]}, timeout=60)
    got = lines(r)
    assert got[-1]["event"] == "done" and got[-1]["result"]["stdout"] == "hi\n"
    r = requests.post(f"{svc.url}/sandboxes/{sandbox}/exec", headers=headers, json={"cmd": "ls"}, timeout=60)
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("application/json")
    assert call(svc, "bob", "POST", f"sandboxes/{sandbox}/exec", json={"cmd": ["ls"], "stream": True})[0] == 404


def test_exec_stream_is_bounded_by_the_output_cap(svc, doc, sandbox):
    check = item_validator(doc, "/sandboxes/{id}/exec", "post")
    r = requests.post(f"{svc.url}/sandboxes/{sandbox}/exec", headers=svc.headers("alice"), timeout=60,
                      json={"cmd": ["python", "-c", "print('x' * 100_000)"], "stream": True})
    events = lines(r)
    for e in events:
        check.validate(e)
    streamed = sum(len(json.dumps(e["output"])) for e in events if e["event"] == "output")
    assert streamed < 4096 + 1024  # max_output=4096, and the marker that says what was dropped
    assert "dropped" in json.dumps(events[-2]) or "bytes" in json.dumps(events[-2])
    assert events[-1]["event"] == "done"


def test_watch_streams_file_events_then_ends(svc, doc, sandbox):
    check = item_validator(doc, "/sandboxes/{id}/files/watch", "get")
    events: list[dict] = []
    ready = threading.Event()

    def watch():
        with requests.get(f"{svc.url}/sandboxes/{sandbox}/files/watch", params={"path": ".", "timeout": "4"},
                          headers=svc.headers("alice"), stream=True, timeout=60) as r:
            assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/x-ndjson")
            for line in r.iter_lines():
                if line:
                    events.append(json.loads(line))
                    ready.set()

    t = threading.Thread(target=watch)
    t.start()
    assert ready.wait(60), "the watch never said it was ready"
    assert call(svc, "alice", "POST", f"sandboxes/{sandbox}/exec", json={"cmd": "echo hi > made.txt", "shell": True})[0] == 200
    assert call(svc, "alice", "POST", f"sandboxes/{sandbox}/exec", json={"cmd": ["rm", "made.txt"]})[0] == 200
    assert call(svc, "alice", "PUT", f"sandboxes/{sandbox}/files/up.txt", data=b"hello")[0] == 200  # a rename into place
    t.join(60)
    assert not t.is_alive()
    for e in events:
        check.validate(e)
    kinds = [(e["event"], e["path"]) for e in events]
    assert kinds[0] == ("ready", ".")
    assert ("create", "made.txt") in kinds and ("modify", "made.txt") in kinds and ("delete", "made.txt") in kinds
    assert ("create", "up.txt") in kinds
    assert events[-1]["event"] == "end" and events[-1]["reason"] == "timeout"
    # refused before the stream: a path that is not a directory, a timeout past max_wait, another user's sandbox
    assert call(svc, "alice", "GET", f"sandboxes/{sandbox}/files/watch", params={"path": "nope"})[0] == 404
    assert call(svc, "alice", "GET", f"sandboxes/{sandbox}/files/watch", params={"path": ".", "timeout": "60"})[0] == 400
    assert call(svc, "bob", "GET", f"sandboxes/{sandbox}/files/watch", params={"path": "."})[0] == 404
    # without ?path= it is the file named "watch", as any other
    assert call(svc, "alice", "PUT", f"sandboxes/{sandbox}/files/watch", data=b"a file")[0] == 200
    r = requests.get(f"{svc.url}/sandboxes/{sandbox}/files/watch", headers=svc.headers("alice"), timeout=30)
    assert r.status_code == 200 and r.content == b"a file"


def test_watch_stream_is_bounded_by_the_output_cap(svc, sandbox):
    with requests.get(f"{svc.url}/sandboxes/{sandbox}/files/watch", params={"path": ".", "timeout": "15"},
                      headers=svc.headers("alice"), stream=True, timeout=60) as r:
        it = r.iter_lines()
        assert json.loads(next(it))["event"] == "ready"
        code, _ = call(svc, "alice", "POST", f"sandboxes/{sandbox}/exec",
                       json={"cmd": "for i in $(seq 200); do echo > file-with-a-long-name-$i.txt; done", "shell": True})
        assert code == 200
        t0 = time.monotonic()
        events = [json.loads(line) for line in it if line]
    assert time.monotonic() - t0 < 10  # ended at the cap, not at its timeout
    assert events[-1] == {"event": "end", "path": "", "dir": False, "reason": "output"}
    assert sum(len(json.dumps(e)) + 1 for e in events[:-1]) <= 4096


def test_templates_by_id_are_their_owners_alone(svc, doc):
    check = jsonschema.Draft202012Validator({"$ref": "#/components/schemas/Template", "components": doc["components"]})
    body = {"files": {"data/cfg.txt": "k=1"}, "setup": "import math\nanswer = math.sqrt(1764)", "timeout": 60,
            "memory": "256MiB"}
    code, tpl = call(svc, "alice", "POST", "templates", json=body)
    assert code == 201, tpl
    check.validate(tpl)
    assert tpl["id"].startswith("tpl-") and tpl["files"] == {"data/cfg.txt": 3} and tpl["warm"] == 1
    code, again = call(svc, "alice", "POST", "templates", json=body)
    assert code == 201 and again["id"] == tpl["id"]  # cached: the same template
    code, listed = call(svc, "alice", "GET", "templates")
    assert code == 200 and [t["id"] for t in listed["templates"]] == [tpl["id"]]
    code, sb = call(svc, "alice", "POST", "sandboxes", json={"template": tpl["id"]})
    assert code == 201, sb
    try:
        code, ex = call(svc, "alice", "POST", f"sandboxes/{sb['id']}/execute",
                        json={"code": "answer, open('data/cfg.txt').read()"})
        assert code == 200 and ex["outputs"][-1]["data"]["text/plain"] == "(42.0, 'k=1')"
        assert sb["limits"]["memory"] == 256 * 2**20
    finally:
        call(svc, "alice", "DELETE", f"sandboxes/{sb['id']}")
    # bob (another token) cannot see, use or delete it; his own template of the same content is another id
    assert call(svc, "bob", "GET", "templates")[1] == {"templates": []}
    assert call(svc, "bob", "POST", "sandboxes", json={"template": tpl["id"]})[0] == 404
    assert call(svc, "bob", "DELETE", f"templates/{tpl['id']}")[0] == 404
    code, bobs = call(svc, "bob", "POST", "templates", json={**body, "warm": 0})
    assert code == 201 and bobs["id"] != tpl["id"] and bobs["warm"] == 0
    # refusals: a failing set-up cell, a template with other limits, an unknown id
    code, err = call(svc, "alice", "POST", "templates", json={"setup": "1/0", "memory": "256MiB", "warm": 0})
    assert code == 400 and "ZeroDivisionError" in err["message"]
    assert call(svc, "alice", "POST", "sandboxes", json={"template": tpl["id"], "memory": "1GiB"})[0] == 400
    assert call(svc, "alice", "POST", "sandboxes", json={"template": "tpl-" + "0" * 24})[0] == 404
    assert call(svc, "alice", "DELETE", f"templates/{tpl['id']}")[0] == 200
    assert call(svc, "alice", "POST", "sandboxes", json={"template": tpl["id"]})[0] == 404
    assert call(svc, "bob", "DELETE", f"templates/{bobs['id']}")[0] == 200


def test_the_client_consumes_the_streams_and_templates(svc):
    from burstlab.client import RemoteWorkspace

    with RemoteWorkspace(svc.url, svc.tokens["alice"]) as ws:
        tpl = ws.template(setup="base = 41", memory="256MiB", timeout=60, warm=0)
        assert tpl["id"] in [t["id"] for t in ws.templates()]
        with ws.sandbox(template=tpl["id"]) as sb:
            assert sb.run("base + 1").text == "42"
            seen = []
            r = sb.exec("echo one; sleep 0.2; echo two >&2; exit 3", shell=True, on_output=seen.append)
            assert (r.exit_code, r.stdout, r.stderr) == (3, "one\n", "two\n")
            assert [(o.name, o.text) for o in seen] == [("stdout", "one\n"), ("stderr", "two\n")]
            events: list[dict] = []

            def on_event(e):
                events.append(e)
                if e["event"] == "ready":  # in this thread, while the watch runs: make a change it sees
                    sb.exec(["mkdir", "made"])

            assert sb.files.watch(".", on_event, timeout=2) == "timeout"
            assert [(e["event"], e["path"]) for e in events] == [("ready", "."), ("create", "made"), ("end", "")]


async def _template_agent(session):
    built = await session.call_tool("create_template", {"setup": "seed = 7", "memory": "256MiB", "timeout": 60})
    assert not built.is_error, built.content
    tid = built.structured_content["template_id"]
    again = await session.call_tool("create_template", {"setup": "seed = 7", "memory": "256MiB", "timeout": 60})
    assert again.structured_content["template_id"] == tid
    created = await session.call_tool("create_sandbox", {"template_id": tid})
    assert not created.is_error, created.content
    sid = created.structured_content["sandbox_id"]
    r = await session.call_tool("run_cell", {"sandbox_id": sid, "code": "seed * 6"})
    bad = await session.call_tool("create_sandbox", {"template_id": "tpl-" + "0" * 24})
    await session.call_tool("close_sandbox", {"sandbox_id": sid})
    return r, bad


@pytest.mark.parametrize("where", ["in-process"])  # the service path is the client's (tested above)
def test_mcp_templates(svc, where):
    pytest.importorskip("mcp")
    import anyio
    from test_mcp import _agent, _params

    env = {"BURSTLAB_URL": svc.url, "BURSTLAB_TOKEN": svc.tokens["bob"]} if where == "service" else {}
    r, bad = anyio.run(_agent, _params(env, jupyter=where == "service"), _template_agent)
    assert not r.is_error and r.structured_content["outputs"][-1]["data"]["text/plain"] == "42"
    assert bad.is_error and "template" in "".join(c.text for c in bad.content)


def test_a_lifetime_that_pauses_over_rest(svc):
    from waiting import wait_for

    code, sb = call(svc, "alice", "POST", "sandboxes", json={"lifetime": 1, "lifetime_action": "pause"})
    assert code == 201 and sb["limits"]["lifetime_action"] == "pause", sb
    sid = sb["id"]
    try:
        assert call(svc, "alice", "POST", f"sandboxes/{sid}/execute", json={"code": "kept = 'yes'"})[0] == 200
        wait_for(lambda: call(svc, "alice", "GET", f"sandboxes/{sid}")[1]["state"] == "paused", 20, "the pause")
        code, ex = call(svc, "alice", "POST", f"sandboxes/{sid}/execute", json={"code": "kept"})
        assert code == 200 and ex["outputs"][-1]["data"]["text/plain"] == "'yes'"
        assert "reached its lifetime of 1 s" in ex["outputs"][0]["text"]  # the owner is told why
        assert call(svc, "alice", "GET", f"sandboxes/{sid}")[1]["state"] == "running"
    finally:
        call(svc, "alice", "DELETE", f"sandboxes/{sid}")


def test_a_watch_ends_when_its_client_goes_away(svc, sandbox):
    from waiting import wait_for

    def pids():
        return call(svc, "alice", "GET", f"sandboxes/{sandbox}/metrics")[1]["samples"][-1]["pids"]

    before = pids()
    r = requests.get(f"{svc.url}/sandboxes/{sandbox}/files/watch", params={"path": ".", "timeout": "19"},
                     headers=svc.headers("alice"), stream=True, timeout=60)
    assert json.loads(next(r.iter_lines()))["event"] == "ready"
    assert pids() > before  # the watcher is a process of the sandbox
    r.close()
    wait_for(lambda: pids() == before, 10, "the watcher to end with its client")
