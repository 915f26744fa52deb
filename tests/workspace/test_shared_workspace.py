"""One workspace, many clients: a server's workspace sees (and can stop) the sessions and maps that
notebooks joined to its cluster hold, as the lab's panel and the REST API need."""

import threading
import time

import pytest

import burstlab
from burstlab.errors import FanoutError
from burstlab.wire import MapRecord, SessionRecord


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The Jupyter server's workspace: owns the embedded cluster."""
    home = str(tmp_path_factory.mktemp("home"))
    w = burstlab.Workspace(home=home, notebook="server", serve=True)
    w.client  # start the cluster
    yield w
    w.close()


@pytest.fixture
def notebook(server):
    """A notebook kernel's workspace, joined to the server's cluster and ledger."""
    w = burstlab.Workspace(scheduler=server.client.scheduler.address, home=server.config.home,
                           notebook="analysis.ipynb", user="alice")
    yield w
    w.close()


def _free(ws, gpu_type):
    return {e.type: e.free for e in ws.hosts()}[gpu_type]


def test_server_lists_a_notebooks_session_and_prices_it(server, notebook):
    session = notebook.session("A100")
    try:
        listed = {r.id: r for r in server.list_sessions()}
        assert session.id in listed
        row = listed[session.id]
        assert isinstance(row, SessionRecord)
        assert (row.gpu_type, row.count, row.user, row.notebook, row.origin, row.state) == \
               ("A100", 1, "alice", "analysis.ipynb", "kernel", "running")
        assert row.declared is True and row.billed_s >= 1 and row.cost_microusd > 0
        assert server.list_sessions(user="bob") == []
    finally:
        session.stop()
    assert session.id not in {r.id for r in server.list_sessions()}


def test_stop_from_the_server_ends_the_notebooks_session_and_frees_the_gpu(server, notebook):
    before = _free(server, "A100")
    session = notebook.session("A100")
    assert _free(server, "A100") == before - 1
    assert server.stop_session(session.id, "stopped from the JupyterLab panel") is True
    assert _free(server, "A100") == before  # free when stop_session returns
    deadline = time.monotonic() + 10
    while session.state == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert session.state == "stopped"
    assert notebook.ended["A100"] == "stopped from the JupyterLab panel"  # the next %%gpu cell says why
    record = notebook.ledger.get(session.interval_id)
    assert record.stop_ns is not None  # the interval is closed, billed to the notebook
    assert server.stop_session(session.id) is False  # already gone
    assert server.stop_session("nosuchid") is False
    again = notebook.session("A100")  # the notebook's next cell starts a new session
    assert again.id != session.id and again.execute_sync("6 * 7").text == "42"
    again.stop()


def test_server_stops_its_own_session_too(server):
    session = server.session("H100", user="agent", notebook="agent-1", reuse=False)
    other = server.session("H100", user="agent", notebook="agent-1", reuse=False)
    assert other.id != session.id  # reuse=False: the REST API's POST makes a new one each time
    assert {r.origin for r in server.list_sessions(user="agent")} == {"server"}
    assert server.stop_session(session.id) and server.stop_session(other.id)
    assert session.state == other.state == "stopped"
    assert server.list_sessions(user="agent") == []


def _slow(x):
    import time

    time.sleep(0.2)
    return x


def test_server_lists_a_notebooks_map_and_cancels_it(server, notebook):
    outcome = {}

    def run():
        try:
            outcome["value"] = burstlab.map(_slow, range(200), gpu=None, workspace=notebook, progress=False)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        maps = []
        while time.monotonic() < deadline:
            maps = [m for m in server.list_maps(user="alice") if m.state == "running"]
            if maps and maps[0].done > 0:
                break
            time.sleep(0.1)
        assert maps, f"the map never showed up in the server's listing: {server.list_maps()} {outcome}"
        m = maps[0]
        assert isinstance(m, MapRecord)
        assert (m.name, m.notebook, m.gpu, m.total) == ("_slow", "analysis.ipynb", "CPU", 200)
        assert server.cancel_map(m.id, "cancelled from the JupyterLab panel") is True
        thread.join(15)
        assert not thread.is_alive()
        assert isinstance(outcome.get("error"), FanoutError)
        assert "cancelled from the JupyterLab panel" in str(outcome["error"])
        ended = {x.id: x for x in server.list_maps()}[m.id]
        assert ended.state == "cancelled" and ended.done < 200
    finally:
        thread.join(30)
