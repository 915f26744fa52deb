"""Snapshots, restores and forks (issue 18): CRIU's refusal, namespace snapshots, ownership, size limits."""

from __future__ import annotations

import os
import stat

import pytest

from burstlab.errors import NotFoundError, SandboxError, SandboxLimitError
from burstlab.sandbox import Sandbox, delete_snapshot, list_snapshots


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BURSTLAB_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture(scope="module")
def src():
    with Sandbox(timeout=20, memory="384MiB", meter=None, user="alice") as s:
        s.run("import numpy as np\nf = lambda x: x * 3\nbig = np.arange(10 * 2**20 // 8, dtype='float64')\n"
              "gen = (i for i in range(3))\nshared = [1]\npair = (shared, shared)")
        s.files.write("sub/data.txt", b"work dir file")
        s.exec(["ln", "-s", "sub/data.txt", "link"])
        yield s


def test_whole_snapshot_says_why_not_and_names_the_weaker_one(src, home):
    with pytest.raises(SandboxError) as exc:
        src.snapshot()
    msg = str(exc.value)
    assert 'mode="namespace"' in msg
    assert "criu" in msg.lower()
    assert not list_snapshots("alice")


def test_namespace_snapshot_restore(src, home):
    snap = src.snapshot(mode="namespace")
    assert snap.user == "alice" and set(snap.captured) >= {"f", "big", "np", "shared", "pair"}
    assert "gen" in snap.not_captured and "generator" in snap.not_captured["gen"]
    assert snap.size_bytes > 10 * 2**20 and snap.limits["memory"] == 384 * 2**20
    d = home / "snapshots" / "alice"
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700 and stat.S_IMODE(os.stat(snap.path).st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in snap.path.iterdir())
    assert [s.id for s in list_snapshots("alice")] == [snap.id]
    with Sandbox.restore(snap, meter=None) as r:
        assert r.uid != src.uid and r.limits.memory == src.limits.memory
        assert r.run("f(2), float(big.sum()) == float(np.arange(10 * 2**20 // 8).sum()), pair[0] is pair[1]").text \
            == "(6, True, True)"
        assert "NameError" == r.run("gen").error.ename
        assert r.files.read("sub/data.txt") == b"work dir file"
        assert r.exec(["readlink", "link"]).stdout == "sub/data.txt\n"
        assert r.exec(["ls", "-A"]).stdout.split() == ["link", "sub"]  # the pickle is gone
        assert r.exec(["cat", "/etc/shadow"]).exit_code != 0  # as isolated as a new sandbox
    delete_snapshot(snap.id, user="alice")
    assert list_snapshots("alice") == [] and not snap.path.exists()


def test_another_users_snapshot_is_refused(src, home):
    snap = src.snapshot(mode="namespace")
    with pytest.raises(NotFoundError, match="No snapshot"):
        Sandbox.restore(snap.id, user="bob", meter=None)
    with pytest.raises(NotFoundError):
        delete_snapshot(snap.id, user="bob")
    for bad in ("../alice/" + snap.id, "snap-../../x"):
        with pytest.raises(NotFoundError, match="not a snapshot id"):
            Sandbox.restore(bad, user="alice", meter=None)
    with pytest.raises(SandboxError, match="cannot own snapshots"):
        list_snapshots("../alice")
    assert list_snapshots("bob") == [] and snap.path.exists()


def test_forks_diverge_independently(src, home):
    forks = src.fork(2)
    try:
        assert len({s.uid for s in forks} | {src.uid}) == 3
        forks[0].run("shared.append('a')")
        forks[0].files.write("sub/data.txt", b"changed")
        assert forks[1].run("shared").text == "[1]" and src.run("shared").text == "[1]"
        assert forks[1].files.read("sub/data.txt") == b"work dir file"
        assert forks[0].run("shared, f(1)").text == "([1, 'a'], 3)"
    finally:
        for s in forks:
            s.close()
    assert list_snapshots("alice") == []  # the fork's snapshot is not kept


def test_size_limit(src, home, monkeypatch):
    monkeypatch.setenv("BURSTLAB_SNAPSHOT_MAX", "1MiB")
    with pytest.raises(SandboxLimitError, match="BURSTLAB_SNAPSHOT_MAX"):
        src.snapshot(mode="namespace")
    assert list_snapshots("alice") == [] and not any((home / "snapshots" / "alice").iterdir())


def test_restore_and_fork_from_a_pool(src, home):
    from burstlab.sandbox import SandboxPool

    snap = src.snapshot(mode="namespace")
    with SandboxPool(size=2) as pool:
        pool.start(wait=True)
        with Sandbox.restore(snap, pool=pool, meter=None) as r:
            assert r.limits.memory == 384 * 2**20 and r.run("f(5)").text == "15"
            assert r.files.read("sub/data.txt") == b"work dir file"
            assert os.stat(os.path.join(r.state_dir, "fs", "home", "sub", "data.txt")).st_uid == r.uid
        forks = src.fork(2, pool=pool)
        try:
            assert [f.run("f(1)").text for f in forks] == ["3", "3"]
        finally:
            for f in forks:
                f.close()
