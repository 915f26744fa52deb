"""burstlab.client against a real standalone service (`jupyter burstlab` in a subprocess, two users).

Run, stream, files, errors (bad token, unknown and other users' ids, limits as data), hosts, sessions,
usage, and a notebook kernel whose `%%sandbox` lands in the server's sandbox list.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time

import pytest

from burstlab.client import RemoteWorkspace
from burstlab.errors import BurstlabError, SandboxError

pytestmark = pytest.mark.slow

# `service` (tests/server/conftest.py): a `jupyter burstlab` process with alice's and bob's tokens, per module.


@pytest.fixture(scope="module")
def alice(service):
    with RemoteWorkspace(service.url, service.tokens["alice"]) as ws:
        yield ws


@pytest.fixture(scope="module")
def sb(alice):
    with alice.sandbox(timeout=20, memory="256MiB") as s:
        yield s


def test_run_returns_the_execution_and_state_persists(sb):
    ex = sb.run("x = 21\nprint('hello')\nx * 2")
    assert (ex.stdout, ex.text, ex.error) == ("hello\n", "42", None)
    assert ex.execution_count >= 1 and ex.duration_s > 0
    assert sb.run("x + 1").text == "22"
    ex = sb.run("from IPython.display import HTML, display\ndisplay(HTML('<b>hi</b>'))")
    assert ex.results == [{"text/html": "<b>hi</b>", "text/plain": "<IPython.core.display.HTML object>"}]
    assert sb.limits["memory"] == 256 * 2**20 and sb.limits["timeout"] == 20 and not sb.network


def test_stream_delivers_outputs_as_they_are_produced(sb):
    got: list[tuple[str, float]] = []
    t0 = time.monotonic()
    ex = sb.run("import time\nfor i in range(3):\n    print(i, flush=True)\n    time.sleep(0.3)\n'end'",
                on_output=lambda o: got.append((o.text or o.data.get("text/plain", ""), time.monotonic() - t0)))
    total = time.monotonic() - t0
    assert [t for t, _ in got] == ["0\n", "1\n", "2\n", "'end'"]
    assert got[0][1] < total - 0.5  # the first line arrived while the cell was still running
    assert ex.stdout == "0\n1\n2\n" and ex.text == "'end'" and ex.error is None


def test_files_round_trip_with_odd_names(sb):
    assert sb.files.write("dir a/ü #?%.txt", "héllo") == len("héllo".encode())
    assert sb.files.read("dir a/ü #?%.txt") == "héllo".encode()
    blob = bytes(range(256)) * 100
    assert sb.files.write("blob.bin", blob) == len(blob)
    assert sb.run("len(open('blob.bin','rb').read())").text == str(len(blob))
    sb.run("open('made.txt', 'w').write('from the cell')")
    assert sb.files.read("made.txt") == b"from the cell"
    top = {e["name"]: e["type"] for e in sb.files.list()}
    assert top["dir a"] == "dir" and top["blob.bin"] == "file" and top["made.txt"] == "file"
    assert [e["name"] for e in sb.files.list("dir a")] == ["ü #?%.txt"]
    sb.files.remove("made.txt")
    assert "made.txt" not in {e["name"] for e in sb.files.list(".")}
    with pytest.raises(SandboxError, match=r"'\.\.'"):
        sb.files.read("../../etc/passwd")
    with pytest.raises(SandboxError, match="does not exist") as info:
        sb.files.read("nope.txt")
    assert info.value.status == 404
    with pytest.raises(SandboxError, match="is a directory"):
        sb.files.read("dir a")
    with pytest.raises(SandboxError, match="is a file"):
        sb.files.list("blob.bin")


def test_limits_are_errors_inside_the_execution_and_the_sandbox_survives(sb):
    ex = sb.run("import time\ntime.sleep(10)", timeout=0.5)
    assert ex.error is not None and ex.error.ename == "SandboxTimeout"
    ex = sb.run("b = bytearray(600 * 2**20)")
    assert ex.error is not None and ex.error.ename == "SandboxMemoryLimit", ex
    assert sb.run("1 + 1").text == "2"  # a fresh kernel, same sandbox
    ex = sb.run("raise ValueError('mine')")
    assert (ex.error.ename, ex.error.evalue) == ("ValueError", "mine")


def test_refusals_raise_burstlab_errors_with_the_service_message(service, alice, sb):
    with RemoteWorkspace(service.url, "not-a-token-of-this-service") as bad:
        with pytest.raises(BurstlabError, match="token rejected.*BURSTLAB_TOKEN") as info:
            bad.hosts()
        assert info.value.status == 403
    with RemoteWorkspace(service.url, "") as none:
        with pytest.raises(BurstlabError, match="no token was given"):
            none.sandboxes()
    with pytest.raises(SandboxError, match="No sandbox 'sb-nope'") as info:
        alice.get_sandbox("sb-nope")
    assert info.value.status == 404
    with pytest.raises(SandboxError, match="maximum") as info:
        alice.sandbox(memory="64GiB")
    assert info.value.status == 400
    with pytest.raises(SandboxError, match="memory"):
        alice.sandbox(memory="lots")
    # nothing half-created by the refusals
    assert [s.id for s in alice.sandboxes()] == [sb.id]


def test_each_user_sees_only_their_own(service, alice, sb):
    with RemoteWorkspace(service.url, service.tokens["bob"]) as bob:
        assert bob.sandboxes() == []
        with pytest.raises(SandboxError) as info:
            bob.get_sandbox(sb.id)
        assert info.value.status == 404  # another user's id answers as an unknown one does
        from burstlab.client import RemoteSandbox

        stolen = RemoteSandbox(bob, {"id": sb.id, "state": "running", "limits": {}})
        with pytest.raises(SandboxError):
            stolen.run("print('pwned')")
        with pytest.raises(SandboxError):
            stolen.files.read("blob.bin")
        own = bob.sandbox()
        assert [s.id for s in bob.sandboxes()] == [own.id]
        assert own.id not in {s.id for s in alice.sandboxes()}
    # bob's workspace closed the sandbox it created
    assert own.closed


def test_hosts_sessions_and_usage(service, alice):
    hosts = alice.hosts()
    assert {(h.type, h.count, h.source) for h in hosts} >= {("H100", 2, "declared")}
    assert alice.list_sessions() == []
    assert alice.info()["user"] == "alice"
    with alice.sandbox(notebook="usage-test") as temp:
        temp.run("1")
    deadline = time.monotonic() + 10
    while True:
        rows = [r for r in alice.usage(notebook="usage-test") if r.kind == "sandbox"]
        if rows and rows[0].stop_ns is not None:
            break
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)
    assert rows[0].user == "alice" and rows[0].billed_s >= 0
    report = alice.usage_report(notebook="usage-test")
    assert "cost_microusd" in report["totals"]


def test_the_services_sandboxes_come_from_its_workspaces_pool(alice):
    """POST sandboxes takes a started sandbox from the workspace's pool once it has filled (the ledger says so)."""
    deadline = time.monotonic() + 60
    pooled = False
    while not pooled:
        assert time.monotonic() < deadline, "no sandbox came from the service's pool within 60 s"
        with alice.sandbox(timeout=10, notebook="pool-door") as sb:
            assert sb.run("6 * 7").text == "42"
            sandbox_id = sb.id
        rows = [r for r in alice.usage(notebook="pool-door", kind="sandbox")]
        assert rows and all(r.user == "alice" for r in rows)
        pooled = any(r.detail.get("pooled") for r in rows)
        if not pooled:
            time.sleep(0.2)  # the pool fills in the background after the first request
    assert sandbox_id not in {s.id for s in alice.sandboxes()}  # closed, and billed no further


def test_remote_workspace_starts_a_session_and_executes_on_it_like_the_workspace(service, alice):
    """RemoteWorkspace has burstlab.Workspace's verbs: session, list_sessions, get_session, stop_session."""
    from burstlab.errors import CapacityError, NotFoundError
    from burstlab.wire import SessionRecord

    with alice.session("H100", notebook="remote.ipynb") as s:
        assert isinstance(s.record, SessionRecord)
        assert (s.record.gpu_type, s.record.user, s.record.notebook, s.record.origin, s.state) == \
               ("H100", "alice", "remote.ipynb", "server", "running")
        ex = s.execute_sync("import os\nprint(os.environ['CUDA_VISIBLE_DEVICES'])\nx = 6 * 7\nx")
        assert ex.error is None and ex.text == "42" and ex.stdout.strip().isdigit()
        assert s.execute_sync("x + 1").text == "43"  # the kernel keeps its state between calls
        assert s.execute_sync("1 / 0").error.ename == "ZeroDivisionError"
        assert [r.id for r in alice.list_sessions()] == [s.id]
        assert alice.get_session(s.id).record.spec == "H100"
        with alice.session("H100") as other:  # the second of the two declared H100s
            with pytest.raises(CapacityError):
                alice.session("H100")
            assert alice.stop_session(other.id) is True
        with pytest.raises(NotFoundError):
            alice.get_session("no-such-session")
    assert s.state == "stopped" and alice.list_sessions() == []
    assert alice.stop_session(s.id) is False
    assert alice.list_maps() == [] and alice.budgets() == []


def test_async_core_on_the_callers_loop(service):
    async def main():
        async with RemoteWorkspace(service.url, service.tokens["bob"]) as ws:
            sbs = await asyncio.gather(*(ws.asandbox(timeout=10) for _ in range(3)))
            exs = await asyncio.gather(*(s.arun(f"{i} * 10") for i, s in enumerate(sbs)))
            return [e.text for e in exs], [s.id for s in sbs]

    texts, ids = asyncio.run(main())
    assert texts == ["0", "10", "20"] and len(set(ids)) == 3
    with RemoteWorkspace(service.url, service.tokens["bob"]) as ws:
        assert not {s.id for s in ws.sandboxes()} & set(ids)  # closed with the workspace


# -- %%sandbox in a kernel: the server's sandbox, the same rendering as in-process ---------------------

def _kernel(env: dict[str, str]):
    from jupyter_client import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(env={**os.environ, **env}, extra_arguments=["--HistoryManager.enabled=False"])
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def _cell(kc, code: str) -> tuple[list[tuple], dict]:
    """Outputs (kind, name-or-mimetypes, text) and the reply content of one cell."""
    outs: list[tuple] = []

    def hook(msg):
        t, c = msg["header"]["msg_type"], msg["content"]
        if t == "stream":
            if outs and outs[-1][0] == "stream" and outs[-1][1] == c["name"]:
                outs[-1] = ("stream", c["name"], outs[-1][2] + c["text"])
            else:
                outs.append(("stream", c["name"], c["text"]))
        elif t in ("display_data", "execute_result"):
            outs.append(("display", tuple(sorted(c["data"])), c["data"].get("text/html") or c["data"].get("text/plain")))
        elif t == "error":
            outs.append(("error", c["ename"], "\n".join(c["traceback"])))

    reply = kc.execute_interactive(code, output_hook=hook, timeout=120)
    return outs, reply["content"]


CELLS = [
    "%load_ext burstlab",
    "%%sandbox --timeout 20\nimport sys\nx = 6 * 7\nprint('out', x)\nprint('err', file=sys.stderr)",
    "%%sandbox\nfrom IPython.display import HTML, display\ndisplay(HTML('<i>x</i>'))\nx",
    "%%sandbox\n1 / 0",
    "%%sandbox --timeout 0.5\nimport time\ntime.sleep(5)",
]


def _run_cells(kc) -> list:
    seen = []
    for code in CELLS:
        outs, reply = _cell(kc, code)
        seen.append((outs, reply["status"]))
    return seen


def test_kernel_sandbox_joins_the_server_and_renders_as_in_process(service, alice):
    env = {"BURSTLAB_URL": service.url, "BURSTLAB_TOKEN": service.tokens["alice"],
           "BURSTLAB_NOTEBOOK": "kernel-test.ipynb", "BURSTLAB_HOME": str(service.home)}
    km, kc = _kernel(env)
    try:
        before = {s.id for s in alice.sandboxes()}
        remote = _run_cells(kc)
        mine = [s for s in alice.sandboxes() if s.id not in before]
        assert [s.info["notebook"] for s in mine] == ["kernel-test.ipynb"], [s.info for s in mine]
        # closed from elsewhere (the lab, an agent): the next cell says so and runs in a new one
        alice.get_sandbox(mine[0].id).close()
        outs, reply = _cell(kc, "%%sandbox\nprint('again')")
        assert reply["status"] == "ok" and ("stream", "stdout", "again\n") in outs
        assert any(o[1] == "stderr" and "closed on the server" in o[2] for o in outs), outs
        _cell(kc, "%sandbox_close")
        assert "kernel-test.ipynb" not in {s.info["notebook"] for s in alice.sandboxes()}
        # a kernel that shuts down closes the sandbox it made on the server
        _cell(kc, "%%sandbox\n1")
        assert "kernel-test.ipynb" in {s.info["notebook"] for s in alice.sandboxes()}
        kc.stop_channels()
        km.shutdown_kernel(now=False)
        assert "kernel-test.ipynb" not in {s.info["notebook"] for s in alice.sandboxes()}
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=True)
    # the same cells with no server in sight: an in-process sandbox, the same outputs and errors
    km, kc = _kernel({"BURSTLAB_HOME": str(service.home)})
    try:
        local = _run_cells(kc)
        _cell(kc, "%sandbox_close")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)

    def comparable(seen):
        # tracebacks carry timings and line numbers of the run; compare their gist
        return [([(o[0], o[1], o[2] if o[0] != "error" else "ZeroDivisionError" in o[2] or "SandboxTimeout" in o[2])
                  for o in outs], status) for outs, status in seen]

    assert comparable(remote) == comparable(local)
    assert remote[1][0] == [("stream", "stdout", "out 42\n"), ("stream", "stderr", "err\n")]
    assert remote[2][0][0][2] == "<i>x</i>" and remote[2][0][1][2] == "42"
    assert remote[3][1] == "error" and "ZeroDivisionError" in remote[3][0][-1][2]
    assert remote[4][1] == "error" and "SandboxTimeout" in remote[4][0][-1][2]


def test_a_script_that_exits_without_closing_closes_its_sandboxes(service, alice):
    import subprocess

    code = (f"from burstlab.client import RemoteWorkspace\nws = RemoteWorkspace({service.url!r}, {service.tokens['alice']!r})\n"
            "sb = ws.sandbox(notebook='forgetful')\nprint(sb.run('6*7').text)\n")  # no close(), no with
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout == "42\n", out.stderr
    assert "forgetful" not in {s.info["notebook"] for s in alice.sandboxes()}


def test_ctrl_c_while_run_waits_interrupts_the_cell_on_the_service(sb):
    """Ctrl-C (SIGINT in the waiting thread) sends POST interrupt: the cell ends with its KeyboardInterrupt,
    streamed or not, and the sandbox keeps its state."""
    assert threading.current_thread() is threading.main_thread()
    sb.run("kept = 'yes'")
    for on_output in (None, lambda out: None):
        timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        t0 = time.monotonic()
        ex = sb.run("import time\ntime.sleep(50)", on_output=on_output)
        timer.join()
        assert ex.error is not None and ex.error.ename == "KeyboardInterrupt", ex
        assert time.monotonic() - t0 < 6
    assert sb.run("kept").text == "'yes'"
