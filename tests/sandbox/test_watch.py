"""sb.files.watch: inotify events from inside the jail (issue 18)."""

from __future__ import annotations

import pytest

from burstlab.errors import NotFoundError, SandboxError


def _events(w, until):
    got = []
    while until not in [(e["event"], e["path"]) for e in got]:
        e = w.get(10)
        assert e is not None, f"no {until} event; got {got}"
        got.append(e)
    return [(e["event"], e["path"], e["dir"]) for e in got]


def test_create_modify_delete_events(sb):
    before = set(sb._cgroup.pids())
    with sb.files.watch(".") as w:
        sb.exec(["mkdir", "-p", "w/deep"])
        got = _events(w, ("create", "w/deep"))  # reported once its watch is in place
        sb.exec("echo x > w/deep/a.txt && mv w/deep/a.txt w/b.txt && rm w/b.txt", shell=True)
        got += _events(w, ("delete", "w/b.txt"))
        for ev in (("create", "w", True), ("create", "w/deep/a.txt", False), ("modify", "w/deep/a.txt", False),
                   ("delete", "w/deep/a.txt", False),
                   ("create", "w/b.txt", False), ("delete", "w/b.txt", False)):
            assert ev in got, (ev, got)
        sb.run("open('w/c.txt', 'w').write('from the kernel')")
        sb.files.write("w/deep/d.txt", b"from the host API")
        got = _events(w, ("create", "w/deep/d.txt"))  # files.write renames a finished temp file into place
        assert ("modify", "w/c.txt", False) in got
    assert w.result.exit_code == 137 and not w.result.timed_out  # stopped by close, not by a limit
    assert set(sb._cgroup.pids()) <= before  # the watcher is gone


def test_watch_a_subdir_and_refusals(sb):
    sb.exec(["mkdir", "-p", "only"])
    with sb.files.watch("only") as w:
        sb.exec("echo 1 > outside.txt; echo 2 > only/inside.txt", shell=True)
        got = _events(w, ("modify", "only/inside.txt"))
        assert not [g for g in got if g[1] == "outside.txt"]
    with pytest.raises(SandboxError, match="outside the work dir"):
        sb.files.watch("../..")
    with pytest.raises(NotFoundError, match="not a directory"):
        sb.files.watch("no-such-dir")
