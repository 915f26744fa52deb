"""The notebook's environment follows it: look, compare, ship only what differs, once.

The "notebook side" is this process with a small package that the test builds and installs (only here) into a
folder on ``sys.path``; the "host side" is a fresh Python process that has none of it, with its own
``BURSTLAB_HOME``, exactly what a GPU host's kernel runs.
"""

import json
import os
import subprocess
import sys

import pytest

from burstlab.remote_kernel import envsync


@pytest.fixture
def imported(notebook_side, monkeypatch):
    monkeypatch.syspath_prepend(str(notebook_side))
    import blx_demo  # noqa: F401

    yield
    sys.modules.pop("blx_demo", None)


def _host(code, home, extra_path=()):
    """Run ``code`` in a fresh interpreter (the host's kernel) and return what it printed as JSON."""
    env = {**os.environ, "BURSTLAB_HOME": str(home), "PYTHONPATH": os.pathsep.join(map(str, extra_path))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_look_compare_report(imported):
    here = envsync.imported_distributions()
    assert here["blx-demo"] == envsync.Dist("blx-demo", "1.2", pure=True, local=False, modules=("blx_demo",))
    assert "dask" not in here and "burstlab" not in here  # the platform is the host's own business
    there = {name: d.version for name, d in here.items()} | {"blx-demo": None}  # the host has all else
    mismatches = envsync.compare(here, there)
    assert mismatches == [envsync.Mismatch("blx-demo", "1.2", None, pure=True)]
    assert envsync.report(mismatches, host="gpuA") == (
        "package   here  on gpuA   \n"
        "blx-demo  1.2   missing  shipped").replace("   \n", "\n")


def test_compiled_mismatch_is_refused_with_the_fix():
    here = {"fastmath": envsync.Dist("fastmath", "2.0", pure=False, local=False)}
    mismatches = envsync.compare(here, {"fastmath": "1.9"})
    assert not mismatches[0].shippable
    text = envsync.report(mismatches, host="gpuB")
    assert text.splitlines()[:2] == ["package   here  on gpuB", "fastmath  2.0   1.9      not shipped: compiled"]
    assert text.splitlines()[-1] == ("Compiled packages are not shipped: install them on gpuB "
                                     "(`pip install fastmath==2.0`), or use a host image that has them.")
    with pytest.raises(ValueError, match="compiled"):
        envsync.build_wheel(here["fastmath"])


def test_ship_once_then_nothing(imported, tmp_path):
    here = envsync.imported_distributions()
    home = tmp_path / "host-home"
    # the host lacks it
    versions = _host("import json; from burstlab.remote_kernel.envsync import host_versions; "
                     "print(json.dumps(host_versions(['blx-demo'])))", home)
    assert versions == {"blx-demo": None}
    wheel = envsync.build_wheel(here["blx-demo"])
    assert wheel.filename == "blx_demo-1.2-py3-none-any.whl"
    assert envsync.build_wheel(here["blx-demo"]).sha256 == wheel.sha256  # same content, same bytes
    env_hash = envsync.environment_hash(here, [wheel])
    need = _host(f"import json; from burstlab.remote_kernel.envsync import missing; "
                 f"print(json.dumps(missing([{wheel.sha256!r}])))", home)
    assert need == [wheel.sha256]
    overlay = envsync.install({wheel.sha256: wheel.data}, [wheel.sha256], env_hash, home=str(home))
    # the host's kernel, with the overlay first on its path, imports it and sees the version
    seen = _host("import json, importlib.metadata as m, blx_demo; "
                 "print(json.dumps([blx_demo.VALUE, m.version('blx-demo')]))", home, [overlay])
    assert seen == ["one point two", "1.2"]
    after = _host(f"import json; from burstlab.remote_kernel.envsync import host_versions; "
                  f"print(json.dumps(host_versions(['blx-demo'], overlay={overlay!r})))", home)
    assert after == {"blx-demo": "1.2"}
    # a second start with the same environment ships nothing
    assert envsync.missing([wheel.sha256], home=str(home)) == []
    assert envsync.install({}, [wheel.sha256], env_hash, home=str(home)) == overlay


def test_local_modules_beside_the_notebook_are_shipped(tmp_path, monkeypatch):
    nb_dir = tmp_path / "project"
    nb_dir.mkdir()
    (nb_dir / "helpers_blx.py").write_text("def double(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(nb_dir))
    import helpers_blx  # noqa: F401

    try:
        found = envsync.local_modules(nb_dir)
        assert found == {"helpers_blx": nb_dir / "helpers_blx.py"}
        wheel = envsync.build_local_wheel(found)
        home = tmp_path / "host-home"
        overlay = envsync.install({wheel.sha256: wheel.data}, [wheel.sha256], "local1", home=str(home))
        assert _host("import json, helpers_blx; print(json.dumps(helpers_blx.double(21)))", home, [overlay]) == 42
    finally:
        sys.modules.pop("helpers_blx", None)


def test_a_damaged_or_escaping_wheel_is_refused(tmp_path):
    wheel = envsync._pack("evil", "1", [("../outside.py", b"x = 1\n")])
    with pytest.raises(ValueError, match="damaged"):
        envsync.install({wheel.sha256: wheel.data[:-1]}, [wheel.sha256], "e1", home=str(tmp_path))
    with pytest.raises(ValueError, match="outside the overlay"):
        envsync.install({wheel.sha256: wheel.data}, [wheel.sha256], "e2", home=str(tmp_path))
    assert not (tmp_path / "envs" / "outside.py").exists()


def test_the_notebooks_own_folder_is_never_a_package_beside_it(tmp_path, monkeypatch):
    import zipfile

    from burstlab.errors import ConfigError

    (tmp_path / "__init__.py").write_text("")  # the notebook's folder is itself a package (a repository's root)
    (tmp_path / ".venv").mkdir()
    (tmp_path / "bside_pkg_q").mkdir()
    (tmp_path / "bside_pkg_q" / "__init__.py").write_text("X = 1\n")
    (tmp_path / "bside_pkg_q" / ".cache").mkdir()
    (tmp_path / "bside_pkg_q" / ".cache" / "big.bin").write_bytes(b"0" * 1000)
    monkeypatch.syspath_prepend(str(tmp_path.parent))
    monkeypatch.syspath_prepend(str(tmp_path))
    root = __import__(tmp_path.name)
    import bside_pkg_q  # noqa: F401

    try:
        found = envsync.local_modules(tmp_path)
        assert found == {"bside_pkg_q": tmp_path / "bside_pkg_q"} and root.__name__ not in found
        wheel = envsync.build_local_wheel(found)
        import io

        names = zipfile.ZipFile(io.BytesIO(wheel.data)).namelist()
        assert "bside_pkg_q/__init__.py" in names and not any(".cache" in n for n in names)
        monkeypatch.setattr(envsync, "MAX_LOCAL", 3)
        with pytest.raises(ConfigError, match="more than 0 MiB is not shipped as code"):
            envsync.build_local_wheel(found)
    finally:
        sys.modules.pop("bside_pkg_q", None)
        sys.modules.pop(tmp_path.name, None)
