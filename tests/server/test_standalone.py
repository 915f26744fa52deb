"""``jupyter burstlab`` as a process, driven over HTTP by two users' tokens (alice, bob) and the admin's."""

from __future__ import annotations

import os
import sqlite3
import time

import psutil
import pytest
import requests

from burstlab_service import start_service

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root")]


def call(svc, user, method, path, **kwargs):
    r = requests.request(method, f"{svc.url}/{path}", headers=svc.headers(user), timeout=60, **kwargs)
    ctype = r.headers.get("Content-Type", "")
    return r.status_code, (r.json() if ctype.startswith("application/json") else r.content)


def test_users_see_only_their_own(service):
    code, sb = call(service, "alice", "POST", "sandboxes", json={"notebook": "alice-nb"})
    assert code == 201 and sb["user"] == "alice"
    sid = sb["id"]
    code, s = call(service, "alice", "POST", "sessions", json={"gpu": "H100"})
    assert code == 201 and s["user"] == "alice"
    # A service of several users jails each GPU session kernel (isolate_sessions "auto"), and says so.
    assert s["isolated"] is True, s.get("isolation")
    assert call(service, "alice", "GET", "workspace")[1]["isolate_sessions"]["enabled"] is True
    code, out = call(service, "alice", "POST", f"sessions/{s['id']}/execute", json={"code": "import os; os.getuid()"})
    assert code == 200 and out["outputs"][-1]["data"]["text/plain"] != "0", out  # the user's uid, never root
    assert call(service, "alice", "PUT", f"sandboxes/{sid}/files/secret.txt", data=b"alice's")[0] == 200

    # Bob sees none of it, and each of alice's ids is 404 to him, exactly as an unknown id.
    assert call(service, "bob", "GET", "sandboxes")[1] == {"sandboxes": []}
    assert call(service, "bob", "GET", "sessions")[1] == {"sessions": []}
    for method, path, kwargs in (("GET", f"sandboxes/{sid}", {}), ("DELETE", f"sandboxes/{sid}", {}),
                                 ("POST", f"sandboxes/{sid}/execute", {"json": {"code": "1"}}),
                                 ("POST", f"sandboxes/{sid}/execute?stream=1", {"json": {"code": "1"}}),
                                 ("GET", f"sandboxes/{sid}/files/secret.txt", {}),
                                 ("PUT", f"sandboxes/{sid}/files/x.txt", {"data": b"bob's"}),
                                 ("DELETE", f"sandboxes/{sid}/files/secret.txt", {}),
                                 ("GET", f"sessions/{s['id']}", {}), ("DELETE", f"sessions/{s['id']}", {}),
                                 ("POST", f"sessions/{s['id']}/execute", {"json": {"code": "1"}})):
        code, err = call(service, "bob", method, path, **kwargs)
        assert code == 404, (method, path, code, err)
        unknown = path.replace(sid, "sb-00000000").replace(s["id"], "0000")
        assert call(service, "bob", method, unknown, **kwargs)[0] == 404
    # ... and nothing of alice's changed.
    assert call(service, "alice", "GET", f"sandboxes/{sid}/files/secret.txt")[1] == b"alice's"
    assert [x["id"] for x in call(service, "alice", "GET", "sessions")[1]["sessions"]] == [s["id"]]

    # Bob's own sandbox works; usage is attributed per user.
    code, bsb = call(service, "bob", "POST", "sandboxes", json={})
    assert code == 201
    code, ex = call(service, "bob", "POST", f"sandboxes/{bsb['id']}/execute", json={"code": "import os; os.listdir('.')"})
    assert ex["outputs"][-1]["data"]["text/plain"] == "[]"  # bob's work dir, not alice's
    for user, sandbox_id in (("alice", sid), ("bob", bsb["id"])):
        assert call(service, user, "DELETE", f"sandboxes/{sandbox_id}")[0] == 200
    assert call(service, "alice", "DELETE", f"sessions/{s['id']}")[0] == 200
    alice = call(service, "alice", "GET", "usage")[1]
    bob = call(service, "bob", "GET", "usage")[1]
    assert {r["user"] for r in alice["records"]} == {"alice"}
    assert {r["kind"] for r in alice["records"]} == {"sandbox", "session"}
    assert {r["user"] for r in bob["records"]} == {"bob"} and len(bob["records"]) == 1
    assert bob["totals"]["cost_microusd"] == bob["records"][0]["cost_microusd"]
    # Asking for another user's usage gives nothing of theirs.
    assert call(service, "bob", "GET", "usage?user=alice")[1]["records"] == bob["records"]


def test_agent_tokens_open_only_the_burstlab_api(service):
    for method, path in (("GET", "/api/contents"), ("POST", "/api/kernels"), ("GET", "/api/kernels"),
                         ("GET", "/api/sessions"), ("POST", "/api/terminals")):
        url = service.url.replace("/burstlab/api", "") + path
        r = requests.request(method, url, headers=service.headers("alice"), json={}, timeout=10)
        assert r.status_code in (403, 404), (method, path, r.status_code)
    assert requests.get(service.url.replace("/burstlab/api", "/api/kernels"), headers=service.headers("admin"),
                        timeout=10).status_code == 200
    for headers in ({}, {"Authorization": "token wrong-token-000000000000000000"}):
        assert requests.get(f"{service.url}/sandboxes", headers=headers, timeout=10).status_code == 403
    # No login cookie is handed out: a cookie alone never authenticates.
    r = requests.get(f"{service.url}/sandboxes", headers=service.headers("alice"), timeout=10)
    assert not r.cookies
    assert requests.get(f"{service.url}/sandboxes", cookies=r.cookies, timeout=10).status_code == 403


def _descendants(pid):
    return [p.pid for p in psutil.Process(pid).children(recursive=True)]


def test_sigterm_leaves_nothing_running(tmp_path):
    svc = start_service(tmp_path)
    try:
        ids = []
        for user in ("alice", "bob"):
            code, sb = call(svc, user, "POST", "sandboxes", json={})
            assert code == 201
            ids.append(sb["id"])
            call(svc, user, "POST", f"sandboxes/{sb['id']}/execute", json={"code": "import time; x = 1"})
        code, s = call(svc, "alice", "POST", "sessions", json={"gpu": "A100"})
        assert code == 201, s
        children = _descendants(svc.proc.pid)
        assert children
    finally:
        returncode = svc.stop()
    assert returncode == 0, svc.log.read_text()[-3000:]
    def alive():
        out = []
        for p in children:
            try:
                if psutil.Process(p).status() != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except psutil.NoSuchProcess:
                pass
        return out

    deadline = time.monotonic() + 10  # multiprocessing's fork server exits when it sees its parent's pipe close
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert alive() == [], [psutil.Process(p).cmdline()[:3] for p in alive()]
    db = sqlite3.connect(svc.home / "ledger.sqlite")
    rows = db.execute("SELECT kind, user, stop_ns IS NULL, recovered FROM intervals ORDER BY kind, user").fetchall()
    db.close()
    assert [r for r in rows if r[2] or r[3]] == []  # every interval closed at shutdown, none left to recover
    assert [r for r in rows if r[0] in ("sandbox", "session")] == [
        ("sandbox", "alice", 0, 0), ("sandbox", "bob", 0, 0), ("session", "alice", 0, 0)]
