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


async def _sandbox(api, **body):
    code, sb = await api("POST", "sandboxes", body=body)
    assert code == 201, sb
    return sb["id"]


async def test_state_persists_and_limit_hit_is_data(api):
    sid = await _sandbox(api, timeout=5)
    await api("POST", "sandboxes", sid, "execute", body={"code": "y = [1, 2, 3]"})
    code, ex = await api("POST", "sandboxes", sid, "execute", body={"code": "sum(y)"})
    assert ex["outputs"][-1]["data"]["text/plain"] == "6"
    code, ex = await api("POST", "sandboxes", sid, "execute", body={"code": "import time; time.sleep(10)", "timeout": 0.5})
    assert code == 200 and ex["error"]["ename"] == "SandboxTimeout"
    code, ex = await api("POST", "sandboxes", sid, "execute", body={"code": "1/0"})
    assert code == 200 and ex["error"]["ename"] == "ZeroDivisionError"
    await api("DELETE", "sandboxes", sid)


async def test_stream_sends_outputs_as_they_come(jp_fetch):
    import time

    r = await jp_fetch("burstlab", "api", "sandboxes", method="POST", body="{}")
    sid = json.loads(r.body)["id"]
    seen = []  # (arrival time, event)
    buf = b""

    def on_chunk(chunk):
        nonlocal buf
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            seen.append((time.monotonic(), json.loads(line)))

    code = "import time\nprint('a', flush=True)\ntime.sleep(0.6)\nprint('b', flush=True)\n7"
    r = await jp_fetch("burstlab", "api", "sandboxes", sid, "execute", method="POST", params={"stream": "1"},
                       body=json.dumps({"code": code}), streaming_callback=on_chunk)
    assert r.headers["Content-Type"] == "application/x-ndjson"
    events = [e for _, e in seen]
    assert [e["event"] for e in events] == ["output", "output", "output", "done"]
    assert events[0]["output"]["text"] == "a\n" and events[1]["output"]["text"] == "b\n"
    assert seen[1][0] - seen[0][0] > 0.4, "the first output must arrive before the cell ends"
    assert events[-1]["execution"]["outputs"][-1]["data"]["text/plain"] == "7"
    # A refused streamed request is an ordinary JSON error, not a stream.
    r = await jp_fetch("burstlab", "api", "sandboxes", "sb-nope", "execute", method="POST", params={"stream": "1"},
                       body=json.dumps({"code": "1"}), raise_error=False)
    assert r.code == 404 and json.loads(r.body)["message"]
    await jp_fetch("burstlab", "api", "sandboxes", sid, method="DELETE")


async def test_files_round_trip(api):
    sid = await _sandbox(api)
    payload = bytes(range(256)) * 10
    code, data = await api("PUT", "sandboxes", sid, "files", "dir", "data é.bin", raw=payload)
    assert code == 200 and data == {"path": "dir/data é.bin", "size": len(payload)}
    code, data = await api("GET", "sandboxes", sid, "files", "dir", "data é.bin")
    assert code == 200 and data == payload
    code, ex = await api("POST", "sandboxes", sid, "execute", body={"code": "len(open('dir/data é.bin','rb').read())"})
    assert ex["outputs"][-1]["data"]["text/plain"] == str(len(payload))
    await api("POST", "sandboxes", sid, "execute", body={"code": "open('made.txt','w').write('from the kernel')"})
    code, data = await api("GET", "sandboxes", sid, "files", "made.txt")
    assert data == b"from the kernel"
    code, listing = await api("GET", "sandboxes", sid, "files")
    assert {e["name"]: e["type"] for e in listing["entries"]} == {"dir": "dir", "made.txt": "file"}
    code, listing = await api("GET", "sandboxes", sid, "files", "dir")
    assert listing["entries"] == [{"name": "data é.bin", "type": "file", "size": len(payload)}]
    code, data = await api("DELETE", "sandboxes", sid, "files", "made.txt")
    assert code == 200 and data == {"path": "made.txt", "removed": True}
    code, err = await api("GET", "sandboxes", sid, "files", "made.txt")
    assert code == 404 and "does not exist" in err["message"]
    # Path tricks are refused with 400 (or 404 for what cannot be named), never served.
    await api("POST", "sandboxes", sid, "execute", body={"code": "import os; os.symlink('/etc/passwd', 'link')"})
    code, err = await api("GET", "sandboxes", sid, "files", "link")
    assert code == 400 and "symlink" in err["message"]
    code, err = await api("GET", "sandboxes", sid, "files", "..", "..", "etc", "passwd")
    assert code in (400, 404)
    await api("DELETE", "sandboxes", sid)


async def test_upload_over_max_upload_is_413(api, jp_serverapp):
    sid = await _sandbox(api)
    ext = jp_serverapp.extension_manager.extension_points["burstlab"].app
    ext.manager._sandboxes[sid].sandbox.files.max_upload = 1000  # a small limit for the test
    ext.manager._sandboxes[sid].sandbox.limits = ext.manager._sandboxes[sid].sandbox.limits.replace(max_upload=1000)
    code, err = await api("PUT", "sandboxes", sid, "files", "big.bin", raw=b"x" * 5000)
    assert code == 413 and "max_upload" in err["message"]
    code, listing = await api("GET", "sandboxes", sid, "files")
    assert listing["entries"] == []  # nothing half-written
    code, data = await api("PUT", "sandboxes", sid, "files", "ok.bin", raw=b"x" * 1000)
    assert code == 200
    await api("DELETE", "sandboxes", sid)


@pytest.mark.parametrize("body,needle", [
    ({"memory": "64GiB"}, "maximum"),
    ({"timeout": 3600}, "maximum"),
    ({"pids": 100000}, "maximum"),
    ({"cpus": 64}, "maximum"),
    ({"network": True}, "network"),
    ({"memory": "lots"}, "not a size"),
    ({"memory": "8MiB"}, "64 MiB"),
    ({"timeout": "30"}, "timeout"),
    ({"timeout": -1}, "timeout"),
    ({"pids": 4}, "pids"),
    ({"colour": "blue"}, "colour"),
    ([], "object"),
])
async def test_bad_sandbox_requests_are_400_and_create_nothing(api, body, needle):
    code, err = await api("POST", "sandboxes", body=body)
    assert code == 400, err
    assert needle in err["message"]
    code, listing = await api("GET", "sandboxes")
    assert listing["sandboxes"] == []


async def test_malformed_json_and_oversized_body(api):
    code, err = await api("POST", "sandboxes", raw=b"{not json")
    assert code == 400 and "JSON" in err["message"]
    code, err = await api("POST", "sandboxes", raw=b'{"timeout": 5' + b" " * (17 * 1024 * 1024) + b"}")
    assert code == 413 and "16 MiB" in err["message"]
    code, listing = await api("GET", "sandboxes")
    assert listing["sandboxes"] == []


async def test_execute_errors(api):
    code, err = await api("POST", "sandboxes", "sb-0123456789abcdef", "execute", body={"code": "1"})
    assert code == 404
    sid = await _sandbox(api)
    for body, needle in (({}, "code"), ({"code": 5}, "code"), ({"code": "1", "x": 1}, "x"),
                         ({"code": "1", "timeout": 3600}, "maximum"), ({"code": "1", "timeout": 0}, "timeout")):
        code, err = await api("POST", "sandboxes", sid, "execute", body=body)
        assert code == 400 and needle in err["message"], (body, err)
    code, err = await api("POST", "sandboxes", sid, "execute", params={"stream": "yes"}, body={"code": "1"})
    assert code == 400 and "stream" in err["message"]
    await api("DELETE", "sandboxes", sid)


async def test_sandboxes_per_user_maximum_is_409(api):
    ids = [await _sandbox(api) for _ in range(3)]
    code, err = await api("POST", "sandboxes", body={})
    assert code == 409 and "maximum" in err["message"]
    for sid in ids:
        await api("DELETE", "sandboxes", sid)
    assert (await api("POST", "sandboxes", body={}))[0] == 201


async def test_shutdown_closes_sandboxes_and_their_intervals(api, jp_serverapp):
    import psutil

    sid = await _sandbox(api)
    ext = jp_serverapp.extension_manager.extension_points["burstlab"].app
    sandbox = ext.manager._sandboxes[sid].sandbox
    pid = sandbox.kernel_pid
    assert psutil.pid_exists(pid)
    await ext.stop_extension()
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    from burstlab.billing import open_ledger

    ledger = open_ledger(ext.manager.ws.config.ledger_url, ext.manager.ws.config.home)
    mine = [r for r in ledger.usage(kind="sandbox") if r.detail.get("sandbox") == sandbox.uid]
    assert len(mine) == 1 and mine[0].stop_ns is not None and not mine[0].recovered
    ledger.close()
    assert ext.manager._sandboxes == {}
