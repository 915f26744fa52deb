"""Sandbox templates (issue 18): built once and cached by content, packages from a wheel directory importable,
the set-up cell run once, sandboxes from the template's own pool."""

from __future__ import annotations

import time
import zipfile

import pytest

from burstlab.errors import SandboxError
from burstlab.sandbox import SandboxTemplate


def _wheel(dirpath, name="bltplpkg", version="1.0"):
    """A real, minimal pure-Python wheel."""
    dist = f"{name}-{version}.dist-info"
    path = dirpath / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/__init__.py", "VALUE = 'from the wheel'\n")
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    return path


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("BURSTLAB_HOME", str(tmp_path / "home"))
    return tmp_path


def test_template_built_once_packages_files_setup(home):
    wheels = home / "wheels"
    wheels.mkdir()
    _wheel(wheels)
    setup = "import bltplpkg, time\nmodel = {'v': bltplpkg.VALUE, 'built_at': time.time()}\nopen('setup-ran', 'a').write('x')"
    kw = dict(files={"cfg/settings.json": '{"k": 1}'}, packages=["bltplpkg"], wheels=str(wheels), setup=setup,
              timeout=120, memory="512MiB")
    t = SandboxTemplate(**kw)
    t.build()
    assert t.builds == 1 and t.built
    again = SandboxTemplate(**kw)
    t0 = time.monotonic()
    again.build()
    assert again.builds == 0 and again.id == t.id and time.monotonic() - t0 < 0.5  # cached: instant
    assert SandboxTemplate(**{**kw, "setup": setup + "\n"}).id != t.id  # the content is the key
    pool = t.pool(2)
    try:
        pool.start(wait=True)
        with t.sandbox(meter=None) as a, t.sandbox(meter=None) as b:
            assert a.run("model['v'], bltplpkg.VALUE").text == "('from the wheel', 'from the wheel')"
            assert a.run("import bltplpkg as again; again.VALUE").text == "'from the wheel'"
            assert a.files.read("cfg/settings.json") == b'{"k": 1}'
            assert a.files.read("setup-ran") == b"x" == b.files.read("setup-ran")  # the set-up cell ran once
            assert a.run("model['built_at']").text == b.run("model['built_at']").text
            assert a.uid != b.uid
    finally:
        t.close()


def test_a_missing_package_is_refused(home):
    with pytest.raises(SandboxError, match="not importable in the sandbox"):
        SandboxTemplate(packages=["no_such_package_xyz"], memory="256MiB").build()


def test_a_users_template_is_theirs_alone(home):
    from burstlab.errors import NotFoundError
    from burstlab.sandbox import list_templates

    t = SandboxTemplate(setup="x = 1", memory="256MiB", timeout=60, user="alice")
    assert SandboxTemplate(setup="x = 1", memory="256MiB", timeout=60, user="bob").id != t.id  # the user is hashed
    assert SandboxTemplate(setup="x = 1", memory="256MiB", timeout=60).id != t.id
    t.build()
    assert t.path.parent.name == "alice" and [r["id"] for r in list_templates("alice")] == [t.id]
    assert list_templates("bob") == []
    loaded = SandboxTemplate.load(t.id, "alice")
    assert loaded.to_dict() == t.to_dict() and loaded.built
    with loaded.sandbox(meter=None) as sb:
        assert sb.run("x + 1").text == "2" and sb.user == "alice"
    with pytest.raises(NotFoundError):
        SandboxTemplate.load(t.id, "bob")
    with pytest.raises(NotFoundError):
        SandboxTemplate.load("../../etc", "alice")
    with pytest.raises(SandboxError, match="not a package name"):
        SandboxTemplate(packages=["__import__('os')"], user="alice")  # checked before anything runs
    loaded.delete()
    assert list_templates("alice") == [] and not t.built
