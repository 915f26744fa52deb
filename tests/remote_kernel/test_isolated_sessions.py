"""GPU session kernels in the session jail (``c.BurstLab.isolate_sessions``; issue 12): two users' real sessions
on a real embedded Dask cluster, each kernel a real ipykernel in the jail, attacked from the other.

With isolation off the same attacks succeed: that is what "not protected" means, and it is asserted so that the
documentation (docs/kernels.md) stays true."""

import json
import os
import signal
import time
import uuid

import psutil
import pytest

import burstlab
from burstlab.errors import SessionLostError
from burstlab.remote_kernel import _jailed, _kernelspecs
from burstlab.sandbox._served import WORK_ROOT_ENV, start_served_kernel
from burstlab.remote_kernel._tls import KEY_FILE, tls_dir
from burstlab.sandbox._jailspec import STATE_BASE
from burstlab.wire import SessionIsolation
from waiting import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the session jail needs root")

# What alice's kernel tries (run inside it): each entry is "ok: ..." if it worked, else the error's name.
ATTACK = r'''
import json, os, signal
def _try(fn):
    try:
        return "ok: " + str(fn())[:80]
    except Exception as e:
        return type(e).__name__
_t = json.loads({targets!r})
print(json.dumps({{
    "bob_file": _try(lambda: open(_t["bob_file"]).read()),
    "bob_connection": _try(lambda: open(_t["bob_connection"]).read()),
    "home": _try(lambda: os.listdir(_t["home"])),
    "tls_key": _try(lambda: open(_t["tls_key"]).read()),
    "ledger": _try(lambda: open(_t["ledger"], "rb").read(16)),
    "signal_bob": _try(lambda: os.kill(_t["bob_pid"], signal.SIGTERM if _t["really"] else 0)),
    "service_env": sorted(k for k in os.environ if k.startswith(("BURSTLAB_TOKEN", "JUPYTER_TOKEN", "DASK_"))),
}}))
'''


@pytest.fixture(scope="module")
def work_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("session-users"))


@pytest.fixture(scope="module")
def ws(work_root, tmp_path_factory):
    """The process's workspace (so a kernel provisioner here uses it too), on one embedded cluster (declared
    H100:2) for every test here; each test sets isolate_sessions itself."""
    saved = {k: os.environ.get(k) for k in (WORK_ROOT_ENV, "JUPYTER_PATH")}
    os.environ[WORK_ROOT_ENV] = work_root  # the GPU workers (started by the cluster) inherit it
    prefix = tmp_path_factory.mktemp("prefix")
    _kernelspecs.install(["H100"], prefix=str(prefix))  # "Python 3 (burstlab · H100)"
    os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")
    burstlab.get_workspace().close()  # a fresh one: its GPU workers start from now on, with the work root above
    w = burstlab.get_workspace()
    w.config.kernel_pool_size = 0
    w.config.idle_timeout = 0
    yield w
    w.close()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _names():
    tag = uuid.uuid4().hex[:6]
    return f"alice-{tag}", f"bob-{tag}"


def _out(execution) -> str:
    assert execution.error is None, execution.error
    return "".join(o.text for o in execution.outputs if o.kind == "stream")


def _state_dir_of(uid: int) -> str:
    found = [n for n in os.listdir(STATE_BASE) if n.startswith(f"{uid}-")]
    assert len(found) == 1, found
    return os.path.join(STATE_BASE, found[0])


def _gpu_hosts() -> str:
    """What `%gpu hosts` prints (the magics use the process's workspace: the fixture's)."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "burstlab")
    with capture_output() as out:
        shell.run_line_magic("gpu", "hosts")
    return out.stdout


def _busy(kc, msg_id: str) -> bool:
    """Whether the kernel said it is busy with ``msg_id`` (reads what iopub holds now)."""
    import queue

    while True:
        try:
            m = kc.get_iopub_msg(timeout=0.1)
        except queue.Empty:
            return False
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "busy" \
                and m["parent_header"].get("msg_id") == msg_id:
            return True


def _attack(alice, targets: dict) -> dict:
    return json.loads(_out(alice.execute_sync(ATTACK.format(targets=json.dumps(targets)))).strip().splitlines()[-1])


def test_alice_cannot_reach_bobs_session_or_the_service(ws, work_root):
    ws.config.isolate_sessions = True
    a_name, b_name = _names()
    alice = ws.session("H100", user=a_name, reuse=False)
    bob = ws.session("H100", user=b_name, reuse=False)
    try:
        for s in (alice, bob):
            record = ws.session_record(s)
            assert record.isolated and "session jail" in record.isolation and "no device nodes" in record.isolation
        listed = {r.id: r for r in ws.list_sessions()}
        assert listed[alice.id].isolated and listed[bob.id].isolation == bob.lease.isolation
        hosts = _gpu_hosts()  # %gpu hosts says it too
        assert "Session kernels: isolated (session jail): c.BurstLab.isolate_sessions = True" in hosts
        assert f"on {alice.host}: session jail: uid " in hosts
        # bob's own file, in his persistent work dir; his kernel sees it at /home/user
        assert _out(bob.execute_sync("open('secret.txt', 'w').write('bob-secret'); import os\n"
                                     "print(os.getuid(), os.getcwd())")) == "1000 /home/user\n"
        shm = _out(bob.execute_sync("import os; v = os.statvfs('/dev/shm'); print(v.f_blocks * v.f_frsize >> 30)"))
        assert int(shm) >= 1  # GiB: room for data loaders' shared tensors
        bob_dir = os.path.join(work_root, b_name)
        assert open(os.path.join(bob_dir, "secret.txt")).read() == "bob-secret"
        bob_state = _state_dir_of(os.stat(bob_dir).st_uid)
        targets = {"bob_file": os.path.join(bob_dir, "secret.txt"),
                   "bob_connection": os.path.join(bob_state, "fs", "run", "kernel.json"),
                   "home": ws.config.home, "tls_key": str(tls_dir(ws.config.home) / KEY_FILE),
                   "ledger": os.path.join(ws.config.home, "ledger.sqlite"), "bob_pid": bob.lease.kernel_pid,
                   "really": True}
        for path in ("bob_file", "bob_connection", "tls_key"):
            assert os.path.exists(targets[path]), path  # each target is real on the host
        got = _attack(alice, targets)
        assert got["bob_file"] == got["bob_connection"] == got["tls_key"] == got["ledger"] == "FileNotFoundError"
        assert got["home"] == "FileNotFoundError"
        assert got["signal_bob"] == "ProcessLookupError"  # bob's kernel is not in alice's pid namespace
        assert got["service_env"] == []
        assert _out(bob.execute_sync("print(open('secret.txt').read())")) == "bob-secret\n"  # bob is unharmed
    finally:
        alice.stop()
        bob.stop()


def test_with_isolation_off_the_same_attacks_succeed(ws):
    """Documented as not protected (docs/kernels.md): a plain kernel runs as the GPU worker's user."""
    ws.config.isolate_sessions = False
    a_name, b_name = _names()
    alice = ws.session("H100", user=a_name, reuse=False)
    bob = ws.session("H100", user=b_name, reuse=False)
    try:
        record = ws.session_record(alice)
        assert not record.isolated
        assert record.isolation.startswith("not isolated: c.BurstLab.isolate_sessions = False")
        assert "Session kernels: NOT isolated: c.BurstLab.isolate_sessions = False" in _gpu_hosts()
        bob_file = _out(bob.execute_sync(
            f"import os, tempfile\np = os.path.join(tempfile.mkdtemp(), 'secret-{b_name}')\n"
            "open(p, 'w').write('bob-secret'); os.chmod(p, 0o600); print(p)")).strip()
        targets = {"bob_file": bob_file, "bob_connection": "/nonexistent", "home": ws.config.home,
                   "tls_key": str(tls_dir(ws.config.home) / KEY_FILE),
                   "ledger": os.path.join(ws.config.home, "ledger.sqlite"), "bob_pid": bob.lease.kernel_pid,
                   "really": False}
        got = _attack(alice, targets)
        assert got["bob_file"] == "ok: bob-secret"
        assert got["tls_key"].startswith("ok: -----BEGIN") and got["ledger"].startswith("ok: b'SQLite")
        assert got["signal_bob"] == "ok: None"  # it could signal bob's kernel (signal 0 here: bob lives on)
        os.unlink(bob_file)
        os.rmdir(os.path.dirname(bob_file))
    finally:
        alice.stop()
        bob.stop()


def test_kill_9_of_the_jailed_kernel_ends_the_session_and_leaves_nothing(ws, work_root):
    ws.config.isolate_sessions = True
    name, _ = _names()
    s = ws.session("H100", user=name, reuse=False)
    assert s.lease.isolated
    state = _state_dir_of(os.stat(os.path.join(work_root, name)).st_uid)
    with open(os.path.join(state, "owner.json")) as f:
        cgroups = json.load(f)["cgroups"]
    assert cgroups and all(os.path.isdir(c) for c in cgroups)
    outer = psutil.Process(s.lease.kernel_pid)  # the jail's outermost process -> its pid 1 -> the ipykernel
    (pid1,) = outer.children()
    (kernel,) = pid1.children()
    jail = [outer, pid1, kernel]
    assert kernel.uids().real >= 2_000_000  # the user's own uid, not root
    t0 = time.monotonic()
    os.kill(kernel.pid, signal.SIGKILL)
    wait_for(lambda: s.state != "running", 10, "the session to end")
    assert time.monotonic() - t0 < 5
    assert "died" in s.end_reason and "137" in s.end_reason, s.end_reason
    with pytest.raises(SessionLostError, match="ended"):
        s.execute_sync("1")
    ended = wait_for(lambda: [r for r in ws.list_sessions(ended=True) if r.id == s.id and r.ended], 10,
                     "the ended session's record")
    assert ended[0].isolated and ended[0].ended_by == "lost"

    def gone():
        with open("/proc/self/mountinfo") as f:
            mounted = state in f.read()
        return (not os.path.exists(state) and not mounted and not any(os.path.exists(c) for c in cgroups)
                and not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in jail))
    wait_for(gone, 10, "the jail's processes, mounts, cgroups and state dir to be removed")
    assert os.path.isdir(os.path.join(work_root, name))  # the user's own work dir stays


def test_a_notebook_kernel_on_a_gpu_runs_in_the_jail_through_input_interrupt_restart_and_shutdown(ws):
    """The kernel provisioner's kernels (issue 15) go the same way: jailed at start and at each restart."""
    from jupyter_client import KernelManager

    ws.config.isolate_sessions = True
    km = KernelManager(kernel_name="burstlab-h100")
    km.start_kernel(env={**os.environ, "JPY_SESSION_NAME": "jailed.ipynb"})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        session = ws.get_session(km.provisioner.session_id)
        assert session.lease.isolated and ws.session_record(session).isolated
        out = []
        reply = kc.execute_interactive(
            "import os\nx = input('name? ')\nprint(os.getuid(), os.getcwd(), x)", timeout=30, allow_stdin=True,
            stdin_hook=lambda msg: kc.input("bob"),
            output_hook=lambda m: out.append(m["content"]["text"]) if m["msg_type"] == "stream" else None)
        assert reply["content"]["status"] == "ok" and reply["content"]["execution_count"] == 1
        assert "".join(out).endswith("1000 /home/user bob\n")  # stdin crossed the forwarder too
        msg_id = kc.execute("import time; time.sleep(30)")
        wait_for(lambda: _busy(kc, msg_id), 10, "the cell to start")
        km.interrupt_kernel()  # message mode, over the control channel
        assert kc.get_shell_msg(timeout=10)["content"]["ename"] == "KeyboardInterrupt"
        first = session.lease.kernel_pid
        km.restart_kernel()
        kc.stop_channels()
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=60)
        assert km.provisioner.session_id == session.id and session.lease.kernel_pid != first
        reply = kc.execute_interactive("import os; print(os.getuid()); x", timeout=30)
        assert reply["content"]["ename"] == "NameError"  # a fresh kernel, in a fresh jail
        wait_for(lambda: not psutil.pid_exists(first), 10, "the first jail to be gone")
        last = session.lease.kernel_pid
    finally:
        kc.stop_channels()
        km.shutdown_kernel()
    assert session.state == "stopped"
    wait_for(lambda: not psutil.pid_exists(last), 10, "the jail to be gone")


def test_isolation_is_decided_and_shown():
    assert _jailed.decide(True, False)[:2] == (True, True)
    assert _jailed.decide(False, True)[:2] == (False, False)
    assert _jailed.decide("auto", True)[:2] == (True, False)
    on, required, why = _jailed.decide("auto", False)
    assert not on and "one user" in why and "isolate_sessions = True" in why
    assert _jailed.plan("auto", True, "alice", print) == {"user": "alice", "required": False, "start": print,
                                                          "options": {}}
    assert _jailed.plan("auto", False, "alice") is None


def test_a_host_that_is_not_root_refuses_or_falls_back(monkeypatch):
    """Stands in for a GPU worker not running as root (this machine's tests run as root)."""
    from burstlab.remote_kernel.lease import _kernel_source
    from burstlab.remote_kernel.pool import KernelPool

    class Worker:  # what _kernel_source reads of a dask Worker
        ip = host = "127.0.0.1"

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    args = (10, "H100", "0", True, "lease1")
    with pytest.raises(_jailed.IsolationUnavailable, match=r"needs root.*burstlab worker.*isolate_sessions = False"):
        _kernel_source(Worker(), {"user": "alice", "required": True, "start": start_served_kernel}, *args)
    pool, setup, why = _kernel_source(Worker(), {"user": "alice", "required": False, "start": start_served_kernel},
                                      *args)
    assert isinstance(pool, KernelPool) and "CUDA_VISIBLE_DEVICES='0'" in setup
    assert why.startswith("not isolated: fell back") and "uid 1000" in why


def test_the_workspace_record_and_the_labs_type(tmp_path):
    from test_api import _ts_interfaces

    import dataclasses

    w = burstlab.Workspace(home=str(tmp_path))
    try:
        assert w.session_isolation() == SessionIsolation(setting="auto", enabled=False,
                                                         reason=_jailed.decide("auto", False)[2])
        w.multi_user = True
        assert w.session_isolation().enabled and w.session_isolation().setting == "auto"
        w.config.isolate_sessions = False
        assert not w.session_isolation().enabled and w.session_isolation().setting == "off"
    finally:
        w.close()
    ts = _ts_interfaces()["ISessionIsolation"]
    assert set(ts) == {f.name for f in dataclasses.fields(SessionIsolation)}
    assert set(ts["setting"].replace("'", "").replace(" ", "").split("|")) == {"auto", "on", "off"}


@pytest.mark.gpu
def test_a_real_gpu_lease_sees_exactly_its_device_nodes(tmp_path):
    """On a host with NVML GPUs: the jail of a lease of GPU 0 has /dev/nvidia<its minor> and no other GPU's node."""
    import glob

    from burstlab.gpus import nvml_gpus

    pytest.importorskip("pynvml")
    gpus = nvml_gpus()
    if not gpus:
        pytest.skip("NVML finds no GPU here")
    g = gpus[0]
    kernel, detail = start_served_kernel(ip="127.0.0.1", user="gpu-test", gpu_type=g.type, indices=[g.index],
                                         declared=False, env={}, work_root=str(tmp_path))
    try:
        r = kernel.sandbox.run("import glob, os; print(sorted(glob.glob('/dev/nvidia*')), "
                               "os.environ['CUDA_VISIBLE_DEVICES'])")
        inside = r.outputs[0].text
        assert f"/dev/nvidia{g.minor}" in inside and g.uuid in inside and f"/dev/nvidia{g.minor}" in detail
        for other in set(glob.glob("/dev/nvidia[0-9]*")) - {f"/dev/nvidia{g.minor}"}:
            assert f"'{other}'" not in inside
    finally:
        kernel.kill()
