"""A map's env=, secrets= and sync= on a real embedded cluster: the values reach only that map's tasks, never the
task graph, and come back redacted; sync ships a module beside the notebook that the workers lack."""

import os
import threading

import pytest

from burstlab import fanout
from burstlab.errors import ConfigError
from burstlab.fanout import _env
from burstlab.fanout._engine import MapRun
from burstlab.remote_kernel import secrets

SECRET = "sk-map-secret-5f3a9"


def peek(_=None):
    return os.environ.get("MAP_MODE"), os.environ.get("MAP_KEY")


def test_env_and_secrets_reach_the_tasks_and_nothing_else(fws, monkeypatch):
    monkeypatch.setenv("MAP_KEY", SECRET)

    def look(x):
        from distributed import get_worker

        import cloudpickle
        specs = b"".join(cloudpickle.dumps(ts.run_spec) for ts in get_worker().state.tasks.values())
        return peek() + (os.environ["MAP_KEY"].encode() in specs, len(specs))

    out = fanout.map(look, range(3), env={"MAP_MODE": "offline"}, secrets=["MAP_KEY"], workspace=fws, progress=False)
    assert [o[:2] for o in out] == [("offline", "[redacted]")] * 3  # the value was there, and came back redacted
    assert not any(o[2] for o in out) and all(o[3] > 100 for o in out)  # never in a task's arguments as the worker got them from the scheduler
    assert fanout.map(peek, range(3), workspace=fws, progress=False) == [(None, None)] * 3  # gone afterwards
    assert all(not v for v in fws.client.run(lambda: dict(_env._installed)).values())  # forgotten at the end
    assert SECRET not in repr([r for r in fws.usage(kind="map")])


def test_errors_and_results_never_carry_a_secret(fws, monkeypatch):
    monkeypatch.setenv("MAP_KEY", SECRET)

    def leak(kind):
        value = os.environ["MAP_KEY"]
        if kind == "raise":
            raise KeyError(f"bad key {value}")
        if kind == "object":
            return {1: [value]}, Box(value)
        return f"key={value}"

    out = fanout.map(leak, ["raise", "text", "object"], secrets=["MAP_KEY"], workspace=fws, progress=False,
                     return_exceptions=True)
    assert SECRET not in str(out[0]) and SECRET not in out[0].remote_traceback and "[redacted]" in str(out[0])
    assert out[1] == "key=[redacted]"
    assert isinstance(out[2], ValueError) and "holds the value of the secret MAP_KEY" in str(out[2])
    with pytest.raises(KeyError) as info:
        fanout.map(leak, ["raise"], secrets=["MAP_KEY"], workspace=fws, progress=False)
    assert SECRET not in str(info.value) and SECRET not in "".join(info.value._render_traceback_())


class Box:
    def __init__(self, value):
        self.value = value


def test_two_maps_at_once_never_see_each_others_values(fws):
    def slow(_):
        import time

        time.sleep(0.02)
        return peek()

    results = {}

    def run(name, env):
        results[name] = fanout.map(slow, range(30), env=env, workspace=fws, progress=False)

    threads = [threading.Thread(target=run, args=("a", {"MAP_MODE": "a"})),
               threading.Thread(target=run, args=("b", {"MAP_KEY": "b-value"})),
               threading.Thread(target=run, args=("plain", None))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results["a"] == [("a", None)] * 30
    assert results["b"] == [(None, "b-value")] * 30
    assert results["plain"] == [(None, None)] * 30


def test_sync_ships_a_module_beside_the_notebook(fws, tmp_path, monkeypatch):
    (tmp_path / "beside_nb_7c1.py").write_text("def triple(x):\n    return 3 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)  # the notebook's folder
    import beside_nb_7c1

    with pytest.raises(ModuleNotFoundError, match="beside_nb_7c1"):
        fanout.map(beside_nb_7c1.triple, range(3), workspace=fws, progress=False)
    run = MapRun(fws, beside_nb_7c1.triple, range(4), sync=True, progress=False)
    assert sorted(v for _, vs in run for v in vs) == [0, 3, 6, 9]
    again = MapRun(fws, beside_nb_7c1.triple, range(4), sync=True, progress=False)
    assert sorted(v for _, vs in again for v in vs) == [0, 3, 6, 9]
    assert run.env.shipped_bytes > 0 and again.env.shipped_bytes == 0  # the host's cache has the wheel
    assert fanout.map(peek, range(2), workspace=fws, progress=False) == [(None, None)] * 2


@pytest.mark.parametrize("kwargs, needle", [
    ({"env": {"CUDA_VISIBLE_DEVICES": "1"}}, "set by burstlab itself"),
    ({"env": {"A": "x\0y"}}, "NUL"),
    ({"secrets": ["NOT_SET_ANYWHERE_91"]}, "is not set"),
    ({"secrets": "MAP_KEY"}, "a list of names"),
])
def test_bad_env_is_refused_before_anything_starts(fws, kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        fanout.map(peek, range(2), workspace=fws, progress=False, **kwargs)


def test_the_gate_sets_and_restores_and_kernels_never_inherit(monkeypatch):
    monkeypatch.setenv("GATE_T", "before")
    gate = _env.Gate()
    a = _env._Installed({"GATE_T": "a", "GATE_NEW": "n"}, secrets.Redactor())
    assert gate.enter("a", a) and gate.enter("a", a)  # one map's chunks side by side
    assert (os.environ["GATE_T"], os.environ["GATE_NEW"]) == ("a", "n")
    base = secrets.base_environ()
    assert base["GATE_T"] == "before" and "GATE_NEW" not in base  # what a kernel started now inherits
    assert not gate.enter("b", None, wait_s=0.05)  # another map waits, then hands its chunk back
    gate.leave()
    gate.leave()
    assert os.environ["GATE_T"] == "before" and "GATE_NEW" not in os.environ and not secrets.applied
    assert gate.enter("b", None, wait_s=0.05)
    gate.leave()


def test_many_chunks_landing_on_fresh_gpu_workers_get_the_environment_once(fws):
    def slow(_):
        import time

        time.sleep(0.01)
        return peek()

    run = MapRun(fws, slow, range(60), gpu="H100", env={"MAP_MODE": "gpu"}, progress=False)
    assert sorted(v for _, vs in run for v in vs) == [("gpu", None)] * 60
    assert run.env.tries and all(n == 1 for n in run.env.tries.values())  # installed once per worker


def test_sync_follows_the_configured_environment(fws, monkeypatch):
    monkeypatch.setattr(fws.config, "environment", "sync")
    run = MapRun(fws, peek, range(2), progress=False)
    assert run.env is not None and run.env.sync
    assert sorted(v for _, vs in run for v in vs) == [(None, None)] * 2
    assert MapRun(fws, peek, range(1), sync=False, progress=False).env is None


def test_a_cls_with_env_sees_it_in_enter_and_in_its_methods(fws):
    @fanout.cls(workspace=fws, env={"MAP_MODE": "cls"})
    class Model:
        @fanout.enter
        def load(self):
            self.at_enter = os.environ.get("MAP_MODE")

        def predict(self, x):
            return x, self.at_enter, os.environ.get("MAP_MODE")

    assert Model().predict.map(range(3), progress=False) == [(x, "cls", "cls") for x in range(3)]
