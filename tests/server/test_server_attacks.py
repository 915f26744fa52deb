"""User alice attacks a real ``jupyter burstlab`` shared with bob (issue 12, the service's side).

Each test performs the attack with alice's token (or none) and asserts that it fails, that bob is
not slowed or starved, and that the service stays healthy. The service runs with small caps so the
attacks reach them: 3 sandboxes per user, 1.5 GiB of sandbox memory in all, 2 GPU sessions per user,
waits of at most 5 s, 1 MiB of output per response.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import socket
import statistics
import threading
import time

import psutil
import pytest
import requests

from burstlab_service import start_service

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")]

MIB = 2**20
OUTPUT_CAP = 1 * MIB
EXTRA = ("--BurstLabApp.max_sandboxes_per_user=3", "--BurstLabApp.max_sandbox_memory_total=1536MiB",
         "--BurstLabApp.max_sessions_per_user=2", "--BurstLabApp.max_wait=5", f"--BurstLabApp.max_output={OUTPUT_CAP}")
FLOOD = ("from IPython.display import publish_display_data\n"
         "for i in range(60):\n"
         "    publish_display_data({'text/plain': 'x'}, metadata={'p': 'A' * 3 * 2**20})\n")


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    s = start_service(tmp_path_factory.mktemp("attacks"), *EXTRA, hashed_tokens=True)  # a tokens file of digests
    yield s
    s.stop()


def call(svc, user, method, path, timeout=60, **kwargs):
    headers = {**(svc.headers(user) if user else {}), **kwargs.pop("headers", {})}
    r = requests.request(method, f"{svc.url}/{path}", headers=headers, timeout=timeout, **kwargs)
    ctype = r.headers.get("Content-Type", "")
    return r.status_code, (r.json() if ctype.startswith("application/json") and r.content else r.content)


def healthy(svc):
    assert svc.proc.poll() is None, svc.log.read_text()[-3000:]
    assert call(svc, "bob", "GET", "sandboxes", timeout=10)[0] == 200


def rss(svc) -> int:
    return psutil.Process(svc.proc.pid).memory_info().rss


class PeakRss:
    """The service's largest RSS while the block runs (sampled every 10 ms)."""

    def __init__(self, svc):
        self.svc, self.peak, self._stop = svc, 0, threading.Event()

    def __enter__(self):
        self.base = rss(self.svc)
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.svc))
            time.sleep(0.01)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss(self.svc))

    @property
    def growth(self) -> int:
        return self.peak - self.base


# -- 1. inputs bounded before work starts ------------------------------------------------------------

def _raw(svc, user, method, path, body: str):
    return call(svc, user, method, path, data=body.encode("utf-8", "surrogatepass"),
                headers={**svc.headers(user), "Content-Type": "application/json"})


def test_non_finite_and_out_of_range_numbers_are_400_naming_the_field(svc):
    cases = [("POST", "sessions", '{"gpu": "H100", "wait": %s}', "wait"),
             ("POST", "sandboxes", '{"timeout": %s}', "timeout"),
             ("POST", "sandboxes", '{"cpus": %s}', "cpus"),
             ("POST", "sandboxes", '{"memory": %s}', "memory"),
             ("POST", "sandboxes", '{"pids": %s}', "pids"),
             ("POST", "sandboxes/sb-00000000/execute", '{"code": "1", "timeout": %s}', "timeout"),
             ("POST", "sessions/0000/execute", '{"code": "1", "timeout": %s}', "timeout"),
             ("PUT", "budgets/user/alice", '{"limit_usd": %s}', "limit_usd")]
    for method, path, template, field in cases:
        for value in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400"):
            code, err = _raw(svc, "alice", method, path, template % value)
            assert code == 400, (path, value, code, err)
            assert err["message"].startswith(field + ":") and "finite" in err["message"], err
        for value in ("1e300", "-1", str(10**30)):
            code, err = _raw(svc, "alice", method, path, template % value)
            assert code == 400 and err["message"].startswith(field), (path, value, code, err)
    code, err = _raw(svc, "alice", "POST", "sessions", '{"gpu": "H100", "wait": 6}')
    assert code == 400 and "wait" in err["message"] and "5" in err["message"], err  # c.BurstLabApp.max_wait
    code, err = _raw(svc, "alice", "POST", "sessions", '{"gpu": "H100", "wait": 1%s}' % ("0" * 5000))
    assert code == 400, err  # more digits than Python converts
    healthy(svc)


def test_deep_nesting_and_lone_surrogates_are_400(svc):
    deep = "[" * 100_000 + "]" * 100_000
    for path in ("sandboxes", "sessions", "sandboxes/sb-00000000/execute"):
        code, err = _raw(svc, "alice", "POST", path, deep)
        assert code == 400 and "nest" in err["message"], (path, code, err)
        code, err = _raw(svc, "alice", "POST", path, '{"notebook": ' + "[" * 100 + "]" * 100 + "}")
        assert code == 400, (path, code, err)
    code, err = _raw(svc, "alice", "POST", "sandboxes", '{"notebook": [' + "1," * 200_000 + "1]}")
    assert code == 400 and "values" in err["message"], err  # walked no further than 10,000 values
    for path, body in (("sandboxes", '{"notebook": "a\\ud800b"}'), ("sessions", '{"gpu": "H100", "notebook": "\\udfff"}'),
                       ("sandboxes/sb-00000000/execute", '{"code": "\\ud800"}'), ("sandboxes", '{"\\ud800": 1}')):
        code, err = _raw(svc, "alice", "POST", path, body)
        assert code == 400 and "surrogate" in err["message"], (path, code, err)
    code, err = _raw(svc, "alice", "POST", "sandboxes", '{"notebook": "\\ud83d\\ude00"}')  # a valid pair is text
    assert code == 201, err
    assert call(svc, "alice", "DELETE", f"sandboxes/{err['id']}")[0] == 200
    code, err = call(svc, "alice", "POST", "sandboxes", data=b'{"notebook": "\xff"}')
    assert code == 400 and "UTF-8" in err["message"], err
    healthy(svc)


def _p95(samples):
    return statistics.quantiles(samples, n=20)[-1]


def _bob_latencies(svc, n=40):
    out = []
    for i in range(n):
        path = ("hosts", "usage", "sessions")[i % 3]  # each answered on one of the API's threads
        t = time.perf_counter()
        code, _ = call(svc, "bob", "GET", path, timeout=30)
        out.append(time.perf_counter() - t)
        assert code == 200, path
    return out


def test_waits_never_stall_other_users(tmp_path):
    # Six waiters of alice's at once: as many as the server's shared thread pool has threads on a 2-core host.
    svc = start_service(tmp_path, "--BurstLabApp.max_wait=5", "--BurstLabApp.max_sessions_per_user=10",
                        "--BurstLabApp.max_waiting_per_user=6", "--BurstLabApp.max_waiting=8", hashed_tokens=True)
    try:
        _waits_never_stall_other_users(svc)
    finally:
        svc.stop()


def _waits_never_stall_other_users(svc):
    # Alice takes every GPU, then floods POST sessions with NaN, huge and maximal waits.
    held = []
    for gpu in ("H100:2", "A100"):
        code, s = call(svc, "alice", "POST", "sessions", json={"gpu": gpu})
        assert code == 201, s
        held.append(s["id"])
    try:
        _bob_latencies(svc, 6)  # warm
        before = _bob_latencies(svc)
        bodies = ['{"gpu": "H100", "wait": NaN}', '{"gpu": "H100", "wait": 1e308}'] * 3 + ['{"gpu": "H100", "wait": 5}'] * 7
        with cf.ThreadPoolExecutor(len(bodies)) as pool:
            t0 = time.monotonic()
            attack = [pool.submit(_raw, svc, "alice", "POST", "sessions", b) for b in bodies]
            time.sleep(0.3)
            during = _bob_latencies(svc)
            results = [f.result() for f in attack]
            elapsed = time.monotonic() - t0
        print(f"alice's 13 POST sessions answered in {elapsed:.1f} s")
        codes = sorted(code for code, _ in results)
        assert codes.count(400) == 6, results  # NaN and 1e308: refused by the schema, naming wait
        assert codes.count(409) == 7, results  # no GPU within 5 s (6), or no waiting slot left (the 7th)
        assert all("wait" in err["message"] for code, err in results if code == 400), results
        assert 5 <= elapsed < 5 + 10, elapsed  # the waits did wait, and ended at max_wait whatever was asked
        p_before, p_during = _p95(before), _p95(during)
        print(f"bob p95: {p_before * 1000:.1f} ms before, {p_during * 1000:.1f} ms during alice's waits")
        # The goal is 2x; the 250 ms floor is this shared 2-core host's own noise (a load average of 20 moves a
        # p95 that much by itself). Waiters holding the server's threads moved it to 2.3 s (seconds: the wait).
        assert p_during <= max(2 * p_before, p_before + 0.25), (p_before, p_during)
        # Bob queues for the A100 himself: he gets it within a second or so of alice letting it go.
        code, err = call(svc, "bob", "POST", "sessions", json={"gpu": "A100", "wait": 0})
        assert code == 409 and "A100" in err["message"], err
        with cf.ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(call, svc, "bob", "POST", "sessions", json={"gpu": "A100", "wait": 5})
            time.sleep(0.5)
            assert call(svc, "alice", "DELETE", f"sessions/{held.pop()}")[0] == 200
            t = time.monotonic()
            code, s = waiting.result()
        assert code == 201 and s["user"] == "bob" and s["gpu_type"] == "A100", s
        print(f"bob's waiting POST sessions got the A100 {time.monotonic() - t:.2f} s after alice freed it")
        assert call(svc, "bob", "DELETE", f"sessions/{s['id']}")[0] == 200
    finally:
        for sid in held:
            call(svc, "alice", "DELETE", f"sessions/{sid}")
    healthy(svc)


# -- 2. bodies refused before they are read -------------------------------------------------------------

def _send_huge(port: int, head: str, chunked: bool, total: int = 300 * MIB) -> tuple[bytes, int]:
    """Send ``head`` and up to ``total`` body bytes; returns (the response's first bytes, bytes sent)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent = 0
    try:
        s.sendall(head.encode())
        block = b"x" * MIB
        piece = (b"%x\r\n" % len(block)) + block + b"\r\n" if chunked else block
        try:
            while sent < total:
                s.sendall(piece)
                sent += len(block)
        except (BrokenPipeError, ConnectionResetError):
            pass
        s.settimeout(10)
        try:
            answer = s.recv(4096)
        except (ConnectionResetError, TimeoutError, OSError):
            answer = b""
        return answer, sent
    finally:
        s.close()


def test_huge_bodies_are_refused_before_they_are_read(svc):
    port = int(svc.url.split(":")[2].split("/")[0])
    token = svc.tokens["alice"]
    cases = [  # (headers, chunked, expected status or None if the connection is simply closed)
        ("POST /burstlab/api/sandboxes HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % (300 * MIB), False, b"413"),
        ("POST /burstlab/api/sandboxes HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n", True, b"403"),
        ("PUT /burstlab/api/sandboxes/sb-1/files/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n", True, b"403"),
        ("POST /api/contents HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n" % (300 * MIB), False, None),
        ("PUT /api/contents/x.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n", True, None),
        # Authenticated, chunked: read no further than c.BurstLabApp.max_request_body (16 MiB).
        (f"POST /burstlab/api/sandboxes HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: token {token}\r\n"
         "Transfer-Encoding: chunked\r\n\r\n", True, None),
    ]
    for head, chunked, status in cases:
        with PeakRss(svc) as peak:
            answer, sent = _send_huge(port, head, chunked)
        line = head.splitlines()[0]
        print(f"{line} ({'chunked' if chunked else 'Content-Length'}): RSS +{peak.growth / MIB:.1f} MiB, "
              f"{sent / MIB:.0f} MiB sent, answer {answer[:12]!r}")
        assert peak.growth < 32 * MIB, (line, peak.growth / MIB)
        assert sent < 300 * MIB, (line, "the whole body was read")
        if status is not None:
            assert answer.startswith(b"HTTP/1.1 " + status), (line, answer[:200])
    healthy(svc)


# -- 3. every limit is a reservation -----------------------------------------------------------------------

def test_parallel_creates_cannot_pass_the_caps(svc):
    with cf.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda _: call(svc, "alice", "POST", "sandboxes", json={"memory": "512MiB"},
                                               timeout=120), range(12)))
    made = [sb["id"] for code, sb in results if code == 201]
    try:
        assert len(made) == 3, [(c, b if c != 201 else b["id"]) for c, b in results]
        assert sorted(c for c, _ in results) == [201] * 3 + [409] * 9
        assert len(call(svc, "alice", "GET", "sandboxes")[1]["sandboxes"]) == 3
        # 3 x 512 MiB is the service's total (max_sandbox_memory_total): bob is refused until alice closes one.
        code, err = call(svc, "bob", "POST", "sandboxes", json={"memory": "512MiB"})
        assert code == 409 and "max_sandbox_memory_total" in err["message"], err
        assert call(svc, "alice", "DELETE", f"sandboxes/{made.pop()}")[0] == 200
        code, bsb = call(svc, "bob", "POST", "sandboxes", json={"memory": "512MiB"})
        assert code == 201, bsb
        assert call(svc, "bob", "DELETE", f"sandboxes/{bsb['id']}")[0] == 200
    finally:
        for sid in made:
            call(svc, "alice", "DELETE", f"sandboxes/{sid}")
    # GPU sessions: 6 parallel creates against max_sessions_per_user = 2 (and 3 free GPUs) give exactly 2.
    with cf.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: call(svc, "alice", "POST", "sessions", json={"gpu": ["H100", "A100"]},
                                               timeout=120), range(6)))
    made = [s["id"] for code, s in results if code == 201]
    try:
        assert len(made) == 2 and sorted(c for c, _ in results) == [201] * 2 + [409] * 4, results
    finally:
        for sid in made:
            call(svc, "alice", "DELETE", f"sessions/{sid}")
    healthy(svc)


# -- 4. output capped at every hop -------------------------------------------------------------------------

def test_output_floods_are_capped(svc):
    code, s = call(svc, "alice", "POST", "sessions", json={"gpu": "A100"})
    assert code == 201, s
    code, sb = call(svc, "alice", "POST", "sandboxes", json={"timeout": 60})
    assert code == 201, sb
    try:
        for path, label in ((f"sessions/{s['id']}/execute", "session"), (f"sandboxes/{sb['id']}/execute", "sandbox"),
                            (f"sandboxes/{sb['id']}/execute?stream=1", "sandbox stream")):
            with PeakRss(svc) as peak:
                t = time.monotonic()
                r = requests.post(f"{svc.url}/{path}", headers=svc.headers("alice"), json={"code": FLOOD, "timeout": 60},
                                  timeout=120)
            assert r.status_code == 200, r.text[:500]
            size = len(r.content)
            print(f"{label}: 180 MiB of metadata -> {size / MIB:.2f} MiB response, RSS +{peak.growth / MIB:.1f} MiB, "
                  f"{time.monotonic() - t:.1f} s")
            if label.endswith("stream"):
                events = [json.loads(line) for line in r.text.splitlines()]
                assert events[-1]["event"] in ("done", "error")
                assert size <= 2 * OUTPUT_CAP + 64 * 1024
            else:
                ex = r.json()
                assert size <= OUTPUT_CAP + 64 * 1024
                assert "limit" in "".join(o.get("text", "") for o in ex["outputs"])  # a marker says what was dropped
            if label == "session":  # at most 16 MiB kept and 32 messages (3 MiB each) queued unread; before: 1.3 GiB
                assert peak.growth < 128 * MIB, peak.growth / MIB
    finally:
        call(svc, "alice", "DELETE", f"sandboxes/{sb['id']}")
        call(svc, "alice", "DELETE", f"sessions/{s['id']}")
    healthy(svc)


def test_mcp_results_are_bounded(svc):
    """An agent floods output through MCP (`jupyter burstlab mcp` against the service): the tool result
    carries at most max_output, and the service stays small."""
    anyio = pytest.importorskip("anyio")
    pytest.importorskip("mcp")
    from test_mcp import _agent, _params, _text

    got: dict = {}

    async def body(session):
        created = await session.call_tool("create_sandbox", {"timeout": 60})
        assert not created.is_error, _text(created)
        sid = created.structured_content["sandbox_id"]
        with PeakRss(svc) as peak:
            r = await session.call_tool("run_cell", {"sandbox_id": sid, "code": FLOOD.replace("'x'", "'x' * 2**20").replace("60", "20")})
        assert not r.is_error, _text(r)
        got["sizes"] = [len(json.dumps(r.structured_content)) + len(_text(r))]
        got["text"], got["growth"] = _text(r), peak.growth
        await session.call_tool("close_sandbox", {"sandbox_id": sid})

    env = {"BURSTLAB_URL": svc.url, "BURSTLAB_TOKEN": svc.tokens["alice"]}
    anyio.run(_agent, _params(env), body)
    print(f"MCP run_cell, 60 MiB of metadata and 20 MiB of text/plain: results of {max(got['sizes']) / MIB:.2f} MiB, "
          f"service RSS +{got['growth'] / MIB:.1f} MiB")
    assert max(got["sizes"]) <= 2 * OUTPUT_CAP + 256 * 1024, got["sizes"]  # the JSON, and the text read from it
    assert "limit" in got["text"]
    assert got["growth"] < 96 * MIB
    healthy(svc)


def test_local_mcp_has_the_service_maxima():
    """Without a URL the MCP server runs sandboxes itself: the same maxima as the REST service, no network."""
    anyio = pytest.importorskip("anyio")
    pytest.importorskip("mcp")
    from test_mcp import _agent, _params, _text

    from burstlab.jupyter_ext.maxima import Maxima

    refusals = []

    async def body(session):
        for args in ({"network": True}, {"memory": "64GiB"}, {"timeout": 1e9}):
            r = await session.call_tool("create_sandbox", args)
            refusals.append((args, r.is_error, _text(r)))
        created = await session.call_tool("create_sandbox", {"timeout": 60})
        assert not created.is_error, _text(created)
        sid = created.structured_content["sandbox_id"]
        r = await session.call_tool("run_cell", {"sandbox_id": sid, "code": "1", "timeout": 1e9})
        refusals.append(({"run_cell timeout": 1e9}, r.is_error, _text(r)))
        r = await session.call_tool("run_cell", {"sandbox_id": sid, "code": "print('y' * (3 * 2**20))\n" * 5})
        assert not r.is_error, _text(r)
        refusals.append(("flood", len(json.dumps(r.structured_content)), _text(r)[-300:]))
        await session.call_tool("close_sandbox", {"sandbox_id": sid})

    anyio.run(_agent, _params({}), body)
    for args, is_error, text in refusals[:4]:
        assert is_error is True, (args, text)
        assert "maximum" in text or "network" in text, (args, text)
    _, size, text = refusals[4]
    assert size <= Maxima().output + 64 * 1024, size


# -- 5. tokens scoped --------------------------------------------------------------------------------------

def test_tokens_are_scoped(svc):
    root = svc.url.replace("/burstlab/api", "")
    for user in ("alice", "bob"):
        code, ws = call(svc, user, "GET", "workspace")
        assert code == 200 and ws["user"] == user and ws["scheduler"] is None, ws  # users never reach the cluster
        for method, path in (("GET", "/api/contents"), ("GET", "/api/kernels"), ("POST", "/api/kernels")):
            assert requests.request(method, root + path, headers=svc.headers(user), timeout=10).status_code == 403
    code, ws = call(svc, "admin", "GET", "workspace")
    assert code == 200 and ws["scheduler"], ws  # the operator (the server's own token) sees it
    # A GPU session's kernel holds none of the service's credentials.
    code, s = call(svc, "alice", "POST", "sessions", json={"gpu": "A100"})
    assert code == 201, s
    try:
        code, ex = call(svc, "alice", "POST", f"sessions/{s['id']}/execute",
                        json={"code": "import os; sorted(k for k in os.environ if 'TOKEN' in k)"})
        assert code == 200 and ex["outputs"][-1]["data"]["text/plain"] == "[]", ex
    finally:
        call(svc, "alice", "DELETE", f"sessions/{s['id']}")
    code, sb = call(svc, "alice", "POST", "sandboxes", json={})  # nor does a sandbox's
    assert code == 201, sb
    try:
        code, ex = call(svc, "alice", "POST", f"sandboxes/{sb['id']}/execute",
                        json={"code": "import os; sorted(k for k in os.environ if 'TOKEN' in k or k == 'BURSTLAB_URL')"})
        assert code == 200 and ex["outputs"][-1]["data"]["text/plain"] == "[]", ex
    finally:
        call(svc, "alice", "DELETE", f"sandboxes/{sb['id']}")
    healthy(svc)


def test_tokens_at_rest(svc, tmp_path):
    import subprocess
    import sys

    from burstlab.jupyter_ext.auth import hashed

    # A tokens file others can read is refused at start, naming the fix ...
    bad = tmp_path / "tokens.json"
    bad.write_text(json.dumps({"x" * 24: "alice"}))
    bad.chmod(0o644)
    r = subprocess.run([sys.executable, "-m", "burstlab.jupyter_ext", "--tokens-file", str(bad), "--port", "0"],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "BURSTLAB_HOME": str(tmp_path / "h")})
    assert r.returncode != 0 and "chmod 600" in r.stderr + r.stdout, (r.returncode, r.stderr[-2000:])
    # ... but a file of digests ("sha256:HEX", as this module's service has) holds no token and anyone may read it.
    tokens_file = svc.home.parent / "tokens.json"
    assert tokens_file.stat().st_mode & 0o044
    assert "alice-token" not in tokens_file.read_text() and hashed(svc.tokens["alice"]) in tokens_file.read_text()
    code, ws = call(svc, "alice", "GET", "workspace")
    assert code == 200 and ws["user"] == "alice"
    assert call(svc, "bob", "GET", "workspace")[1]["user"] == "bob"
    assert requests.get(f"{svc.url}/workspace", headers={"Authorization": "token " + hashed(svc.tokens["alice"])},
                        timeout=10).status_code == 403  # the digest itself is no token


# -- 7. BURSTLAB_HOME is private ---------------------------------------------------------------------------

def test_everything_under_home_is_private(svc):
    code, sb = call(svc, "bob", "POST", "sandboxes", json={})
    assert code == 201
    assert call(svc, "bob", "POST", f"sandboxes/{sb['id']}/execute", json={"code": "1"})[0] == 200
    assert call(svc, "bob", "DELETE", f"sandboxes/{sb['id']}")[0] == 200
    seen = []
    for top, dirs, files in os.walk(svc.home):
        for name in dirs:
            mode = os.lstat(os.path.join(top, name)).st_mode & 0o777
            assert mode & 0o077 == 0, (os.path.join(top, name), oct(mode))
        for name in files:
            path = os.path.join(top, name)
            mode = os.lstat(path).st_mode & 0o777
            assert mode & 0o077 == 0, (path, oct(mode))
            seen.append(os.path.relpath(path, svc.home))
    assert os.stat(svc.home).st_mode & 0o077 == 0
    assert "ledger.sqlite" in seen and any(p.startswith("ledger.sqlite-") for p in seen), seen
