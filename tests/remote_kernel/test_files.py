"""Files up to and down from a session's work directory: chunked, checked by hash, unchanged ones not resent."""

import os

import pytest

import burstlab
from burstlab.errors import TransferError
from burstlab.remote_kernel import files


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    w = burstlab.Workspace(home=str(tmp_path_factory.mktemp("home")), notebook="files.ipynb")
    s = w.session("H100")
    s.execute_sync(f"import os; os.chdir({str(tmp_path_factory.mktemp('host-work'))!r})")
    yield s
    w.close()


def test_a_big_file_up_and_down(session, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "CHUNK", 1 << 20)  # several chunks for a few MiB
    data = os.urandom(3 * (1 << 20) + 12345)
    (tmp_path / "weights.bin").write_bytes(data)
    seen = []
    done = files.upload(session, str(tmp_path / "weights.bin"), to="models/", progress=lambda d, t: seen.append((d, t)))
    assert (done.files, done.sent, done.bytes) == (1, 1, len(data))
    assert seen[-1] == (len(data), len(data)) and len(seen) == 4
    digest = session.execute_sync("import hashlib; hashlib.sha256(open('models/weights.bin','rb').read()).hexdigest()")
    assert digest.text.strip("'") == __import__("hashlib").sha256(data).hexdigest()
    again = files.upload(session, str(tmp_path / "weights.bin"), to="models/")
    assert (again.sent, again.bytes) == (0, 0) and str(again) == "0 files (0 B), 1 unchanged"
    back = files.download(session, "models/weights.bin", to=str(tmp_path / "copy.bin"))
    assert back.bytes == len(data) and (tmp_path / "copy.bin").read_bytes() == data


def test_folders_and_missing_paths(session, tmp_path):
    src = tmp_path / "proj"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("bb")
    (src / "empty.txt").write_text("")
    assert files.upload(session, str(src)).sent == 3
    session.execute_sync("open('proj/sub/b.txt', 'a').write('!')")
    back = files.download(session, "proj", to=str(tmp_path / "back"))
    assert (back.files, back.sent) == (3, 3)
    assert (tmp_path / "back" / "sub" / "b.txt").read_text() == "bb!"
    assert (tmp_path / "back" / "empty.txt").read_text() == ""
    assert files.download(session, "proj", to=str(tmp_path / "back")).sent == 0
    with pytest.raises(TransferError, match="does not exist in the H100"):
        files.download(session, "nope.csv", to=str(tmp_path / "nope.csv"))
    with pytest.raises(TransferError, match="does not exist here"):
        files.upload(session, str(tmp_path / "nope.csv"))
