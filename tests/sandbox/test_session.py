"""A GPU session's kernel in the sandbox's jail: per-user uid and persistent work dir, exactly the given
device nodes and environment, nothing of the service's (issue 12, item 1)."""

from __future__ import annotations

import os
import stat
import uuid

import pytest

from burstlab.errors import SandboxError
from burstlab.sandbox._session import USER_UID_BASE, SessionKernel, check_devices, start_session_kernel


@pytest.fixture
def work_root(tmp_path):
    root = tmp_path / "users"
    yield str(root)


@pytest.fixture
def fake_gpu():
    """A character device node standing in for a leased GPU's /dev/nvidia<N> (it is /dev/zero's 1:5)."""
    path = f"/dev/blt-test-gpu-{uuid.uuid4().hex[:6]}"
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 5))
    yield path
    os.unlink(path)


def test_session_kernel_runs_as_its_user_with_a_persistent_work_dir(work_root, monkeypatch):
    monkeypatch.setenv("BURSTLAB_TOKEN", "service-secret")  # the service's credentials never reach the kernel
    user = f"alice{uuid.uuid4().hex[:4]}"
    k = start_session_kernel(user=user, devices=[], env={"CUDA_VISIBLE_DEVICES": "GPU-0000"}, work_root=work_root,
                             timeout=20)
    try:
        r = k.run("import os\nopen('notes.txt', 'w').write('kept')\n"
                  "print(os.getuid(), os.getcwd(), sorted(os.listdir('/dev')), os.environ.get('CUDA_VISIBLE_DEVICES'),"
                  " 'BURSTLAB_TOKEN' in os.environ)")
        assert r.error is None, r.error
        text = r.outputs[0].text
        assert text.startswith("1000 /home/user ") and "GPU-0000 False" in text
        assert "nvidia" not in text and "mem" not in text.replace("shm", "")
        first_uid, state1 = k.uid, k.state_dir
        assert USER_UID_BASE <= first_uid < USER_UID_BASE + 1_000_000
    finally:
        k.close()
    assert not os.path.exists(state1)
    with open(os.path.join(work_root, user, "notes.txt")) as f:
        assert f.read() == "kept"  # closing removed the jail, not the files
    assert os.stat(os.path.join(work_root, user, "notes.txt")).st_uid == first_uid
    with start_session_kernel(user=user, work_root=work_root, timeout=20) as k2:  # the next session: same uid, same files
        assert k2.uid == first_uid
        assert k2.run("print(open('notes.txt').read())").outputs[0].text == "kept\n"
        assert k2.files.read("notes.txt") == b"kept"


def test_two_users_and_two_sessions_of_one_user(work_root):
    a, b = f"a{uuid.uuid4().hex[:4]}", f"b{uuid.uuid4().hex[:4]}"
    with SessionKernel(user=a, work_root=work_root) as ka, SessionKernel(user=a, work_root=work_root) as ka2, \
            SessionKernel(user=b, work_root=work_root) as kb:
        assert ka.uid == ka2.uid != kb.uid and ka.state_dir != ka2.state_dir
        ka.files.write("mine.txt", b"a's")
        assert ka2.files.read("mine.txt") == b"a's"  # one user's sessions share that user's dir
        r = kb.run("import os; print(os.listdir('/home/user'), os.path.exists('/home/user/mine.txt'))")
        assert r.outputs[0].text == "[] False\n"  # another user's do not


def test_exactly_the_given_device_nodes_are_visible(work_root, fake_gpu):
    with start_session_kernel(user=f"g{uuid.uuid4().hex[:4]}", devices=[fake_gpu], work_root=work_root) as k:
        r = k.run(f"import os\nprint(sorted(os.listdir('/dev')))\nprint(open({fake_gpu!r}, 'rb').read(4))")
        assert r.error is None, r.error
        listing, data = r.outputs[0].text.splitlines()
        assert os.path.basename(fake_gpu) in listing and data == "b'\\x00\\x00\\x00\\x00'"
        assert "tty" not in listing and "'mem'" not in listing and "nvidia" not in listing


@pytest.mark.parametrize("bad,match", [
    (["/dev/mem"], "character device under /dev"), (["/etc/passwd"], "under /dev"),
    (["/dev/nvidia0-declared-only"], "does not exist"), ("/dev/null", "list"), (["/dev/shm"], "not a character"),
])
def test_bad_device_lists_are_refused(bad, match):
    with pytest.raises(SandboxError, match=match):
        check_devices(bad)


def test_a_symlinked_device_is_refused(tmp_path):
    link = f"/dev/blt-test-link-{uuid.uuid4().hex[:6]}"
    os.symlink("/dev/zero", link)
    try:
        with pytest.raises(SandboxError, match="not a character device"):
            check_devices([link])
    finally:
        os.unlink(link)


@pytest.mark.parametrize("user", ["", "../x", "a/b", ".", "x" * 65, None])
def test_bad_user_names_are_refused(user, work_root):
    with pytest.raises(SandboxError, match="user="):
        SessionKernel(user=user, work_root=work_root)


def test_gpu_argument_is_refused(work_root):
    with pytest.raises(SandboxError, match="devices="):
        SessionKernel(user="u", gpu="H100", work_root=work_root)


def test_any_user_name_has_a_stable_work_dir_name():
    from burstlab.sandbox._session import work_name

    assert work_name("alice@example.org") == "alice@example.org"
    odd = work_name("Ålice / ../bob")
    assert odd == work_name("Ålice / ../bob") != work_name("alice") and odd.startswith("u-") and "/" not in odd
    assert work_name("..") != ".." and work_name("").startswith("u-")
