"""GPU workers from a Dask cluster manager (c.BurstLab.cluster + worker_templates), scaled from zero by
burstlab's adaptive policy; and the Slurm job script dask-jobqueue would submit for one. No root needed."""

from __future__ import annotations

import contextlib
import io
import time

import importlib.util
import signal

import pytest

import burstlab
from burstlab.examples.fleet import wait_for
from burstlab.remote_kernel.managers import catalogue, import_keeping_sigint, resources_of

SPEC_CLUSTER = {
    "module": "distributed", "class": "SpecCluster",
    "kwargs": {
        "scheduler": {"cls": "distributed.Scheduler", "options": {"host": "127.0.0.1", "dashboard_address": ":0"}},
        "worker": {"cls": "distributed.Nanny", "options": {"nthreads": 2, "host": "127.0.0.1",
                                                           "dashboard_address": ":0", "silence_logs": 40}},
        "silence_logs": 40,
    },
}


@pytest.mark.slow
def test_a_cluster_manager_scales_gpu_workers_from_zero_and_back(tmp_path):
    ws = burstlab.Workspace(cluster=SPEC_CLUSTER, worker_templates={"H100": {"max": 2}}, worker_idle_timeout=1.0,
                            home=str(tmp_path), notebook="managed.ipynb")
    try:
        assert [(e.type, e.host, e.free, e.source) for e in ws.hosts()] == [
            ("H100", "h100-0", 1, "managed"), ("H100", "h100-1", 1, "managed")]
        assert not ws.client.scheduler_info()["workers"]  # nothing runs until asked
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            session = ws.session("H100")
        assert "starting 1 H100 worker via SpecCluster" in err.getvalue()
        assert session.execute_sync("import os; os.environ['BURSTLAB_GPU_TYPE']").text == "'H100'"
        assert len(ws.client.scheduler_info()["workers"]) == 1  # exactly the one worker the session needs
        session.stop()
        started = time.monotonic()
        wait_for("the manager's workers back to zero", lambda: not ws.client.scheduler_info()["workers"], 30,
                 interval=0.2)
        assert time.monotonic() - started < 30
    finally:
        ws.close()


def test_slurm_job_script_asks_for_the_gpu_and_carries_the_resources():
    if importlib.util.find_spec("dask_jobqueue") is None:
        pytest.skip("dask-jobqueue is not installed (pip install -e '.[test]' installs it)")
    jobqueue = import_keeping_sigint("dask_jobqueue")  # it would take this process's Ctrl-C otherwise
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    cluster = jobqueue.SLURMCluster(cores=2, memory="4GB", processes=1,
                                    scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"})
    try:
        entries = catalogue(cluster.new_spec, {"H100": {"max": 2, "kwargs": {"walltime": "04:00:00"}},
                                               "A100": {"max": 1}})
        assert sorted(entries) == ["burstlab/a100-0/A100/0/managed", "burstlab/h100-0/H100/0/managed",
                                   "burstlab/h100-1/H100/0/managed"]
        spec = entries["burstlab/h100-1/H100/0/managed"]
        script = spec["cls"](scheduler=cluster.scheduler.address, **spec["options"]).job_script()
        assert "#SBATCH --gres=gpu:1" in script
        assert "#SBATCH -t 04:00:00" in script
        assert "--resources H100=1,slot:h100-1/0=1" in script
        assert "--name burstlab/h100-1/H100/0/managed" in script
        assert "export BURSTLAB_GPU_TYPE=H100" in script
        assert resources_of(spec) == {"H100": 1, "slot:h100-1/0": 1}
        a100 = entries["burstlab/a100-0/A100/0/managed"]
        assert "#SBATCH -t 04:00:00" not in a100["cls"](scheduler=cluster.scheduler.address,
                                                        **a100["options"]).job_script()
    finally:
        cluster.close()
