"""Why a session ended, recorded by its holder: each way a session ends (its notebook's `%gpu stop`, the lab's
panel, another client, the idle release, a budget, a dead kernel, the notebook's kernel closing) is listed a few
minutes more (``list_sessions(ended=True)``, the REST API's ``GET sessions?ended=1``) with ``ended_by`` and
``why``, so the lab says what happened instead of guessing from what vanished between two polls."""

import os
import signal

import pytest
from waiting import wait_for

import burstlab
from burstlab.wire import SESSION_ENDED_BY, SessionRecord


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The Jupyter server's workspace: owns the embedded cluster."""
    w = burstlab.Workspace(home=str(tmp_path_factory.mktemp("home")), notebook="server", serve=True)
    w.client  # start the cluster
    yield w
    w.close()


@pytest.fixture
def notebook(server):
    """A notebook kernel's workspace, joined to the server's cluster and ledger."""
    w = burstlab.Workspace(scheduler=server.client.scheduler.address, home=server.config.home,
                           notebook="why.ipynb", user="carol")
    yield w
    w.close()


def _ended(server, id: str) -> SessionRecord:
    """The ended record of session ``id`` as the server lists it (waits for its holder to publish it)."""
    def find():
        return next((r for r in server.list_sessions(user="carol", ended=True) if r.id == id and r.ended_by), None)
    return wait_for(find, 20, f"session {id}'s ended record")


def test_each_way_a_session_ends_is_recorded_with_who_and_why(server, notebook):
    # Its own notebook: `%gpu stop` (Workspace.stop). Listed as ended only when asked for.
    s = notebook.session("H100")
    assert [r.ended_by for r in server.list_sessions(user="carol") if r.id == s.id] == [""]
    notebook.stop("all")
    r = _ended(server, s.id)
    assert (r.state, r.ended_by, r.why) == ("stopped", "user", "stopped by the user")
    assert r.ended is not None and r.idle_since is None and r.billed_s >= 1 and r.cost_microusd > 0
    assert s.id not in {x.id for x in server.list_sessions(user="carol")}  # not a running session any more
    assert server.stop_session(s.id) is False  # an ended record cannot be stopped again

    # The lab's panel, then another client (the REST API), through the server.
    for reason, by in (("stopped from the burstlab panel", "panel"), ("stopped through the REST API by bob", "client")):
        s = notebook.session("H100")
        assert server.stop_session(s.id, reason) is True
        r = _ended(server, s.id)
        assert (r.state, r.ended_by, r.why) == ("stopped", by, reason)
        assert notebook.ended["H100"] == reason  # the notebook's next cell says it, too

    # The idle release.
    s = notebook.session("H100")
    notebook.config.idle_timeout = 0.5
    notebook._wake.set()
    try:
        r = _ended(server, s.id)
    finally:
        notebook.config.idle_timeout = 0
    assert (r.state, r.ended_by, r.why) == ("stopped", "idle", "released after 0.5 s idle")

    # A budget: set below what this notebook has spent, it stops the session at once.
    s = notebook.session("H100")
    notebook.set_budget("notebook", "why.ipynb", 0.000001)
    try:
        r = _ended(server, s.id)
        assert (r.state, r.ended_by) == ("stopped", "budget") and r.why.startswith("Stopped at the limit")
    finally:
        notebook.remove_budget("notebook", "why.ipynb")

    # Its kernel dies (kill -9): lost.
    s = notebook.session("H100")
    os.kill(s.lease.kernel_pid, signal.SIGKILL)
    r = _ended(server, s.id)
    assert (r.state, r.ended_by) == ("lost", "lost") and "died" in r.why

    # The notebook's kernel shuts down (its workspace closes).
    s = notebook.session("H100")
    notebook.close()
    r = _ended(server, s.id)
    assert (r.state, r.ended_by, r.why) == ("stopped", "closed", "workspace closed")
    assert {x.ended_by for x in server.list_sessions(user="carol", ended=True)} <= set(SESSION_ENDED_BY)


def test_a_servers_own_session_records_its_end_too(server):
    s = server.session("A100", user="carol", notebook="agent-1", reuse=False)
    assert server.stop_session(s.id, "stopped through the REST API by carol")
    r = _ended(server, s.id)
    assert (r.origin, r.state, r.ended_by) == ("server", "stopped", "client")
    assert SessionRecord.from_json(r.to_json()) == r
