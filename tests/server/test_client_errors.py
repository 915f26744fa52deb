"""burstlab.client's one boundary: HTTP answers and transport failures become burstlab errors.

A tiny real tornado server answers each status the way jupyter_server does (JSON ``message``), so
these run without the service; tests/server/test_client.py drives the real service.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
import tornado.web
from tornado.httpserver import HTTPServer

from burstlab.client import RemoteWorkspace
from burstlab.errors import BudgetExceeded, BurstlabError, CapacityError, SandboxError, SandboxLimitError
from burstlab.wire import Output

CANNED = {
    "hosts": (403, {"message": "Forbidden", "reason": None}),
    "sessions": (409, {"message": "No H100 is free (2 declared, 2 leased). Wait with wait=60.", "reason": "Conflict"}),
    "usage": (402, {"message": "budget user/alice is exceeded", "reason": "Payment Required"}),
    "workspace": (500, {"message": "Unhandled error", "reason": None}),
    "sandboxes/sb-1/execute": (404, {"message": "No sandbox 'sb-1' (unknown, or another user's).", "reason": "Not Found"}),
    "sandboxes/sb-1/files/big.bin": (413, {"message": "The upload is over max_upload (1 MiB).", "reason": "Payload Too Large"}),
    "sandboxes": (400, {"message": "memory: 64GiB is above the maximum of 4 GiB", "reason": "Bad Request"}),
}


class Canned(tornado.web.RequestHandler):
    def _answer(self, path: str) -> None:
        if path == "sandboxes/sb-2/execute":  # a streamed run: two outputs, a pause, then done
            self.set_header("Content-Type", "application/x-ndjson")
            return None
        status, body = CANNED.get(path, (200, {"ok": True}))
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    async def post(self, path: str) -> None:
        if path == "sandboxes/sb-2/execute":
            self.set_header("Content-Type", "application/x-ndjson")
            for text in ("one\n", "two\n"):
                out = {"kind": "stream", "name": "stdout", "text": text, "data": {}, "metadata": {}}
                self.write(json.dumps({"event": "output", "output": out}) + "\n")
                await self.flush()
                await asyncio.sleep(0.3)
            ex = {"outputs": [{"kind": "stream", "name": "stdout", "text": "one\ntwo\n"}], "error": None,
                  "execution_count": 1, "duration_s": 0.6}
            self.finish(json.dumps({"event": "done", "execution": ex}) + "\n")
            return
        if path == "sandboxes/sb-3/execute":  # the stream is cut before "done"
            self.set_header("Content-Type", "application/x-ndjson")
            self.finish(json.dumps({"event": "error", "message": "the sandbox supervisor went away"}) + "\n")
            return
        self._answer(path)

    def get(self, path: str) -> None:
        self._answer(path)

    def put(self, path: str) -> None:
        self._answer(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def canned_url():
    port = _free_port()
    ready = threading.Event()
    state = {}

    def serve():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = tornado.web.Application([(r"/base/burstlab/api/(.*)", Canned)])
        server = HTTPServer(app)
        server.listen(port, "127.0.0.1")
        state["loop"], state["server"] = loop, server
        loop.call_soon(ready.set)
        loop.run_forever()
        server.stop()
        loop.run_until_complete(server.close_all_connections())
        loop.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ready.wait(10)
    yield f"http://127.0.0.1:{port}/base/"
    state["loop"].call_soon_threadsafe(state["loop"].stop)
    t.join(10)


@pytest.fixture
def ws(canned_url):
    w = RemoteWorkspace(canned_url, token="secret")
    yield w
    w.close()


def test_statuses_become_burstlab_errors_with_the_service_message(ws):
    with pytest.raises(BurstlabError, match="token rejected") as info:
        ws.hosts()
    assert "BURSTLAB_TOKEN" in str(info.value) and info.value.status == 403
    with pytest.raises(CapacityError, match="No H100 is free"):
        ws.list_sessions()
    with pytest.raises(BudgetExceeded, match="budget user/alice"):
        ws.usage()
    with pytest.raises(BurstlabError, match=r"failed on GET .*/workspace \(500\): Unhandled error"):
        ws.info()
    with pytest.raises(SandboxError, match="above the maximum of 4 GiB") as info:
        ws.sandbox(memory="64GiB")
    assert info.value.status == 400
    with pytest.raises(BurstlabError, match="answered without 'id'.*different burstlab versions"):
        ws.get_sandbox("sb-9")  # the canned GET answers 200 {"ok": true}: not a sandbox


def test_unknown_sandbox_and_file_limits(ws):
    from burstlab.client import RemoteSandbox

    sb = RemoteSandbox(ws, {"id": "sb-1", "state": "running", "limits": {"timeout": 5}})
    with pytest.raises(SandboxError, match="No sandbox 'sb-1'") as info:
        sb.run("1")
    assert info.value.status == 404
    with pytest.raises(SandboxLimitError, match="over max_upload"):
        sb.files.write("big.bin", b"x")


def test_no_token_says_how_to_give_one(canned_url, monkeypatch):
    monkeypatch.delenv("BURSTLAB_TOKEN", raising=False)
    with RemoteWorkspace(canned_url) as w:
        with pytest.raises(BurstlabError, match="no token was given: pass token= or set BURSTLAB_TOKEN"):
            w.hosts()


def test_a_url_without_the_api_says_so(canned_url):
    with RemoteWorkspace(canned_url.replace("/base/", "/elsewhere/"), token="t") as w:
        with pytest.raises(BurstlabError, match="does not serve the burstlab API"):
            w.hosts()


def test_connection_refused_names_the_url_and_the_fix():
    url = f"http://127.0.0.1:{_free_port()}/"
    with RemoteWorkspace(url, token="t") as w:
        with pytest.raises(BurstlabError) as info:
            w.hosts()
    msg = str(info.value)
    assert url in msg and "connection refused" in msg and "jupyter burstlab" in msg
    assert info.value.status == 0
    assert isinstance(info.value.__cause__, ConnectionRefusedError)  # kept as the cause, never raised as is


def test_no_url_and_bad_url(monkeypatch):
    monkeypatch.delenv("BURSTLAB_URL", raising=False)
    with pytest.raises(BurstlabError, match="BURSTLAB_URL"):
        RemoteWorkspace()
    with pytest.raises(BurstlabError, match="not an http"):
        RemoteWorkspace("127.0.0.1:8888")


def test_stream_calls_back_in_the_callers_thread_as_output_arrives(ws):
    from burstlab.client import RemoteSandbox

    sb = RemoteSandbox(ws, {"id": "sb-2", "state": "running", "limits": {"timeout": 5}})
    seen: list[tuple[Output, float, int]] = []
    t0 = time.monotonic()
    ex = sb.run("print('one'); print('two')", on_output=lambda o: seen.append((o, time.monotonic() - t0, threading.get_ident())))
    assert [o.text for o, _, _ in seen] == ["one\n", "two\n"]
    assert seen[0][1] < 0.25 < seen[1][1]  # the first arrived before the server's pause ended
    assert {tid for _, _, tid in seen} == {threading.get_ident()}
    assert ex.stdout == "one\ntwo\n" and ex.execution_count == 1


def test_a_stream_that_ends_without_its_result_raises(ws):
    from burstlab.client import RemoteSandbox

    sb = RemoteSandbox(ws, {"id": "sb-3", "state": "running", "limits": {"timeout": 5}})
    with pytest.raises(SandboxError, match="ended without its result: the sandbox supervisor went away"):
        sb.run("1", on_output=lambda o: None)


def test_async_core_runs_on_any_loop(canned_url):
    async def main():
        async with RemoteWorkspace(canned_url, token="t") as w:
            with pytest.raises(CapacityError):
                await w.alist_sessions()
            return True

    assert asyncio.run(main())
