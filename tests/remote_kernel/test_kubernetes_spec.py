"""The DaskCluster / DaskWorkerGroup resources burstlab would hand dask-kubernetes' operator, built without a
Kubernetes cluster: the GPU limit, the `burstlab worker` command, TLS from a secret."""

from __future__ import annotations

import importlib.util

import pytest

from burstlab.remote_kernel.managers import TLS_DIR, kubernetes_spec

if importlib.util.find_spec("dask_kubernetes") is None:
    pytest.skip("dask-kubernetes is not installed (pip install -e '.[test]' installs it)", allow_module_level=True)


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"]}


def test_worker_groups_ask_for_the_gpu_and_run_burstlab_worker_over_tls():
    spec = kubernetes_spec("team-gpus", {"H100": {"gpus": 2, "node_selector": {"nvidia.com/gpu.product": "H100"}},
                                         "A100": {}},
                           image="registry.example/burstlab:1", tls_secret="burstlab-tls", namespace="ml")
    cluster, groups = spec["cluster"], spec["worker_groups"]
    assert (cluster["apiVersion"], cluster["kind"], cluster["metadata"]["name"]) == \
        ("kubernetes.dask.org/v1", "DaskCluster", "team-gpus")
    assert sorted(groups) == ["A100", "H100"]
    h100 = groups["H100"]
    assert h100["kind"] == "DaskWorkerGroup" and h100["spec"]["cluster"] == "team-gpus"
    assert h100["metadata"] == {"name": "team-gpus-h100", "namespace": "ml"}
    worker = h100["spec"]["worker"]
    assert worker["replicas"] == 0  # burstlab's policy scales from zero
    pod = worker["spec"]
    container = pod["containers"][0]
    assert container["image"] == "registry.example/burstlab:1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert container["args"][:3] == ["burstlab", "worker", "$(DASK_SCHEDULER_ADDRESS)"]
    assert "--dashboard" not in container["args"] and "--name" not in container["args"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    env = _env(container)
    assert env["DASK_SCHEDULER_ADDRESS"] == "tls://team-gpus-scheduler.ml.svc.cluster.local:8786"
    assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "true"
    assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == f"{TLS_DIR}/ca.pem"
    assert env["DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY"] == f"{TLS_DIR}/node-key.pem"
    assert {"name": "burstlab-tls", "secret": {"secretName": "burstlab-tls", "defaultMode": 0o400}} in pod["volumes"]
    assert {"name": "burstlab-tls", "mountPath": TLS_DIR, "readOnly": True} in container["volumeMounts"]
    assert groups["A100"]["spec"]["worker"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_scheduler_speaks_tls_with_the_same_secret():
    cluster = kubernetes_spec("c", {"H100": {}}, image="img", tls_secret="s")["cluster"]
    pod = cluster["spec"]["scheduler"]["spec"]
    container = pod["containers"][0]
    assert container["args"][:2] == ["dask", "scheduler"] and "--protocol" in container["args"]
    assert container["args"][container["args"].index("--protocol") + 1] == "tls"
    assert _env(container)["DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT"] == f"{TLS_DIR}/node.pem"
    assert any(v.get("secret", {}).get("secretName") == "s" for v in pod["volumes"])
    assert cluster["spec"]["worker"]["replicas"] == 0  # no default workers: only the GPU groups
    assert "nvidia.com/gpu" not in (container.get("resources") or {}).get("limits", {})
