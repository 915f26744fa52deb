"""A jailed GPU session (``c.BurstLab.isolate_sessions``) on a test host across the link: the kernel runs as the
user's uid in the host's own work root, its traffic is CurveZMQ, and variables still travel both ways."""

from __future__ import annotations

import ast

import numpy as np

from burstlab.remote_kernel import _curve


def test_a_jailed_session_on_a_fleet_host(notebook, fleet, monkeypatch):
    monkeypatch.delenv("BURSTLAB_SESSION_WORK_ROOT", raising=False)  # the host's own work root, not the notebook's
    notebook.config.isolate_sessions = True
    try:
        session = notebook.session("H100", user="fleet-alice", reuse=False, environment="off")
        try:
            record = notebook.session_record(session)
            assert session.host == "gpuA" and record.isolated, record.isolation
            assert _curve.encrypted(session.lease.connection)  # the forwarder's ports face the link: encrypted
            got = ast.literal_eval(session.execute_sync(
                "import os; open('mine.txt', 'w').write('x'); (os.getuid(), os.getcwd())").text)
            assert got[0] != 0 and got[1] == "/home/user", got  # the jail's own uid, never root
            # The user's work dir is on the host's own work root (under its BURSTLAB_HOME), not this machine's.
            users = fleet.root / "gpuA" / "users"
            assert any((d / "mine.txt").exists() for d in users.iterdir()), list(users.iterdir())
            arr = np.arange(200_000, dtype=np.float64)
            session.push_sync({"arr": arr})
            assert session.execute_sync("float(arr.sum())").text == repr(float(arr.sum()))
            assert np.array_equal(session.pull_sync(["arr"])["arr"], arr)
        finally:
            session.stop()
    finally:
        notebook.config.isolate_sessions = "auto"
