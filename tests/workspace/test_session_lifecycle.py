"""Sessions outlive nothing: a notebook process that dies releases its GPUs; real GPUs where NVML has them."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

import burstlab


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    w = burstlab.Workspace(home=str(tmp_path_factory.mktemp("home")), notebook="lifecycle.ipynb")
    yield w
    w.close()


def _free(ws, gpu_type):
    return {e.type: e.free for e in ws.hosts()}[gpu_type]


def test_dead_notebook_releases_its_gpu(ws, tmp_path):
    """kill -9 of a notebook process that holds a session: its lease ends and the GPU is free again."""
    before = _free(ws, "A100")
    code = textwrap.dedent(f"""
        import os, sys
        if __name__ == "__main__":
            import burstlab
            w = burstlab.Workspace(scheduler={ws.client.scheduler.address!r}, home={str(tmp_path)!r})
            s = w.session("A100")
            print("held", flush=True)
            sys.stdin.read()
    """)
    from burstlab.remote_kernel._tls import dask_env, tls_dir

    env = {**os.environ, **dask_env(tls_dir(ws.config.home))}  # the cluster's certificates, the Dask way
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert _free(ws, "A100") == before - 1
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 30
        while _free(ws, "A100") != before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _free(ws, "A100") == before
        # and the GPU is usable by someone else
        session = ws.session("A100")
        assert session.execute_sync("21 * 2").text == "42"
        session.stop()
    finally:
        proc.kill()
        proc.wait(10)


def test_workspace_close_releases_sessions_and_closes_intervals(tmp_path):
    w = burstlab.Workspace(home=str(tmp_path), notebook="close.ipynb")
    session = w.session("H100")
    assert session.execute_sync("1").text == "1"
    interval = session.interval_id
    w.close()
    assert session.state == "stopped"
    ledger = burstlab.billing.open_ledger("", tmp_path)
    record = ledger.get(interval)
    assert record.stop_ns is not None and not record.recovered


@pytest.mark.gpu
def test_torch_cell_on_a_real_gpu(tmp_path):
    """Where NVML finds a GPU: a %%gpu session sees exactly its GPU through CUDA."""
    pytest.importorskip("pynvml")
    torch = pytest.importorskip("torch")
    from burstlab.gpus import nvml_gpus

    gpus = nvml_gpus()
    if not gpus or not torch.cuda.is_available():
        pytest.skip("needs an NVIDIA GPU visible to NVML and a CUDA build of torch (none on this machine)")
    w = burstlab.Workspace(home=str(tmp_path), notebook="gpu.ipynb")
    try:
        entries = w.hosts()
        assert entries and all(e.source == "nvml" for e in entries)
        session = w.session(gpus[0].type)
        ex = session.execute_sync(
            "import torch\nx = torch.ones(1024, 1024, device='cuda')\n"
            "(torch.cuda.device_count(), float((x @ x)[0, 0]))"
        )
        assert ex.error is None, ex.error
        assert ex.text == "(1, 1024.0)"
    finally:
        w.close()
